"""Topic names (the original's, plus payment_order_failed_topic, which it lacked, and the refunds' topic) and their
DLQ twins."""

from __future__ import annotations

from enum import StrEnum

DLQ_SUFFIX = ".DLQ"


class Topic(StrEnum):
    PAYMENT_ORDER_CREATED = "payment_order_created_topic"
    PSP_CALL_REQUESTED = "payment_order_psp_call_requested_topic"
    PSP_RESULT_UPDATED = "payment_order_psp_result_updated_topic"
    PAYMENT_ORDER_SUCCEEDED = "payment_order_succeeded_topic"
    PAYMENT_ORDER_FAILED = "payment_order_failed_topic"
    STATUS_CHECK_SCHEDULER = "payment_status_check_scheduler_topic"
    REFUND_REQUESTED = "payment_order_refund_requested_topic"

    @property
    def dlq(self) -> str:
        return dlq_of(self.value)


def dlq_of(topic: str) -> str:
    """`<topic>.DLQ`; a DLQ's own dead letters stay in it (as the original did)."""
    return topic if topic.endswith(DLQ_SUFFIX) else topic + DLQ_SUFFIX
