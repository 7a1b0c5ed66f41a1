"""RefundStore and RefundRedriveClaims: FakeRefundStore / FakeRefundRedriveClaims (what the simulation runs) and
the Postgres adapters (on the session database) pass the same cases, driven through the real use cases. The
claims' thresholds are the store's clock: a case moves a refund into the past on both (the fake's rows, Postgres'
rows), and looks only at its own refunds among those claimed."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.errors import IdempotencyKeyMismatch
from payment_application.ports.clock import Clock
from payment_application.ports.refund_redrives import RefundRedriveClaims
from payment_application.ports.refunds import RefundKey, RefundStore
from payment_application.refund_payment_order import RefundCommand, RefundPaymentOrder
from payment_application.settle_refund import RefundAnswer, SettleRefund
from payment_domain.events import EventType
from payment_domain.ids import PaymentId, PaymentOrderId, RefundId
from payment_domain.ledger import EntryKind, charge_entry
from payment_domain.money import Amount, Currency
from payment_domain.psp_answer import AnswerKind, PspAnswer
from payment_domain.refund import Refund, RefundExceedsCharge, RefundStatus
from payment_domain.status import PaymentOrderStatus
from payment_infrastructure.clock import SystemClock
from payment_infrastructure.postgres.refund_redrives import PostgresRefundRedriveClaims
from payment_infrastructure.postgres.refund_store import PostgresRefundStore
from tests.fakes import FakeClock
from tests.fakes_consumers import ConsumerTables, PostedEntry, an_order
from tests.fakes_refunds import FakeRefundRedriveClaims, FakeRefundStore, RefundTables
from tests.integration.api.helpers import dsn
from tests.integration.refunds.test_refund_store import COMMISSION, charged_order

STALE_AFTER = timedelta(minutes=10)
PAST = timedelta(hours=2)
K = AnswerKind
_fake_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Order:
    payment_id: PaymentId
    payment_order_id: PaymentOrderId


class RefundWorld(Protocol):
    store: RefundStore
    claims: RefundRedriveClaims
    clock: Clock

    async def charged_order(self, amount: int) -> Order:
        """A SUCCESSFUL_FINAL order of its own payment, with its charge entry."""
        ...

    async def published(self, order: Order) -> None:
        """The order's refund requests left the outbox."""
        ...

    async def age(self, refund: Refund) -> None:
        """The refund's times moved PAST into the past."""
        ...

    async def refund_entries(self, refund: Refund) -> list[int]:
        """The refund's entries: what each credits to the PSP receivable."""
        ...


class FakeWorld:
    def __init__(self) -> None:
        self.tables = RefundTables(ConsumerTables())
        self.clock = FakeClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
        self.store = FakeRefundStore(self.tables, self.clock)
        self.claims = FakeRefundRedriveClaims(self.tables, self.clock)

    async def charged_order(self, amount: int) -> Order:
        n = next(_fake_ids)
        order = an_order(n, status=PaymentOrderStatus.SUCCESSFUL_FINAL, payment_id=n)
        order = dataclasses.replace(order, amount=Amount(amount, Currency.EUR))
        self.tables.consumer.add_order(order)
        self.tables.consumer.journal.append(PostedEntry(charge_entry(order, COMMISSION), self.clock.now()))
        return Order(order.payment_id, order.payment_order_id)

    async def published(self, order: Order) -> None:
        for refund_id in list(self.tables.unsent):
            if self.tables.refunds[refund_id].refund.payment_order_id == order.payment_order_id:
                self.tables.unsent.discard(refund_id)

    async def age(self, refund: Refund) -> None:
        row = self.tables.refunds[refund.refund_id.value]
        row.refund = dataclasses.replace(
            row.refund, created_at=row.refund.created_at - PAST, updated_at=row.refund.updated_at - PAST
        )
        row.psp_sent_at = None if row.psp_sent_at is None else row.psp_sent_at - PAST
        row.redriven_at = None if row.redriven_at is None else row.redriven_at - PAST

    async def refund_entries(self, refund: Refund) -> list[int]:
        return [
            p.amount
            for posted in self.tables.consumer.journal
            if posted.entry.kind is EntryKind.REFUND and posted.entry.refund_id == refund.refund_id.value
            for p in posted.entry.postings
            if p.account.kind.value == "PSP_RECEIVABLE"
        ]


class PostgresWorld:
    def __init__(self, url: str, engine: AsyncEngine) -> None:
        self.url = url
        bounds = {"statement_timeout_ms": 10_000, "lock_timeout_ms": 10_000}
        self.store = PostgresRefundStore(engine, **bounds)
        self.claims = PostgresRefundRedriveClaims(engine, **bounds)
        self.clock = SystemClock()

    async def _fetch(self, statement: str, *args: object) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn(self.url))
        try:
            return list(await conn.fetch(statement, *args))
        finally:
            await conn.close()

    async def charged_order(self, amount: int) -> Order:
        order = await charged_order(self.url, amount=amount)
        return Order(PaymentId(order.payment), PaymentOrderId(order.payment_order_id))

    async def published(self, order: Order) -> None:
        await self._fetch(
            "UPDATE outbox_event SET status = 'SENT' WHERE aggregate_id = $1 AND event_type = $2",
            str(order.payment_order_id.value),
            EventType.REFUND_REQUESTED.value,
        )

    async def age(self, refund: Refund) -> None:
        await self._fetch(
            "UPDATE refunds SET created_at = created_at - $2::interval, updated_at = updated_at - $2::interval, "
            "psp_sent_at = psp_sent_at - $2::interval, redriven_at = redriven_at - $2::interval WHERE refund_id = $1",
            refund.refund_id.value,
            PAST,
        )

    async def refund_entries(self, refund: Refund) -> list[int]:
        rows = await self._fetch(
            "SELECT p.amount FROM journal_entries e JOIN postings p USING (entry_id) "
            "WHERE e.kind = 'REFUND' AND e.refund_id = $1 AND p.account_kind = 'PSP_RECEIVABLE' ORDER BY e.entry_id",
            refund.refund_id.value,
        )
        return [r["amount"] for r in rows]


@pytest.fixture(params=["fake", "postgres"])
def world(request: pytest.FixtureRequest) -> Iterator[RefundWorld]:
    if request.param == "fake":
        yield FakeWorld()
    else:
        yield PostgresWorld(request.getfixturevalue("database_url"), request.getfixturevalue("engine"))


def command(order: Order, value: int, key: str, request_hash: str = "h") -> RefundCommand:
    return RefundCommand(
        payment_id=order.payment_id,
        payment_order_id=order.payment_order_id,
        amount=Amount(value, Currency.EUR),
        key=RefundKey("contract", f"{key}-{order.payment_order_id.value}", request_hash),
        trace_id="trace-contract",
    )


async def accepted(world: RefundWorld, order: Order, value: int, key: str) -> Refund:
    return (await RefundPaymentOrder(refunds=world.store, clock=world.clock)(command(order, value, key))).refund


async def answer(world: RefundWorld, refund: Refund, kind: AnswerKind, *, give_up: bool = False) -> Refund:
    settle = SettleRefund(refunds=world.store, clock=world.clock)
    return await settle(RefundAnswer(refund.payment_order_id, refund.refund_id, PspAnswer(kind), give_up=give_up))


async def stale(world: RefundWorld, refund: Refund) -> bool:
    claimed = await world.claims.claim_stale(stale_after=STALE_AFTER, limit=1_000)
    return refund.refund_id in {u.refund.refund_id for u in claimed}


async def parked(world: RefundWorld, refund: Refund) -> bool:
    claimed = await world.claims.claim_parked(every=STALE_AFTER, limit=1_000)
    return refund.refund_id in {u.refund.refund_id for u in claimed}


async def test_a_key_makes_one_refund_and_the_total_stays_within_the_charge(world: RefundWorld) -> None:
    order = await world.charged_order(1_000)
    refund = RefundPaymentOrder(refunds=world.store, clock=world.clock)

    first = await refund(command(order, 600, "a"))
    again = await refund(command(order, 600, "a"))
    with pytest.raises(IdempotencyKeyMismatch):
        await refund(command(order, 600, "a", request_hash="another body"))
    with pytest.raises(RefundExceedsCharge) as too_much:
        await refund(command(order, 500, "b"))

    assert (first.replayed, again.replayed, again.refund) == (False, True, first.refund)
    assert too_much.value.remaining == 400
    assert await world.store.refunded_by_order(order.payment_id) == {order.payment_order_id: 600}


async def test_a_confirmed_refund_posts_one_entry_and_a_failed_one_gives_its_amount_back(world: RefundWorld) -> None:
    order = await world.charged_order(1_000)
    paid, refused = await accepted(world, order, 300, "paid"), await accepted(world, order, 200, "refused")

    settled = await answer(world, paid, K.CHARGED)
    repeated = await answer(world, paid, K.CHARGED)
    failed = await answer(world, refused, K.DECLINED)

    assert (settled.status, repeated.status, failed.status) == (RefundStatus.SUCCEEDED,) * 2 + (RefundStatus.FAILED,)
    assert await world.refund_entries(paid) == [300]
    assert await world.refund_entries(refused) == []
    assert await world.store.refunded_by_order(order.payment_id) == {order.payment_order_id: 300}
    assert await world.store.get(order.payment_order_id, paid.refund_id) == settled
    assert await world.store.get(order.payment_order_id, RefundId(paid.refund_id.value + 10**9)) is None


async def test_mark_sent_tells_whether_a_call_was_stamped_before(world: RefundWorld) -> None:
    refund = await accepted(world, await world.charged_order(1_000), 100, "sent")

    assert [await world.store.mark_sent(refund.refund_id) for _ in range(2)] == [False, True]


async def test_a_stale_refund_is_claimed_once_per_stale_age_and_not_while_its_request_is_in_the_outbox(
    world: RefundWorld,
) -> None:
    order = await world.charged_order(1_000)
    refund = await accepted(world, order, 100, "stale")

    fresh = await stale(world, refund)
    await world.age(refund)
    in_outbox = await stale(world, refund)
    await world.published(order)
    claimed, claimed_again = await stale(world, refund), await stale(world, refund)
    await world.age(refund)
    after_its_claim_aged = await stale(world, refund)

    assert (fresh, in_outbox, claimed, claimed_again, after_its_claim_aged) == (False, False, True, False, True)
    assert await world.claims.count_stale(stale_after=STALE_AFTER) >= 1


async def test_a_call_stamp_keeps_a_refund_from_the_sweeper_until_it_ages(world: RefundWorld) -> None:
    order = await world.charged_order(1_000)
    refund = await accepted(world, order, 100, "stamped")
    await world.published(order)
    await world.age(refund)

    await world.store.mark_sent(refund.refund_id)
    stamped = await stale(world, refund)
    await world.age(refund)

    assert (stamped, await stale(world, refund)) == (False, True)


async def test_a_parked_refund_is_due_once_per_interval_and_listed(world: RefundWorld) -> None:
    order = await world.charged_order(1_000)
    refund = await accepted(world, order, 100, "parked")
    await world.published(order)
    waiting = await answer(world, refund, K.OUTCOME_UNKNOWN)
    parked_refund = await answer(world, refund, K.OUTCOME_UNKNOWN, give_up=True)
    await world.age(refund)

    due, due_again = await parked(world, refund), await parked(world, refund)
    listed = {u.refund.refund_id for u in await world.claims.list_parked(limit=1_000)}
    got = await world.claims.get_parked(refund.refund_id)

    assert (waiting.status, parked_refund.status) == (RefundStatus.REQUESTED, RefundStatus.NEEDS_RECONCILIATION)
    assert (due, due_again, refund.refund_id in listed) == (True, False, True)
    assert got is not None and got.order.payment_order_id == order.payment_order_id
    assert not await stale(world, refund)  # parked: the re-query's, never the sweeper's
