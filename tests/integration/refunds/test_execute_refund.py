"""ExecuteRefund against real Postgres and a scripted PSP: one key per refund for its whole life, unknown outcomes
resolved by a status query (never a second refund), a never-executed call sent again, parking when the answers
run out, and a redelivery of a settled refund calling nobody."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.execute_refund import ExecuteRefund, RefundCallPolicy
from payment_application.ports.psp import PspCallResult, PspRefundRequest, PspStatusResult
from payment_application.refund_payment_order import RefundPaymentOrder
from payment_application.settle_refund import SettleRefund
from payment_domain.events import EventEnvelope, RefundRequested, refund_requested
from payment_domain.psp_answer import AnswerKind, PspAnswer
from payment_domain.refund import Refund, RefundStatus
from payment_infrastructure.clock import SystemClock
from payment_infrastructure.postgres.refund_store import PostgresRefundStore
from payment_infrastructure.postgres.rows import order_from_row
from tests.integration.api.helpers import fetch
from tests.integration.refunds.test_refund_store import charged_order, command

K = AnswerKind


class ScriptedPsp:
    """Answers refund calls and status queries from two scripts (then: charged / found charged)."""

    def __init__(self, calls: list[PspAnswer], queries: list[PspAnswer] | None = None) -> None:
        self._calls: Iterator[PspAnswer] = iter(calls)
        self._queries: Iterator[PspAnswer] = iter(queries or [])
        self.keys: list[str] = []
        self.queried: list[str] = []

    async def refund(self, request: PspRefundRequest) -> PspCallResult:
        self.keys.append(request.idempotency_key)
        return PspCallResult(next(self._calls, PspAnswer(K.CHARGED)), 1)

    async def refund_status(self, idempotency_key: str) -> PspStatusResult:
        self.queried.append(idempotency_key)
        return PspStatusResult(next(self._queries, PspAnswer(K.CHARGED)), 1)


async def refund_entries(database_url: str, refund: Refund) -> int:
    rows = await fetch(
        database_url, "SELECT count(*) AS n FROM journal_entries WHERE refund_id = $1", refund.refund_id.value
    )
    return int(rows[0]["n"])


class RecordingSleeper:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def store(engine: AsyncEngine) -> PostgresRefundStore:
    return PostgresRefundStore(engine, statement_timeout_ms=10_000, lock_timeout_ms=10_000)


def executor(
    store: PostgresRefundStore, psp: ScriptedPsp, sleeper: RecordingSleeper, attempts: int = 3
) -> ExecuteRefund:
    return ExecuteRefund(
        refunds=store,
        psp=psp,
        settle=SettleRefund(refunds=store, clock=SystemClock()),
        sleeper=sleeper,
        randint=random.Random(7).randint,
        policy=RefundCallPolicy(attempts=attempts, base_ms=100, max_ms=1_000),
    )


async def requested(database_url: str, store: PostgresRefundStore, value: int = 300) -> EventEnvelope[RefundRequested]:
    order = await charged_order(database_url)
    accepted = await RefundPaymentOrder(refunds=store, clock=SystemClock())(command(order, value))
    rows = await fetch(database_url, "SELECT * FROM payment_orders WHERE payment_order_id = $1", order.payment_order_id)
    return refund_requested(
        order_from_row(rows[0]),
        refund_id=accepted.refund.refund_id,
        amount=accepted.refund.amount,
        trace_id="t",
        now=accepted.refund.created_at,
    )


async def test_an_unknown_outcome_is_resolved_by_a_status_query_never_a_second_refund(
    database_url: str, store: PostgresRefundStore
) -> None:
    event = await requested(database_url, store)
    psp, sleeper = ScriptedPsp([PspAnswer(K.OUTCOME_UNKNOWN)], [PspAnswer(K.OUTCOME_UNKNOWN)]), RecordingSleeper()

    settled = await executor(store, psp, sleeper)(event)

    assert settled.status is RefundStatus.SUCCEEDED
    assert psp.keys == [event.payload.refund_id.public]  # one call
    assert psp.queried == [event.payload.refund_id.public] * 2
    assert len(sleeper.waits) == 2 and 0.05 <= sleeper.waits[0] <= 0.1 and 0.1 <= sleeper.waits[1] <= 0.2
    assert await refund_entries(database_url, settled) == 1


@pytest.mark.parametrize("refused", [K.NOT_CHARGED, K.UNAVAILABLE])
async def test_a_call_never_executed_is_sent_again_under_the_same_key(
    database_url: str, store: PostgresRefundStore, refused: AnswerKind
) -> None:
    """Not executed (or a 503, which may hide a refund made): the same key again, which refunds at most once."""
    event = await requested(database_url, store)
    psp = ScriptedPsp([PspAnswer(refused), PspAnswer(refused)])

    settled = await executor(store, psp, RecordingSleeper())(event)

    assert settled.status is RefundStatus.SUCCEEDED
    assert psp.keys == [event.payload.refund_id.public] * 3 and psp.queried == []


async def test_no_such_refund_at_the_psp_sends_it_again_under_the_same_key(
    database_url: str, store: PostgresRefundStore
) -> None:
    event = await requested(database_url, store)
    psp = ScriptedPsp([PspAnswer(K.MISCONFIGURED)], [PspAnswer(K.NOT_CHARGED)])

    settled = await executor(store, psp, RecordingSleeper())(event)

    assert settled.status is RefundStatus.SUCCEEDED
    assert psp.keys == [event.payload.refund_id.public] * 2


async def test_a_refund_left_unknown_is_parked_keeping_its_amount_and_posting_nothing(
    database_url: str, store: PostgresRefundStore
) -> None:
    event = await requested(database_url, store)
    unknown = [PspAnswer(K.OUTCOME_UNKNOWN)] * 3
    psp = ScriptedPsp([PspAnswer(K.OUTCOME_UNKNOWN)], unknown)

    parked = await executor(store, psp, RecordingSleeper(), attempts=3)(event)

    assert parked.status is RefundStatus.NEEDS_RECONCILIATION
    assert len(psp.keys) == 1 and len(psp.queried) == 3
    (row,) = await fetch(
        database_url,
        "SELECT refunded_value FROM payment_orders WHERE payment_order_id = $1",
        event.payload.order.payment_order_id.value,
    )
    assert row["refunded_value"] == 300
    assert await refund_entries(database_url, parked) == 0


async def test_a_parked_refund_delivered_again_asks_the_psp_under_the_same_key_and_settles(
    database_url: str, store: PostgresRefundStore
) -> None:
    event = await requested(database_url, store)
    psp = ScriptedPsp([PspAnswer(K.OUTCOME_UNKNOWN)], [PspAnswer(K.OUTCOME_UNKNOWN)])
    parked = await executor(store, psp, RecordingSleeper(), attempts=1)(event)
    assert parked.status is RefundStatus.NEEDS_RECONCILIATION

    settled = await executor(store, psp, RecordingSleeper())(event)  # the PSP now answers: paid back

    assert settled.status is RefundStatus.SUCCEEDED
    assert set(psp.keys) == {event.payload.refund_id.public}
    assert await refund_entries(database_url, settled) == 1


async def test_a_redelivered_request_of_a_settled_refund_calls_nobody(
    database_url: str, store: PostgresRefundStore
) -> None:
    event = await requested(database_url, store)
    psp = ScriptedPsp([])
    first = await executor(store, psp, RecordingSleeper())(event)

    second = await executor(store, psp, RecordingSleeper())(event)

    assert first == second and first.status is RefundStatus.SUCCEEDED
    assert len(psp.keys) == 1
