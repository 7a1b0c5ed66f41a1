"""payment-consumers metrics beyond the adapters' own (PSP, Kafka consumer, retry queue)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

STATUS_CHECKS_DISPATCHED = Counter("status_checks_dispatched_total", "Status checks published for execution")
STATUS_CHECK_DISPATCH_FAILURES = Counter("status_check_dispatch_failures_total", "Failed status-check rounds")
PSP_RESULTS_APPLIED = Counter(
    "psp_results_applied_total", "PSP answers applied to payment orders, by action", ["action"]
)
PAYMENT_ORDERS_NEEDING_RECONCILIATION = Counter(
    "payment_orders_needs_reconciliation_total",
    "Orders whose outcome stayed unknown through the whole status-check schedule (alert on any increase)",
)
PAYMENT_ORDERS_AWAITING_RECONCILIATION = Gauge(
    "payment_orders_awaiting_reconciliation", "Orders currently parked in NEEDS_RECONCILIATION"
)
