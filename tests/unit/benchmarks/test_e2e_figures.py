"""The arithmetic behind `make bench-e2e`: percentiles, per-second buckets, trends, lag and CPU per order."""

from __future__ import annotations

import math

import pytest

from tests.benchmarks.e2e_figures import (
    ACCEPTED,
    ERROR,
    SHED,
    Order,
    Request,
    Window,
    bucket_counts,
    bucket_percentiles,
    consumer_lag,
    cpu_ms_per_order,
    cpu_rates,
    cpu_seconds_between,
    outcome_of,
    parse_k6_line,
    percentile,
    slope,
)


def test_percentile_interpolates_between_closest_ranks_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 100) == 4.0
    assert percentile(values, 95) == pytest.approx(3.85)
    assert percentile(reversed(values), 50) == 2.5


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 95))


def test_an_order_never_final_makes_the_percentiles_that_reach_it_infinite() -> None:
    latencies = [Order(0.0, 0.1).latency, Order(0.0, 0.2).latency, Order(0.0, None).latency]
    assert percentile(latencies, 50) == pytest.approx(0.2)
    assert percentile(latencies, 95) == math.inf
    assert percentile([1.0, math.inf], 0) == 1.0


def test_percentile_outside_0_to_100_is_refused() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_bucket_counts_put_each_time_in_its_second_and_ignore_the_rest() -> None:
    times = [99.9, 100.0, 100.4, 100.99, 101.0, 102.5, 103.0]
    assert bucket_counts(times, start=100.0, seconds=3) == [3, 1, 1]


def test_bucket_counts_can_weigh_each_time() -> None:
    assert bucket_counts([0.1, 0.2, 1.5], start=0.0, seconds=2, weights=[2, 3, 2]) == [5, 2]


def test_bucket_percentiles_leave_empty_seconds_as_nan() -> None:
    points = [(0.1, 10.0), (0.5, 30.0), (2.2, 5.0)]
    p50 = bucket_percentiles(points, start=0.0, seconds=3, q=50)
    assert p50[0] == 20.0
    assert math.isnan(p50[1])
    assert p50[2] == 5.0


def test_slope_of_a_line_and_of_a_flat_series() -> None:
    assert slope([0.0, 1.0, 2.0, 3.0], [10.0, 12.0, 14.0, 16.0]) == pytest.approx(2.0)
    assert slope([0.0, 1.0, 2.0], [5.0, 5.0, 5.0]) == 0.0
    assert slope([1.0], [3.0]) == 0.0
    assert slope([1.0, 1.0], [3.0, 4.0]) == 0.0


def test_k6_lines_become_requests_and_anything_else_is_skipped() -> None:
    assert parse_k6_line("1700000000123 202 4.56 3\n") == Request(1700000000.123, 202, 4.56, 3)
    assert parse_k6_line('time="..." level=warning msg="Insufficient VUs"') is None
    assert parse_k6_line("a b c d") is None


def test_outcomes_202_is_accepted_429_and_503_are_shed_everything_else_is_an_error() -> None:
    assert outcome_of(202) == ACCEPTED
    assert outcome_of(429) == SHED
    assert outcome_of(503) == SHED
    assert [outcome_of(status) for status in (0, 400, 401, 500, 504)] == [ERROR] * 5


def test_a_window_holds_its_start_but_not_its_end() -> None:
    window = Window(10.0, 20.0)
    assert window.seconds == 10.0
    assert 10.0 in window
    assert 19.99 in window
    assert 20.0 not in window
    assert Window(5.0, 4.0).seconds == 0.0


def test_cpu_per_order_is_milliseconds_per_settled_order() -> None:
    assert cpu_ms_per_order(1.5, 1000) == pytest.approx(1.5)
    assert cpu_ms_per_order(3.0, 0) is None


def test_cpu_seconds_between_uses_the_last_sample_at_or_before_each_edge() -> None:
    cumulative = [(0.0, 0.0), (1.0, 0.5), (2.0, 1.5), (3.0, 1.75)]
    assert cpu_seconds_between(cumulative, Window(1.0, 3.0)) == pytest.approx(1.25)
    assert cpu_seconds_between(cumulative, Window(1.5, 2.5)) == pytest.approx(1.0)  # samples at 1.0 and 2.0
    assert cpu_seconds_between(cumulative, Window(-5.0, 10.0)) == pytest.approx(1.75)
    assert cpu_seconds_between([], Window(0.0, 1.0)) == 0.0


def test_cpu_rates_are_cores_between_consecutive_samples() -> None:
    assert cpu_rates([(0.0, 0.0), (1.0, 0.5), (3.0, 2.5)]) == [(1.0, 0.5), (3.0, 1.0)]


def test_consumer_lag_sums_end_minus_committed_over_the_partitions_of_the_groups_topics() -> None:
    committed = {
        "enqueuer": {("created", 0): 90, ("created", 1): 40},
        "executor": {("requested", 0): 5, ("requested", 1): -1},  # -1: nothing committed there yet
    }
    ends = {("created", 0): 100, ("created", 1): 40, ("created", 2): 7, ("requested", 0): 5, ("requested", 1): 3}
    assert consumer_lag(committed, ends) == {"enqueuer": 10 + 0 + 7, "executor": 0 + 3}
