"""`payments reconcile refunds|refund` against real Postgres and the real PSP simulator, run as the operator runs it
(the installed console script): a parked refund is listed, and settled by what the PSP says under its key, with its
ledger entry, never refunded a second time."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.refund_payment_order import RefundPaymentOrder
from payment_application.settle_refund import RefundAnswer, SettleRefund
from payment_domain.psp_answer import AnswerKind, PspAnswer
from payment_domain.refund import Refund, RefundStatus
from payment_infrastructure.clock import SystemClock
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.refund_store import PostgresRefundStore
from payment_infrastructure.postgres.settings import DatabaseSettings
from tests.fixtures.database import migrated_database
from tests.fixtures.psp import PspSimulatorHandle
from tests.integration.api.helpers import fetch
from tests.integration.postgres.test_ledger_verify_command import refund_at_psp
from tests.integration.refunds.test_execute_refund import refund_entries
from tests.integration.refunds.test_refund_store import charged_order, command

PAYMENTS = Path(sys.executable).with_name("payments")


@pytest.fixture(scope="module")
async def own_database() -> AsyncIterator[str]:
    async with migrated_database() as url:
        yield url


@pytest.fixture
async def store(own_database: str) -> AsyncIterator[PostgresRefundStore]:
    engine: AsyncEngine = create_engine(DatabaseSettings(url=own_database, pool_size=2), application_name="tests")
    yield PostgresRefundStore(engine, statement_timeout_ms=5_000, lock_timeout_ms=5_000)
    await engine.dispose()


def reconcile(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PAYMENTS_DB__URL": database_url}
    return subprocess.run(
        [str(PAYMENTS), "reconcile", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def parked_refund(database_url: str, store: PostgresRefundStore) -> tuple[Refund, str]:
    """A refund the executor asked about until it gave up, and its order's public id."""
    order = await charged_order(database_url)
    refund = (await RefundPaymentOrder(refunds=store, clock=SystemClock())(command(order, 400))).refund
    await store.mark_sent(refund.refund_id)
    unknown = PspAnswer(AnswerKind.OUTCOME_UNKNOWN)
    await SettleRefund(refunds=store, clock=SystemClock())(
        RefundAnswer(refund.payment_order_id, refund.refund_id, unknown, give_up=True)
    )
    return refund, f"paymentorder-{order.payment_order_id}"


async def status_of(database_url: str, refund: Refund) -> RefundStatus:
    (row,) = await fetch(database_url, "SELECT status FROM refunds WHERE refund_id = $1", refund.refund_id.value)
    return RefundStatus(row["status"])


async def test_a_parked_refund_the_psp_paid_back_is_listed_and_settled_by_its_status_with_no_second_refund(
    own_database: str, store: PostgresRefundStore, clean_psp_simulator: PspSimulatorHandle
) -> None:
    refund, order = await parked_refund(own_database, store)
    await refund_at_psp(clean_psp_simulator, order, refund.public_id, refund.seller_id, 400)

    listed = reconcile(own_database, "refunds")
    assert listed.returncode == 0, listed.stderr
    assert f"\t{refund.public_id}\t{order}\t400 EUR\t" in listed.stdout, listed.stdout

    settled = reconcile(own_database, "refund", refund.public_id, "--psp-url", clean_psp_simulator.base_url)

    assert settled.returncode == 0, settled.stderr
    assert f"{refund.public_id} of {order} is SUCCEEDED" in settled.stdout
    assert await status_of(own_database, refund) is RefundStatus.SUCCEEDED
    assert await refund_entries(own_database, refund) == 1
    summary = await clean_psp_simulator.summary()
    assert summary["refunded_minor_by_currency"] == {"EUR": 400}
    assert summary["orders_refunded_more_than_once"] == 0
    again = reconcile(own_database, "refund", refund.public_id, "--psp-url", clean_psp_simulator.base_url)
    assert again.returncode == 1 and "not in NEEDS_RECONCILIATION" in again.stderr


async def test_a_parked_refund_the_psp_never_saw_is_sent_under_its_own_key_once(
    own_database: str, store: PostgresRefundStore, clean_psp_simulator: PspSimulatorHandle
) -> None:
    refund, _order = await parked_refund(own_database, store)

    settled = reconcile(own_database, "refund", str(refund.refund_id.value), "--psp-url", clean_psp_simulator.base_url)

    assert settled.returncode == 0, settled.stderr
    assert await status_of(own_database, refund) is RefundStatus.SUCCEEDED
    summary = await clean_psp_simulator.summary()
    assert summary["refunded_minor_by_currency"] == {"EUR": 400}
    assert summary["orders_refunded_more_than_once"] == 0
