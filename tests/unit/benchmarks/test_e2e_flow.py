"""The flow-control series a case samples from the services' /metrics, and the shed count by reason."""

from __future__ import annotations

from tests.benchmarks.e2e_flow import API_SERIES, CONSUMER_SERIES, pick

API_PAGE = """\
# HELP http_requests_shed_total Requests refused at once with 503 overloaded, nothing done for them
# TYPE http_requests_shed_total counter
http_requests_shed_total{reason="queue_full"} 3.0
http_requests_shed_total{reason="pipeline_behind"} 120.0
# HELP payment_pipeline_in_flight_budget Orders queued past which creates are refused
# TYPE payment_pipeline_in_flight_budget gauge
payment_pipeline_in_flight_budget 240.0
# HELP payment_pipeline_orders_queued Orders queued
# TYPE payment_pipeline_orders_queued gauge
payment_pipeline_orders_queued 97.0
# HELP payment_pipeline_wait_p95_seconds wait
# TYPE payment_pipeline_wait_p95_seconds gauge
payment_pipeline_wait_p95_seconds 0.31
# HELP http_requests_total all requests
# TYPE http_requests_total counter
http_requests_total{method="POST"} 9000.0
"""
CONSUMERS_PAGE = """\
# HELP psp_concurrency_limit PSP calls allowed at once
# TYPE psp_concurrency_limit gauge
psp_concurrency_limit 41.0
# HELP psp_pool_queue_depth Charges waiting in the PSP worker pool queues.
# TYPE psp_pool_queue_depth gauge
psp_pool_queue_depth 7.0
"""


def test_each_wanted_series_is_picked_by_name_and_label_and_the_rest_left_out() -> None:
    assert pick(API_PAGE, API_SERIES) == {
        "shed_queue_full": 3.0,
        "shed_pipeline_behind": 120.0,
        "budget": 240.0,
        "queued": 97.0,
        "wait_p95_s": 0.31,
    }
    assert pick(CONSUMERS_PAGE, CONSUMER_SERIES) == {"psp_limit": 41.0, "psp_queue": 7.0}


def test_a_page_without_the_series_gives_nothing() -> None:
    assert pick(CONSUMERS_PAGE, API_SERIES) == {}
