"""Stale and parked refunds against real Postgres (a database of this module's own): what counts as a sign of
progress, the claim stamp, SKIP LOCKED between rounds, and the re-drive end to end through the real executor and
store: a refund that may have reached the PSP is asked about first, so a re-drive never refunds twice. The
database's clock cannot be moved: time passes for a refund by moving its data into the past (`age`)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.execute_refund import ExecuteRefund, RefundCallPolicy
from payment_application.ports.refund_redrives import UnsettledRefund
from payment_application.redrive_refunds import RedriveRefunds
from payment_application.refund_payment_order import RefundPaymentOrder
from payment_application.settle_refund import RefundAnswer, SettleRefund
from payment_domain.events import EventEnvelope, EventType, RefundRequested
from payment_domain.ids import RefundId
from payment_domain.psp_answer import AnswerKind, PspAnswer
from payment_domain.refund import Refund, RefundStatus
from payment_infrastructure.clock import SystemClock
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.refund_redrives import PostgresRefundRedriveClaims
from payment_infrastructure.postgres.refund_store import PostgresRefundStore
from payment_infrastructure.postgres.settings import DatabaseSettings
from tests.fakes_consumers import FakeEventSink
from tests.fixtures.database import migrated_database
from tests.integration.api.helpers import dsn, fetch
from tests.integration.refunds.test_execute_refund import RecordingSleeper, ScriptedPsp, refund_entries
from tests.integration.refunds.test_refund_store import charged_order, command

K = AnswerKind
STALE_AFTER = timedelta(minutes=10)
EVERY = timedelta(hours=1)
PAST = timedelta(hours=2)


@pytest.fixture(scope="module")
async def redrive_database() -> AsyncIterator[str]:
    async with migrated_database() as url:
        yield url


@pytest.fixture(scope="module")
async def redrive_engine(redrive_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(url=redrive_database, pool_size=6), application_name="refund-redrives")
    yield engine
    await engine.dispose()


@dataclass
class Db:
    url: str
    store: PostgresRefundStore
    claims: PostgresRefundRedriveClaims

    async def execute(self, statement: str, *args: object) -> None:
        conn = await asyncpg.connect(dsn(self.url))
        try:
            await conn.execute(statement, *args)
        finally:
            await conn.close()

    async def requested(self, *, published: bool = True) -> Refund:
        """A REQUESTED refund of a charged order; `published`: its outbox row was sent."""
        order = await charged_order(self.url)
        accepted = await RefundPaymentOrder(refunds=self.store, clock=SystemClock())(command(order, 300))
        if published:
            await self.execute(
                "UPDATE outbox_event SET status = 'SENT' WHERE aggregate_id = $1 AND event_type = $2",
                str(order.payment_order_id),
                EventType.REFUND_REQUESTED.value,
            )
        return accepted.refund

    async def age(self, refund: Refund, by: timedelta = PAST) -> None:
        """Move the refund's times (and its order's) into the past."""
        await self.execute(
            "UPDATE refunds SET created_at = created_at - $2::interval, updated_at = updated_at - $2::interval, "
            "psp_sent_at = psp_sent_at - $2::interval, redriven_at = redriven_at - $2::interval WHERE refund_id = $1",
            refund.refund_id.value,
            by,
        )

    async def parked(self) -> Refund:
        refund = await self.requested()
        settle = SettleRefund(refunds=self.store, clock=SystemClock())
        unknown = PspAnswer(K.OUTCOME_UNKNOWN)
        parked = await settle(RefundAnswer(refund.payment_order_id, refund.refund_id, unknown, give_up=True))
        assert parked.status is RefundStatus.NEEDS_RECONCILIATION
        await self.store.mark_sent(refund.refund_id)  # the executor asked before it parked it
        return parked

    async def stale(self, *, limit: int = 100) -> set[RefundId]:
        return {u.refund.refund_id for u in await self.claims.claim_stale(stale_after=STALE_AFTER, limit=limit)}

    async def due_parked(self, *, limit: int = 100) -> set[RefundId]:
        return {u.refund.refund_id for u in await self.claims.claim_parked(every=EVERY, limit=limit)}


@pytest.fixture
def db(redrive_database: str, redrive_engine: AsyncEngine) -> Db:
    bounds = {"statement_timeout_ms": 10_000, "lock_timeout_ms": 10_000}
    return Db(
        redrive_database,
        PostgresRefundStore(redrive_engine, **bounds),
        PostgresRefundRedriveClaims(redrive_engine, **bounds),
    )


async def redriven(db: Db, refund: Refund, *, parked: bool = False) -> EventEnvelope[RefundRequested]:
    """One round of the sweeper (or the parked re-query) and the request it sent again for `refund`."""
    events = FakeEventSink()

    async def claim(limit: int) -> list[UnsettledRefund]:
        if parked:
            return await db.claims.claim_parked(every=EVERY, limit=limit)
        return await db.claims.claim_stale(stale_after=STALE_AFTER, limit=limit)

    await RedriveRefunds(claim=claim, events=events, reason="parked" if parked else "stale").run_once(limit=100)
    (request,) = [e for e in events.emitted if e.payload.refund_id == refund.refund_id]
    return request


def executor(db: Db, psp: ScriptedPsp) -> ExecuteRefund:
    return ExecuteRefund(
        refunds=db.store,
        psp=psp,
        settle=SettleRefund(refunds=db.store, clock=SystemClock()),
        sleeper=RecordingSleeper(),
        randint=random.Random(3).randint,
        policy=RefundCallPolicy(attempts=2, base_ms=100, max_ms=1_000),
    )


async def test_a_requested_refund_with_no_progress_for_the_stale_age_is_claimed_once(db: Db) -> None:
    refund = await db.requested()
    assert refund.refund_id not in await db.stale()  # fresh
    await db.age(refund)

    assert refund.refund_id in await db.stale()
    assert refund.refund_id not in await db.stale()  # the claim stamp holds it for the stale age
    await db.age(refund)
    assert refund.refund_id in await db.stale()  # the age has passed its claim


async def test_signs_of_progress_keep_a_refund_from_the_sweeper(db: Db) -> None:
    unsent = await db.requested(published=False)  # the outbox dispatcher owns it
    asked = await db.requested()
    settled = await db.requested()
    parked = await db.parked()
    for refund in (unsent, asked, settled, parked):
        await db.age(refund)
    await db.store.mark_sent(asked.refund_id)  # the executor is working on it now
    settle = SettleRefund(refunds=db.store, clock=SystemClock())
    await settle(RefundAnswer(settled.payment_order_id, settled.refund_id, PspAnswer(K.CHARGED)))

    claimed = await db.stale()

    assert not claimed & {unsent.refund_id, asked.refund_id, settled.refund_id, parked.refund_id}


async def test_stale_refunds_are_counted_for_the_alert_claimed_or_not(db: Db) -> None:
    before = await db.claims.count_stale(stale_after=STALE_AFTER)
    refunds = [await db.requested() for _ in range(2)]
    for refund in refunds:
        await db.age(refund)
    await db.stale()  # claiming does not make them any less stuck

    assert await db.claims.count_stale(stale_after=STALE_AFTER) == before + 2


async def test_concurrent_sweepers_never_claim_the_same_refund(db: Db) -> None:
    refunds = [await db.requested() for _ in range(6)]
    for refund in refunds:
        await db.age(refund)

    claims = await asyncio.gather(*(db.stale(limit=3) for _ in range(4)))

    mine = {r.refund_id for r in refunds}
    taken = [rid for claim in claims for rid in claim if rid in mine]
    assert sorted(taken, key=lambda r: r.value) == sorted(mine, key=lambda r: r.value)  # each exactly once


async def test_a_parked_refund_is_due_for_a_requery_once_per_interval(db: Db) -> None:
    parked = await db.parked()
    assert parked.refund_id not in await db.due_parked()  # asked just now
    await db.age(parked)

    assert parked.refund_id in await db.due_parked()
    assert parked.refund_id not in await db.due_parked()
    assert parked.refund_id in {u.refund.refund_id for u in await db.claims.list_parked(limit=1_000)}
    assert (await db.claims.get_parked(parked.refund_id)) is not None


async def test_a_stale_refund_that_may_have_reached_the_psp_is_asked_about_first_never_refunded_twice(
    db: Db,
) -> None:
    refund = await db.requested()
    await db.store.mark_sent(refund.refund_id)  # the worker stamped its call, then died: the PSP paid it back
    await db.age(refund)
    events = FakeEventSink()
    sweep = RedriveRefunds(
        claim=lambda limit: db.claims.claim_stale(stale_after=STALE_AFTER, limit=limit), events=events, reason="stale"
    )

    report = await sweep.run_once(limit=100)
    (request,) = [e for e in events.emitted if e.payload.refund_id == refund.refund_id]
    psp = ScriptedPsp([], [PspAnswer(K.CHARGED)])
    settled = await executor(db, psp)(request)

    assert refund.refund_id in {u.refund.refund_id for u in report.published}
    assert request.event_type is EventType.REFUND_REQUESTED
    assert request.aggregate_id == str(refund.payment_order_id.value)
    assert psp.queried == [refund.psp_key] and psp.keys == []  # asked, never sent again
    assert settled.status is RefundStatus.SUCCEEDED
    assert await refund_entries(db.url, settled) == 1


async def test_a_stale_refund_whose_message_was_lost_before_any_call_is_sent_under_its_key(db: Db) -> None:
    refund = await db.requested()
    await db.age(refund)

    request = await redriven(db, refund)
    psp = ScriptedPsp([PspAnswer(K.CHARGED)])
    settled = await executor(db, psp)(request)
    again = await executor(db, psp)(request)  # the late original arrives too

    assert psp.keys == [refund.psp_key] and psp.queried == []
    assert settled.status is again.status is RefundStatus.SUCCEEDED
    assert await refund_entries(db.url, settled) == 1


@pytest.mark.parametrize(
    ("psp_says", "outcome", "refunded_after"),
    [(K.CHARGED, RefundStatus.SUCCEEDED, 300), (K.DECLINED, RefundStatus.FAILED, 0)],
)
async def test_a_requeried_parked_refund_is_settled_by_the_psps_refund_status(
    db: Db, psp_says: AnswerKind, outcome: RefundStatus, refunded_after: int
) -> None:
    parked = await db.parked()
    await db.age(parked)

    request = await redriven(db, parked, parked=True)
    psp = ScriptedPsp([], [PspAnswer(psp_says)])
    settled = await executor(db, psp)(request)

    assert psp.queried == [parked.psp_key] and psp.keys == []
    assert settled.status is outcome
    (row,) = await fetch(
        db.url,
        "SELECT refunded_value FROM payment_orders WHERE payment_order_id = $1",
        parked.payment_order_id.value,
    )
    assert row["refunded_value"] == refunded_after
    assert await refund_entries(db.url, settled) == (1 if outcome is RefundStatus.SUCCEEDED else 0)


async def test_a_parked_refund_still_unknown_at_the_psp_stays_parked(db: Db) -> None:
    parked = await db.parked()
    await db.age(parked)
    request = await redriven(db, parked, parked=True)
    psp = ScriptedPsp([], [PspAnswer(K.OUTCOME_UNKNOWN)] * 3)

    still = await executor(db, psp)(request)

    assert still.status is RefundStatus.NEEDS_RECONCILIATION and psp.keys == []
    assert parked.refund_id not in await db.due_parked()  # asked just now: next time one interval later


async def test_a_failed_send_ends_the_round_and_the_refund_comes_back_after_its_claim(db: Db) -> None:
    refund = await db.requested()
    await db.age(refund)
    events = FakeEventSink()
    events.fail_with = ConnectionError("broker down")
    sweep = RedriveRefunds(
        claim=lambda limit: db.claims.claim_stale(stale_after=STALE_AFTER, limit=limit), events=events, reason="stale"
    )

    report = await sweep.run_once(limit=100)

    assert report.failures and not report.published
    await db.age(refund)
    assert refund.refund_id in await db.stale()
