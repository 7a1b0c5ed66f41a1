"""Consumer groups: the original's names, one per topic handler."""

from __future__ import annotations

from payment_domain.topics import Topic
from services.payment_consumers.settings import Worker

GROUPS: dict[Worker, tuple[str, Topic]] = {
    Worker.ENQUEUER: ("payment-order-enqueuer-consumer-group", Topic.PAYMENT_ORDER_CREATED),
    Worker.PSP_CALL_EXECUTOR: ("payment-order-psp-call-executor-consumer-group", Topic.PSP_CALL_REQUESTED),
    Worker.RESULT_APPLIER: ("payment-order-psp-result-updated-consumer-group", Topic.PSP_RESULT_UPDATED),
    Worker.STATUS_CHECK_EXECUTOR: ("payment-status-check-scheduler-consumer-group", Topic.STATUS_CHECK_SCHEDULER),
    Worker.REFUND_EXECUTOR: ("payment-order-refund-executor-consumer-group", Topic.REFUND_REQUESTED),
}
