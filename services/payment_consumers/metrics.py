"""payment-consumers metrics beyond the adapters' own (PSP, Kafka consumer, retry queue)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from payment_domain.psp_result import Action
from payment_domain.refund import RefundStatus
from payment_domain.status import IN_FLIGHT

STATUS_CHECKS_DISPATCHED = Counter("status_checks_dispatched_total", "Status checks published for execution")
STATUS_CHECK_DISPATCH_FAILURES = Counter("status_check_dispatch_failures_total", "Failed status-check rounds")
PSP_RESULTS_APPLIED = Counter(
    "psp_results_applied_total", "PSP answers applied to payment orders, by action", ["action"]
)
PSP_RESULTS_BATCH_SIZE = Histogram(
    "psp_results_batch_size",
    "PSP answers applied per database transaction by the result applier (1: the plain path at low load)",
    buckets=(1, 2, 4, 8, 16, 32),
)
PAYMENT_ORDERS_NEEDING_RECONCILIATION = Counter(
    "payment_orders_needs_reconciliation_total",
    "Orders whose outcome stayed unknown through the whole status-check schedule (alert on any increase)",
)
PAYMENT_ORDERS_AWAITING_RECONCILIATION = Gauge(
    "payment_orders_awaiting_reconciliation", "Orders currently parked in NEEDS_RECONCILIATION"
)
PAYMENT_ORDERS_STALE_REDRIVEN = Counter(
    "payment_orders_stale_redriven_total",
    "Stale orders re-driven by the sweeper, by the status they were stuck in (each one means a lost message)",
    ["status"],
)
PAYMENT_ORDERS_STALE_FOUND = Gauge(
    "payment_orders_stale_found", "Stale orders the last sweep found (re-driven, or found still waiting for a retry)"
)
STALE_ORDER_SWEEP_FAILURES = Counter(
    "stale_order_sweep_failures_total", "Sweeps that failed or stopped at a re-drive that failed"
)
PARKED_ORDERS_REQUERIED = Counter(
    "parked_orders_requeried_total", "Orders in NEEDS_RECONCILIATION the PSP was asked about again (periodic re-query)"
)
PARKED_ORDER_REQUERY_FAILURES = Counter("parked_order_requery_failures_total", "Failed re-query rounds")

REFUNDS_SETTLED = Counter(
    "refunds_settled_total",
    "Refunds worked to an outcome by the refund executor, by the status they ended in (SUCCEEDED posts its ledger "
    "entry; NEEDS_RECONCILIATION: the outcome stayed unknown, alert on any increase)",
    ["status"],
)
REFUNDS_REDRIVEN = Counter(
    "refunds_redriven_total",
    "Refund requests sent again: stale (REQUESTED with no progress for sweeper.stale_after_seconds, a lost message "
    "or a dead worker) or parked (NEEDS_RECONCILIATION, asked about again every requery.every_seconds)",
    ["reason"],
)
REFUND_REDRIVE_FAILURES = Counter(
    "refund_redrive_failures_total", "Refund re-drive rounds that failed or stopped at a send that failed", ["reason"]
)
REFUNDS_STALE = Gauge(
    "refunds_stale",
    "REQUESTED refunds with no sign of progress for sweeper.stale_after_seconds, re-driven or not (from the database)",
)
REDRIVE_REASONS = ("stale", "parked")

# Every label value created at 0 at import (start-up): a series born at 1 by its first inc() is invisible to
# increase(), so a pod's first re-drive would never alert.
for _status in sorted(IN_FLIGHT):  # the statuses the sweeper re-drives from
    PAYMENT_ORDERS_STALE_REDRIVEN.labels(_status.value)
for _action in Action:
    PSP_RESULTS_APPLIED.labels(_action.value)
for _refund_status in RefundStatus:
    REFUNDS_SETTLED.labels(_refund_status.value)
for _reason in REDRIVE_REASONS:
    REFUNDS_REDRIVEN.labels(_reason)
    REFUND_REDRIVE_FAILURES.labels(_reason)
