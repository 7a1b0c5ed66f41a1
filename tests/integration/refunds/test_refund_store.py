"""Refunds against real Postgres: the limit holds under 100 concurrent partial refunds, keys replay or refuse,
and a confirmed refund posts exactly one entry in the transaction that settles it (a failed one gives its amount
back), even when it drives the seller's balance below zero."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.errors import DependencyTimeout, DependencyUnavailable, IdempotencyKeyMismatch
from payment_application.ports.refunds import RefundKey
from payment_application.refund_payment_order import (
    PaymentOrderNotFound,
    RefundAccepted,
    RefundCommand,
    RefundPaymentOrder,
)
from payment_application.settle_refund import RefundAnswer, SettleRefund
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.ledger import CommissionSchedule, charge_entry
from payment_domain.money import Amount, Currency
from payment_domain.psp_answer import AnswerKind, PspAnswer
from payment_domain.refund import OrderNotRefundable, RefundExceedsCharge, RefundStatus
from payment_infrastructure.clock import SystemClock
from payment_infrastructure.postgres.ledger_entries import insert_entries
from payment_infrastructure.postgres.refund_store import PostgresRefundStore
from payment_infrastructure.postgres.rows import order_from_row
from tests.integration.api.helpers import dsn, fetch
from tests.integration.postgres.order_rows import StoredOrder, insert_orders

_ids = itertools.count(8 * 10**15 + uuid.uuid4().int % 10**12 * 1000)
COMMISSION = CommissionSchedule(default_bps=1_000)  # 10 %
NOW = datetime.now(UTC)
CHARGED = PspAnswer(AnswerKind.CHARGED)


@pytest.fixture
def store(engine: AsyncEngine) -> PostgresRefundStore:
    # Generous bounds: under a loaded machine a hundred requests queue behind one row lock.
    return PostgresRefundStore(engine, statement_timeout_ms=10_000, lock_timeout_ms=10_000)


@pytest.fixture
def refund(store: PostgresRefundStore) -> RefundPaymentOrder:
    return RefundPaymentOrder(refunds=store, clock=SystemClock())


@pytest.fixture
def settle(store: PostgresRefundStore) -> SettleRefund:
    return SettleRefund(refunds=store, clock=SystemClock())


async def charged_order(database_url: str, *, amount: int = 1_000, status: str = "SUCCESSFUL_FINAL") -> StoredOrder:
    """A SUCCESSFUL_FINAL order of its own payment with its charge entry, as the result applier leaves it."""
    order = StoredOrder(next(_ids), NOW, status=status, amount=amount)
    await insert_orders(database_url, [order])
    if status == "SUCCESSFUL_FINAL":
        conn = await asyncpg.connect(dsn(database_url))
        try:
            row = await conn.fetchrow(
                "SELECT * FROM payment_orders WHERE payment_order_id = $1", order.payment_order_id
            )
            async with conn.transaction():
                await insert_entries(conn, [charge_entry(order_from_row(row), COMMISSION)], NOW)
        finally:
            await conn.close()
    return order


def command(order: StoredOrder, value: int, key: str | None = None, *, request_hash: str = "h") -> RefundCommand:
    return RefundCommand(
        payment_id=PaymentId(order.payment),
        payment_order_id=PaymentOrderId(order.payment_order_id),
        amount=Amount(value, Currency.EUR),
        key=RefundKey("refund-tests", key or f"key-{uuid.uuid4()}", request_hash),
        trace_id="trace-refunds",
    )


async def answered(refund: RefundPaymentOrder, cmd: RefundCommand, *, deadline_s: float = 60.0) -> RefundAccepted:
    """As a client does with a 503/504 (nothing written, or a key that replays): the same request again, until it is
    answered. On a loaded machine a hundred requests can outwait the connection pool's timeout."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_s
    while True:
        try:
            return await refund(cmd)
        except (DependencyUnavailable, DependencyTimeout):
            if loop.time() > give_up:
                raise
            await asyncio.sleep(0.05)


async def seller_balance(database_url: str, seller: str) -> int:
    (row,) = await fetch(
        database_url,
        "SELECT coalesce(sum(CASE side WHEN 'CREDIT' THEN amount ELSE -amount END), 0) AS balance FROM postings "
        "WHERE account_kind = 'SELLER_PAYABLE' AND account_owner = $1",
        seller,
    )
    return int(row["balance"])


async def test_100_concurrent_partial_refunds_never_exceed_the_amount_charged(
    database_url: str, refund: RefundPaymentOrder
) -> None:
    order = await charged_order(database_url, amount=1_000)

    outcomes = await asyncio.gather(*(answered(refund, command(order, 30)) for _ in range(100)), return_exceptions=True)

    accepted = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(accepted) == 33  # 33 x 30 = 990; a 34th would make 1,020
    assert all(isinstance(o, RefundExceedsCharge) for o in refused), {type(o) for o in refused}
    assert len({o.refund.refund_id for o in accepted}) == 33
    (row,) = await fetch(
        database_url,
        "SELECT o.refunded_value, (SELECT sum(amount_value) FROM refunds r "
        "WHERE r.payment_order_id = o.payment_order_id) AS total FROM payment_orders o WHERE payment_order_id = $1",
        order.payment_order_id,
    )
    assert (row["refunded_value"], row["total"]) == (990, 990)
    outbox = await fetch(
        database_url,
        "SELECT count(*) AS n FROM outbox_event WHERE topic = 'payment_order_refund_requested_topic' "
        "AND aggregate_id = $1",
        str(order.payment_order_id),
    )
    assert outbox[0]["n"] == 33


async def test_the_database_itself_refuses_a_refunded_total_above_the_charge(database_url: str) -> None:
    order = await charged_order(database_url, amount=500)
    conn = await asyncpg.connect(dsn(database_url))
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "UPDATE payment_orders SET refunded_value = 501 WHERE payment_order_id = $1", order.payment_order_id
            )
    finally:
        await conn.close()


async def test_same_key_and_body_replays_the_refund_and_another_body_is_refused(
    database_url: str, refund: RefundPaymentOrder
) -> None:
    order = await charged_order(database_url)

    first = await refund(command(order, 200, "key-1"))
    again = await refund(command(order, 200, "key-1"))
    with pytest.raises(IdempotencyKeyMismatch):
        await refund(command(order, 300, "key-1", request_hash="other"))

    assert (first.replayed, again.replayed) == (False, True)
    assert again.refund == first.refund
    rows = await fetch(
        database_url, "SELECT count(*) AS n FROM refunds WHERE payment_order_id = $1", order.payment_order_id
    )
    assert rows[0]["n"] == 1


async def test_concurrent_requests_with_one_key_make_one_refund(database_url: str, refund: RefundPaymentOrder) -> None:
    order = await charged_order(database_url)

    outcomes = await asyncio.gather(*(answered(refund, command(order, 100, "same-key")) for _ in range(10)))

    assert len({o.refund.refund_id for o in outcomes}) == 1
    assert sum(not o.replayed for o in outcomes) == 1
    (row,) = await fetch(
        database_url, "SELECT refunded_value FROM payment_orders WHERE payment_order_id = $1", order.payment_order_id
    )
    assert row["refunded_value"] == 100


@pytest.mark.parametrize("status", ["INITIATED_PENDING", "PENDING_STATUS_CHECK_LATER", "FAILED_FINAL"])
async def test_only_a_successful_order_can_be_refunded(
    database_url: str, refund: RefundPaymentOrder, status: str
) -> None:
    order = await charged_order(database_url, status=status)

    with pytest.raises(OrderNotRefundable):
        await refund(command(order, 100))


async def test_an_order_of_another_payment_is_not_found(database_url: str, refund: RefundPaymentOrder) -> None:
    order, other = await charged_order(database_url), await charged_order(database_url)

    with pytest.raises(PaymentOrderNotFound):
        await refund(
            RefundCommand(
                payment_id=PaymentId(other.payment),
                payment_order_id=PaymentOrderId(order.payment_order_id),
                amount=Amount(100, Currency.EUR),
                key=RefundKey("refund-tests", "k", "h"),
                trace_id="t",
            )
        )


async def test_a_confirmed_refund_posts_one_entry_and_a_repeated_answer_changes_nothing(
    database_url: str, refund: RefundPaymentOrder, settle: SettleRefund
) -> None:
    order = await charged_order(database_url, amount=1_000)  # seller credited 900, commission 100
    seller = f"SELLER-{order.payment_order_id}"
    accepted = await refund(command(order, 250))
    answer = RefundAnswer(PaymentOrderId(order.payment_order_id), accepted.refund.refund_id, CHARGED)

    settled = await settle(answer)
    repeated = await settle(answer)

    assert settled.status is RefundStatus.SUCCEEDED
    assert repeated == settled
    entries = await fetch(
        database_url,
        "SELECT p.account_kind, p.side, p.amount FROM journal_entries e JOIN postings p USING (entry_id) "
        "WHERE e.kind = 'REFUND' AND e.refund_id = $1 ORDER BY p.account_kind",
        accepted.refund.refund_id.value,
    )
    # commission of 1,000 is 100, of the 750 left 75: 25 of commission goes back with the refund
    assert [tuple(r) for r in entries] == [
        ("COMMISSION_REVENUE", "DEBIT", 25),
        ("PSP_RECEIVABLE", "CREDIT", 250),
        ("SELLER_PAYABLE", "DEBIT", 225),
    ]
    assert await seller_balance(database_url, seller) == 900 - 225


async def test_a_failed_refund_gives_its_amount_back_and_posts_nothing(
    database_url: str, refund: RefundPaymentOrder, settle: SettleRefund
) -> None:
    order = await charged_order(database_url, amount=1_000)
    accepted = await refund(command(order, 1_000))
    with pytest.raises(RefundExceedsCharge):
        await refund(command(order, 1))

    failed = await settle(
        RefundAnswer(PaymentOrderId(order.payment_order_id), accepted.refund.refund_id, PspAnswer(AnswerKind.DECLINED))
    )
    again = await refund(command(order, 1_000))

    assert failed.status is RefundStatus.FAILED
    assert not again.replayed
    entries = await fetch(
        database_url, "SELECT count(*) AS n FROM journal_entries WHERE refund_id = $1", accepted.refund.refund_id.value
    )
    assert entries[0]["n"] == 0


async def test_an_unknown_answer_leaves_the_refund_requested(
    database_url: str, refund: RefundPaymentOrder, settle: SettleRefund
) -> None:
    order = await charged_order(database_url)
    accepted = await refund(command(order, 100))

    for kind in (AnswerKind.OUTCOME_UNKNOWN, AnswerKind.MISCONFIGURED, AnswerKind.NOT_CHARGED):
        after = await settle(
            RefundAnswer(PaymentOrderId(order.payment_order_id), accepted.refund.refund_id, PspAnswer(kind))
        )
        assert after.status is RefundStatus.REQUESTED


async def test_a_refund_larger_than_the_seller_balance_is_honoured_and_the_balance_goes_negative(
    database_url: str, engine: AsyncEngine, refund: RefundPaymentOrder, settle: SettleRefund
) -> None:
    order = await charged_order(database_url, amount=1_000)
    seller = f"SELLER-{order.payment_order_id}"
    # The seller's 900 were paid out: the ledger has no payouts yet, so the test books one by hand (a balanced
    # entry debiting the seller's payable account).
    conn = await asyncpg.connect(dsn(database_url))
    try:
        async with conn.transaction():
            entry = await conn.fetchval(
                "INSERT INTO journal_entries (kind, payment_order_id, seller_id, posted_at) "
                "VALUES ('PAYOUT', $1, $2, now()) RETURNING entry_id",
                order.payment_order_id,
                seller,
            )
            await conn.execute(
                "INSERT INTO postings (entry_id, account_kind, account_owner, currency, side, amount) VALUES "
                "($1, 'SELLER_PAYABLE', $2, 'EUR', 'DEBIT', 900), "
                "($1, 'PSP_RECEIVABLE', 'platform', 'EUR', 'CREDIT', 900)",
                entry,
                seller,
            )
    finally:
        await conn.close()
    assert await seller_balance(database_url, seller) == 0
    accepted = await refund(command(order, 1_000))

    settled = await settle(RefundAnswer(PaymentOrderId(order.payment_order_id), accepted.refund.refund_id, CHARGED))

    assert settled.status is RefundStatus.SUCCEEDED
    assert await seller_balance(database_url, seller) == -900  # the seller owes the platform its 900
