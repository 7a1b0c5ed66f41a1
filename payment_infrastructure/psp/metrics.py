"""Prometheus meters of the PSP client, under the original's names (default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from payment_domain.status import PaymentOrderStatus

# Latency buckets around the 500 ms wait and the simulator's 50 ms - 3 s range.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)

PSP_CALLS = Counter(
    "psp_calls_total",
    "PSP charge calls by result: the mapped status name when the PSP answered or could not be reached, "
    "TIMEOUT (we stopped waiting; outcome unknown), REJECTED (worker pool full or closed), "
    "QUEUE_TIMEOUT (the call timeout ran out before a worker took the call; never sent), "
    "EXCEPTION (transport failure after sending, malformed answer, or a bug; outcome unknown), "
    "UNEXPECTED_RESPONSE (a 4xx the PSP does not document for a charge, e.g. 401/403/404/408; outcome unknown), "
    "KEY_REUSED (422: the key was first used with another body; a charge exists under it, outcome unknown), "
    "CANCELLED (the caller was cancelled).",
    ["result"],
)
PSP_REFUND_CALLS = Counter(
    "psp_refund_calls_total",
    "PSP refund calls by result, with the labels of psp_calls_total (a refund is answered like a charge).",
    ["result"],
)
PSP_UNEXPECTED_RESPONSES = Counter(
    "psp_unexpected_responses_total",
    "PSP charge answers with an HTTP status the PSP does not document for a charge (credentials, routing, "
    "timeouts in between): each order is treated as outcome unknown and settled by a status query.",
    ["http_status"],
)
PSP_QUEUE_DELAY = Histogram(
    "psp_queue_delay_seconds",
    "Time a charge waited in the worker pool queue (submit to worker start).",
    buckets=_BUCKETS,
)
PSP_EXEC_DURATION = Histogram("psp_exec_duration_seconds", "Time a worker spent on one charge call.", buckets=_BUCKETS)
PSP_CALL_LATENCY = Histogram(
    "psp_call_latency_seconds",
    "Caller-side time of one charge (queue + call, bounded by the call timeout).",
    buckets=_BUCKETS,
)
PSP_REFUND_CALL_LATENCY = Histogram(
    "psp_refund_call_latency_seconds",
    "Caller-side time of one refund call (queue + call, bounded by the call timeout).",
    buckets=_BUCKETS,
)
PSP_POOL_QUEUE_DEPTH = Gauge("psp_pool_queue_depth", "Charges waiting in the PSP worker pool queues.")
PSP_CONCURRENCY_LIMIT = Gauge(
    "psp_concurrency_limit",
    "PSP calls allowed at once now: PSP__WORKERS, or the adaptive limit following the PSP's latency within "
    "PSP__MIN_WORKERS..PSP__WORKERS.",
)
PSP_STATUS_CHECKS = Counter(
    "psp_status_checks_total",
    "PSP status queries by result: the mapped status name, NOT_FOUND, or the reason we could not ask "
    "(TIMEOUT, UNAVAILABLE, ERROR).",
    ["result"],
)
PSP_REFUND_STATUS_CHECKS = Counter(
    "psp_refund_status_checks_total",
    "PSP refund status queries by result, with the labels of psp_status_checks_total.",
    ["result"],
)
PSP_STATUS_CHECK_LATENCY = Histogram(
    "psp_status_check_latency_seconds", "Time of one PSP status query.", buckets=_BUCKETS
)

# Every result either counter reports, created at 0 at import (start-up): a series born at 1 by its first inc() is
# invisible to increase() and rate(), so the first TIMEOUT or UNEXPECTED_RESPONSE of a pod would not be seen.
CHARGE_RESULTS = (
    *(s.value for s in PaymentOrderStatus),
    "TIMEOUT",
    "REJECTED",
    "QUEUE_TIMEOUT",
    "EXCEPTION",
    "UNEXPECTED_RESPONSE",
    "KEY_REUSED",
    "CANCELLED",
)
STATUS_CHECK_RESULTS = (*(s.value for s in PaymentOrderStatus), "NOT_FOUND", "TIMEOUT", "UNAVAILABLE", "ERROR")
for _result in CHARGE_RESULTS:
    PSP_CALLS.labels(_result)
    PSP_REFUND_CALLS.labels(_result)
for _result in STATUS_CHECK_RESULTS:
    PSP_STATUS_CHECKS.labels(_result)
    PSP_REFUND_STATUS_CHECKS.labels(_result)
