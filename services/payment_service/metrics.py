"""payment-service API metrics (outbox metrics live with the dispatcher's adapters)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Histogram(
    "http_server_requests_seconds",
    "HTTP request latency by method, route template and status",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
PAYMENTS_CREATED = Counter("payments_created_total", "Payments accepted and written")
PAYMENT_ORDERS_CREATED = Counter("payment_orders_created_total", "Payment orders written (one per seller line)")
IDEMPOTENT_REPLAYS = Counter("idempotent_replays_total", "POST /payments answered from a stored response")
IDEMPOTENCY_KEYS_PURGED = Counter("idempotency_keys_purged_total", "Expired idempotency keys deleted")
CREATE_QUEUE_DEPTH = Gauge(
    "payment_create_queue_depth",
    "Creates admitted and not yet answered (reading, waiting for a writer or being written), summed over workers",
    multiprocess_mode="livesum",
)
HTTP_REQUESTS_SHED = Counter(
    "http_requests_shed_total", "Requests refused at once with 503 overloaded, nothing done for them", ["reason"]
)
CREATES_SHED_QUEUE_FULL = HTTP_REQUESTS_SHED.labels("queue_full")  # also exported at 0 before the first refusal
CREATES_SHED_PIPELINE_BEHIND = HTTP_REQUESTS_SHED.labels("pipeline_behind")
PIPELINE_ORDERS_IN_FLIGHT = Gauge(
    "payment_pipeline_orders_in_flight",
    "Orders accepted and not yet answered by the PSP once, as admission control last read it",
    multiprocess_mode="max",
)
PIPELINE_ORDERS_QUEUED = Gauge(
    "payment_pipeline_orders_queued",
    "Orders accepted and queued in front of their first PSP call (not in one), as admission control last read it",
    multiprocess_mode="max",
)
PIPELINE_BUDGET = Gauge(
    "payment_pipeline_in_flight_budget",
    "Orders queued in front of their first PSP call past which creates are refused with 503 pipeline-behind",
    multiprocess_mode="max",
)
PIPELINE_WAIT_P95 = Gauge(
    "payment_pipeline_wait_p95_seconds",
    "95th percentile of how long the orders queued in front of their first PSP call have waited, as last read",
    multiprocess_mode="max",
)
PIPELINE_READING_FAILURES = Counter(
    "payment_pipeline_backlog_read_failures_total",
    "Readings of the pipeline's backlog that failed (admission then relies on its queue bound alone)",
)
REFUND_REQUESTS = Counter(
    "refund_requests_total",
    "POST .../refunds by outcome: accepted (written with its outbox row), replayed (same key and body), or the "
    "reason it was refused (nothing written)",
    ["outcome"],
)
REFUND_REQUEST_OUTCOMES = (
    "accepted",
    "replayed",
    "refund-exceeds-charge",
    "order-not-refundable",
    "refund-currency-mismatch",
    "invalid-refund-amount",
    "idempotency-key-mismatch",
)
for _outcome in REFUND_REQUEST_OUTCOMES:  # exported at 0 from start-up, so the first of each is seen by rate()
    REFUND_REQUESTS.labels(_outcome)
