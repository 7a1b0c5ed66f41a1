"""One handler per topic, all the same shape: decode the envelope (to the one payload kind the topic carries),
bind the ids to the log context, call the use case. Input that can never succeed (undecodable, invalid, about an
unknown order) is a PoisonMessage: it goes to the DLQ at once and the partition keeps flowing. A dependency that is
down (DependencyUnavailable, a broker timeout...) is retried in place until it is back, holding the partition;
anything else is retried a few times, then dead-lettered (see payment_infrastructure.kafka.failures)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from payment_application.apply_psp_result import Applied, ApplyPspResult, UnknownPaymentOrder
from payment_application.check_payment_status import CheckPaymentStatus
from payment_application.enqueue_psp_call import EnqueuePspCall
from payment_application.execute_psp_call import ExecutePspCall
from payment_application.execute_refund import ExecuteRefund
from payment_application.settle_refund import UnknownRefund
from payment_domain.errors import DomainError
from payment_domain.events import (
    EventEnvelope,
    P,
    PaymentOrderCreated,
    PspCallRequested,
    PspResultUpdated,
    RefundRequested,
    StatusCheckRequested,
)
from payment_domain.psp_result import Action
from payment_infrastructure.kafka.records import ConsumedRecord, PoisonMessage
from payment_infrastructure.observability.logging import log_context
from payment_infrastructure.runtime.batcher import Batcher
from payment_infrastructure.serialization import EnvelopeDecodeError, typed_envelope_from_bytes
from services.payment_consumers.metrics import (
    PAYMENT_ORDERS_NEEDING_RECONCILIATION,
    PSP_RESULTS_APPLIED,
    PSP_RESULTS_BATCH_SIZE,
    REFUNDS_SETTLED,
)

Handler = Callable[[ConsumedRecord], Awaitable[None]]

log = structlog.get_logger(__name__)


def decode(record: ConsumedRecord, kind: type[P]) -> EventEnvelope[P]:
    try:
        return typed_envelope_from_bytes(record.value, kind)
    except EnvelopeDecodeError as error:
        raise PoisonMessage(str(error)) from error


def _log_context(envelope: EventEnvelope[P], record: ConsumedRecord) -> dict[str, str]:
    """The envelope's ids for the log lines, unless the runtime already bound them from the record's headers
    (our producer copies every one of them there): binding them again costs a context variable each, per record."""
    if record.header("eventId") == envelope.event_id:
        return {}
    return {
        "event_id": envelope.event_id,
        "trace_id": envelope.trace_id,
        "parent_event_id": envelope.parent_event_id,
        "aggregate_id": envelope.aggregate_id,
        "event_type": envelope.event_type.value,
    }


def _guarded(kind: type[P], call: Callable[[EventEnvelope[P], ConsumedRecord], Awaitable[object]]) -> Handler:
    async def handle(record: ConsumedRecord) -> None:
        envelope = decode(record, kind)
        with log_context(**_log_context(envelope, record)):
            try:
                await call(envelope, record)
            except (KeyError, TypeError, ValueError, DomainError, UnknownPaymentOrder, UnknownRefund) as error:
                raise PoisonMessage(f"{type(error).__name__}: {error}") from error
            # One line per event handled, carrying every id of the event (bound above or by the record processor):
            # the line that makes a payment's journey searchable by eventId, parentEventId and paymentOrderId. INFO,
            # never sampled; ≈ 8 µs a line (docs/operations.md, "Logs").
            log.info("event_handled", payment_order_id=envelope.payload.order.public_id)

    return handle


def enqueuer_handler(use_case: EnqueuePspCall) -> Handler:
    return _guarded(PaymentOrderCreated, lambda envelope, _record: use_case(envelope))


def psp_call_handler(use_case: ExecutePspCall) -> Handler:
    return _guarded(
        PspCallRequested,
        lambda envelope, record: use_case(envelope, delivery=f"{record.topic}/{record.partition}/{record.offset}"),
    )


ResultBatcher = Batcher[int, EventEnvelope[PspResultUpdated], Applied]


def result_batcher(use_case: ApplyPspResult, *, concurrency: int, max_batch: int) -> ResultBatcher:
    """Answers that arrive together are applied in one transaction (`apply_many`), keyed by payment: a batch holds
    its payments' row locks until it commits, so a sibling order's answer in another running batch would only wait
    on them (and meet the lock timeout under load). One payment's answers, and so one order's, never share a batch
    or run side by side."""
    return Batcher(
        use_case.apply_many,
        key=lambda envelope: envelope.payload.order.payment_id.value,
        concurrency=concurrency,
        max_batch=max_batch,
        observe=PSP_RESULTS_BATCH_SIZE.observe,
    )


def result_handler(apply_one: Callable[[EventEnvelope[PspResultUpdated]], Awaitable[Applied]]) -> Handler:
    """`apply_one`: a ResultBatcher's `submit` (or the use case itself); an answer's own error is raised here, so
    it is judged per record (poison or retried) whatever batch it ran in."""

    async def apply(envelope: EventEnvelope[PspResultUpdated], _record: ConsumedRecord) -> None:
        applied = await apply_one(envelope)
        if applied.decision is not None:
            PSP_RESULTS_APPLIED.labels(applied.decision.action.value).inc()
            if applied.decision.action is Action.RECONCILE:
                PAYMENT_ORDERS_NEEDING_RECONCILIATION.inc()

    return _guarded(PspResultUpdated, apply)


def status_check_handler(use_case: CheckPaymentStatus) -> Handler:
    return _guarded(StatusCheckRequested, lambda envelope, _record: use_case(envelope))


def refund_handler(use_case: ExecuteRefund) -> Handler:
    async def execute(envelope: EventEnvelope[RefundRequested], _record: ConsumedRecord) -> None:
        refund = await use_case(envelope)
        REFUNDS_SETTLED.labels(refund.status.value).inc()

    return _guarded(RefundRequested, execute)
