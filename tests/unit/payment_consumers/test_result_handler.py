"""The result applier's handler over the batcher, as bootstrap wires it: records handled at once share one
transaction, and each record still meets its own outcome (an unknown order is poison for its record alone)."""

from __future__ import annotations

import asyncio
import random

import pytest

from payment_application.apply_psp_result import ApplyPspResult
from payment_domain.events import EventEnvelope
from payment_domain.status import PaymentOrderStatus, PaymentStatus
from payment_infrastructure.kafka.records import ConsumedRecord, PoisonMessage
from payment_infrastructure.serialization import envelope_to_bytes
from services.payment_consumers.handlers import result_batcher, result_handler
from tests.fakes import FakeClock
from tests.fakes_consumers import COMMISSION, ConsumerTables, FakeResultStore, an_order
from tests.fakes_retry import FakeRetryQueue
from tests.unit.application.test_consumer_use_cases import CONSUMER, PAYMENT, POLICY, T0, charge_result

S = PaymentOrderStatus


def result_applier(tables: ConsumerTables) -> tuple[FakeResultStore, ApplyPspResult]:
    """The use case over the fake store, as the use-case tests configure it (policy, commission, seeded jitter)."""
    store = FakeResultStore(tables, FakeClock(T0))
    apply = ApplyPspResult(
        store=store,
        retries=FakeRetryQueue(),
        policy=POLICY,
        randint=random.Random(1).randint,
        consumer=CONSUMER,
        commission=COMMISSION,
    )
    return store, apply


def record(envelope: EventEnvelope, offset: int) -> ConsumedRecord:
    return ConsumedRecord("psp_result_updated_topic", 0, offset, envelope.aggregate_id, envelope_to_bytes(envelope))


async def test_records_handled_together_share_a_transaction_and_an_unknown_order_is_poison_alone() -> None:
    tables = ConsumerTables()
    store, apply = result_applier(tables)
    handle = result_handler(result_batcher(apply, concurrency=2, max_batch=32).submit)
    seven, eight = tables.add_order(an_order(7)), tables.add_order(an_order(8, payment_id=5))
    nine = tables.add_order(an_order(9, payment_id=6))

    together = [
        charge_result(seven, S.SUCCESSFUL_FINAL),
        charge_result(eight, S.SUCCESSFUL_FINAL),
        charge_result(nine, S.SUCCESSFUL_FINAL),
    ]
    await asyncio.gather(*(handle(record(e, n)) for n, e in enumerate(together)))

    assert store.commits == 1
    assert tables.payments[PAYMENT] is PaymentStatus.SUCCESS

    # Sibling orders (one payment) never share a batch: a batch holds its payments' locks until it commits.
    siblings = [tables.add_order(an_order(n, payment_id=8)) for n in (11, 12)]
    await asyncio.gather(*(handle(record(charge_result(o, S.SUCCESSFUL_FINAL), 5 + n)) for n, o in enumerate(siblings)))
    assert store.commits == 3
    assert [tables.order(n).status for n in (11, 12)] == [S.SUCCESSFUL_FINAL] * 2

    ten = tables.add_order(an_order(10, payment_id=4))
    outcomes = await asyncio.gather(
        handle(record(charge_result(an_order(99), S.SUCCESSFUL_FINAL), 30)),
        handle(record(charge_result(ten, S.DECLINED_FINAL), 31)),
        return_exceptions=True,
    )

    assert isinstance(outcomes[0], PoisonMessage) and "UnknownPaymentOrder" in str(outcomes[0])
    assert outcomes[1] is None
    assert tables.order(10).status is S.DECLINED_FINAL


async def test_an_undecodable_record_is_poison_before_it_reaches_a_batch() -> None:
    tables = ConsumerTables()
    store, apply = result_applier(tables)
    handle = result_handler(result_batcher(apply, concurrency=2, max_batch=32).submit)

    with pytest.raises(PoisonMessage):
        await handle(ConsumedRecord("psp_result_updated_topic", 0, 0, "7", b"not json"))
    assert store.commits == store.rollbacks == 0
