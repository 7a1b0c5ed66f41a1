"""`payments ledger verify` against real Postgres and the real PSP simulator, run as the operator runs it (the
installed console script): a clean book passes with its trial balance; every kind of difference is named with the
account or order, the field and both values, and fails the command."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from payment_application.ports.refunds import RefundKey
from payment_application.refund_payment_order import RefundCommand, RefundPaymentOrder
from payment_application.settle_refund import RefundAnswer, SettleRefund
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.ledger import CommissionSchedule, charge_entry
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.psp_answer import AnswerKind, PspAnswer
from payment_domain.status import PaymentOrderStatus
from payment_infrastructure.clock import SystemClock
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.ledger_entries import insert_entries
from payment_infrastructure.postgres.refund_store import PostgresRefundStore
from payment_infrastructure.postgres.settings import DatabaseSettings
from tests.fixtures.database import migrated_database
from tests.fixtures.psp import PspSimulatorHandle
from tests.integration.api.helpers import dsn
from tests.integration.postgres.order_rows import StoredOrder, insert_orders

PAYMENTS = Path(sys.executable).with_name("payments")
COMMISSION = CommissionSchedule(default_bps=1_000)
AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def verify(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PAYMENTS_DB__URL": database_url}
    return subprocess.run(
        [str(PAYMENTS), "ledger", "verify", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def successful(order_id: int, seller: str, amount: int) -> PaymentOrder:
    return PaymentOrder(
        payment_order_id=PaymentOrderId(order_id),
        payment_id=PaymentId(10),
        seller_id=seller,
        amount=Amount(amount, Currency.EUR),
        status=PaymentOrderStatus.SUCCESSFUL_FINAL,
        created_at=AT,
        updated_at=AT,
    )


@pytest.fixture
async def book() -> AsyncIterator[str]:
    """A database of the case's own: two successful orders with their charges, one declined order."""
    async with migrated_database() as url:
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        await insert_orders(
            url,
            [
                StoredOrder(11, an_hour_ago, "SUCCESSFUL_FINAL", payment_id=10, amount=2_000),
                StoredOrder(12, an_hour_ago, "SUCCESSFUL_FINAL", payment_id=10, amount=3_005),
                StoredOrder(13, an_hour_ago, "DECLINED_FINAL", payment_id=10, amount=500),
            ],
        )
        conn = await asyncpg.connect(dsn(url))
        try:
            await conn.execute("UPDATE payment_orders SET seller_id = 'seller-a' WHERE payment_order_id = 11")
            await conn.execute("UPDATE payment_orders SET seller_id = 'seller-b' WHERE payment_order_id = 12")
            async with conn.transaction():
                entries = [successful(11, "seller-a", 2_000), successful(12, "seller-b", 3_005)]
                await insert_entries(conn, [charge_entry(o, COMMISSION) for o in entries], AT)
        finally:
            await conn.close()
        yield url


async def charge_at_psp(psp: PspSimulatorHandle, reference: str, seller: str, amount: int) -> None:
    await psp.force(reference, "SUCCESSFUL_FINAL")
    async with httpx.AsyncClient(base_url=psp.base_url, timeout=10) as client:
        body = {"merchantReference": reference, "amount": amount, "currency": "EUR", "sellerId": seller}
        response = await client.post("/v1/charges", json=body, headers={"Idempotency-Key": f"k-{uuid.uuid4()}"})
    assert response.json()["status"] == "SUCCESSFUL_FINAL", response.text


async def test_a_book_that_agrees_with_the_psp_passes_and_prints_its_trial_balance(
    book: str, clean_psp_simulator: PspSimulatorHandle
) -> None:
    await charge_at_psp(clean_psp_simulator, "paymentorder-11", "seller-a", 2_000)
    await charge_at_psp(clean_psp_simulator, "paymentorder-12", "seller-b", 3_005)

    result = verify(book, "--psp-url", clean_psp_simulator.base_url, "--accounts")

    assert result.returncode == 0, result.stderr
    assert "currency\tdebits\tcredits\nEUR\t5005\t5005\n" in result.stdout
    # seller-b: 3005 less floor(300.5) = 300
    assert "SELLER_PAYABLE\tseller-b\tEUR\t0\t2705\t2705" in result.stdout
    assert "COMMISSION_REVENUE\tplatform\tEUR\t0\t500\t500" in result.stdout
    assert "PSP_RECEIVABLE\tplatform\tEUR\t5005\t0\t5005" in result.stdout
    assert "ok: 4 accounts; checked against entries, orders and the PSP's record" in result.stdout


async def test_a_charge_the_book_does_not_hold_is_named_by_account_field_and_both_values(
    book: str, clean_psp_simulator: PspSimulatorHandle
) -> None:
    await charge_at_psp(clean_psp_simulator, "paymentorder-11", "seller-a", 2_000)
    await charge_at_psp(clean_psp_simulator, "paymentorder-12", "seller-b", 3_005)
    await charge_at_psp(clean_psp_simulator, "paymentorder-13", "seller-b", 500)  # the PSP charged a declined order

    result = verify(book, "--psp-url", clean_psp_simulator.base_url)

    assert result.returncode == 1
    assert "DIFFERENCE PSP_RECEIVABLE platform EUR: charged: ledger 5005, PSP 5505" in result.stderr
    assert "DIFFERENCE SELLER_PAYABLE seller-b EUR: charged: ledger 3005, PSP 3505" in result.stderr
    assert "seller-a" not in result.stderr


async def test_a_successful_order_without_its_charge_entry_fails_the_check(book: str) -> None:
    await insert_orders(book, [StoredOrder(14, datetime.now(UTC), "SUCCESSFUL_FINAL", payment_id=20, amount=700)])

    result = verify(book)

    assert result.returncode == 1
    assert "DIFFERENCE payment order 14 (SUCCESSFUL_FINAL): charged: ledger None, order 700" in result.stderr
    assert "checked against entries and orders" in result.stderr


async def refund_at_psp(psp: PspSimulatorHandle, order: str, refund: str, seller: str, amount: int) -> None:
    await psp.force(refund, "SUCCESSFUL_FINAL")
    async with httpx.AsyncClient(base_url=psp.base_url, timeout=10) as client:
        body = {"merchantReference": order, "refundReference": refund, "amount": amount, "currency": "EUR"}
        response = await client.post(
            "/v1/refunds", json={**body, "sellerId": seller}, headers={"Idempotency-Key": refund}
        )
    assert response.json()["status"] == "SUCCESSFUL_FINAL", response.text


async def refund_in_book(book: str, order_id: int, amount: int) -> str:
    """A refund accepted and confirmed through the use cases, as the API and the refund executor do it."""
    engine = create_engine(DatabaseSettings(url=book, pool_size=1), application_name="tests")
    try:
        store = PostgresRefundStore(engine, statement_timeout_ms=5_000, lock_timeout_ms=5_000)
        accepted = await RefundPaymentOrder(refunds=store, clock=SystemClock())(
            RefundCommand(
                payment_id=PaymentId(10),
                payment_order_id=PaymentOrderId(order_id),
                amount=Amount(amount, Currency.EUR),
                key=RefundKey("tests", f"k-{uuid.uuid4()}", "h"),
                trace_id="t",
            )
        )
        refund = accepted.refund
        await SettleRefund(refunds=store, clock=SystemClock())(
            RefundAnswer(refund.payment_order_id, refund.refund_id, PspAnswer(AnswerKind.CHARGED))
        )
    finally:
        await engine.dispose()
    return refund.public_id


async def test_refunds_are_checked_against_their_entries_and_the_psp_refund_book(
    book: str, clean_psp_simulator: PspSimulatorHandle
) -> None:
    await charge_at_psp(clean_psp_simulator, "paymentorder-11", "seller-a", 2_000)
    await charge_at_psp(clean_psp_simulator, "paymentorder-12", "seller-b", 3_005)
    refund = await refund_in_book(book, 11, 500)
    await refund_at_psp(clean_psp_simulator, "paymentorder-11", refund, "seller-a", 500)

    agreed = verify(book, "--psp-url", clean_psp_simulator.base_url, "--accounts")
    await refund_at_psp(clean_psp_simulator, "paymentorder-11", "refund-999", "seller-a", 100)  # not in the book
    disagreed = verify(book, "--psp-url", clean_psp_simulator.base_url)

    assert agreed.returncode == 0, agreed.stderr
    # seller-a: 1,800 credited, 450 debited (500 less 50 of commission given back)
    assert "SELLER_PAYABLE\tseller-a\tEUR\t450\t1800\t1350" in agreed.stdout
    assert "PSP_RECEIVABLE\tplatform\tEUR\t5005\t500\t4505" in agreed.stdout
    assert disagreed.returncode == 1
    assert "DIFFERENCE PSP_RECEIVABLE platform EUR: refunded: ledger 500, PSP 600" in disagreed.stderr
    assert "DIFFERENCE SELLER_PAYABLE seller-a EUR: refunded: ledger 500, PSP 600" in disagreed.stderr


async def test_a_succeeded_refund_without_its_entry_fails_the_check(book: str) -> None:
    conn = await asyncpg.connect(dsn(book))
    try:
        await conn.execute(
            "INSERT INTO refunds (refund_id, payment_order_id, payment_id, seller_id, amount_value, amount_currency, "
            "status, client_id, idempotency_key, request_hash, trace_id, created_at, updated_at) "
            "OVERRIDING SYSTEM VALUE VALUES (77, 11, 10, 'seller-a', 300, 'EUR', 'SUCCEEDED', 'c', 'k', 'h', 't', "
            "now(), now())"
        )
    finally:
        await conn.close()

    result = verify(book)

    assert result.returncode == 1
    assert "DIFFERENCE refund 77 (SUCCEEDED): refunded: ledger None, refund 300" in result.stderr


async def test_an_unreadable_psp_record_is_exit_2(book: str) -> None:
    result = verify(book, "--psp-url", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert "cannot read the PSP's record" in result.stderr
