"""`payments reconcile` against real Postgres, run as the operator runs it (the installed console script): list the
parked orders, settle one with what the PSP says, and find the event, the roll-up and the audit line written."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.parked_orders import PostgresParkedOrders
from payment_infrastructure.postgres.settings import DatabaseSettings
from tests.fixtures.database import migrated_database
from tests.integration.api.helpers import fetch
from tests.integration.postgres.order_rows import StoredOrder, insert_orders


@pytest.fixture(scope="module")
async def own_database() -> AsyncIterator[str]:
    """A database of this module's own: its fixed order ids meet no other test's rows."""
    async with migrated_database() as url:
        yield url


PAYMENTS = Path(sys.executable).with_name("payments")


def payments(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PAYMENTS_DB__URL": database_url}
    return subprocess.run(
        [str(PAYMENTS), "reconcile", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_an_operator_lists_and_settles_a_parked_order(own_database: str) -> None:
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    await insert_orders(
        own_database,
        [
            StoredOrder(11, an_hour_ago, "NEEDS_RECONCILIATION", retry_count=1, status_check_number=5, payment_id=10),
            StoredOrder(12, an_hour_ago, "SUCCESSFUL_FINAL", payment_id=10),
        ],
    )

    listed = payments(own_database, "list")
    assert listed.returncode == 0, listed.stderr
    assert "paymentorder-11\t1\t" in listed.stdout and "1 order(s) in NEEDS_RECONCILIATION" in listed.stdout

    settled = payments(
        own_database,
        "settle",
        "paymentorder-11",
        "--outcome",
        "SUCCESSFUL_FINAL",
        "--operator",
        "alice",
        "--evidence",
        "PSP dashboard: charge ch_42 captured",
    )
    assert settled.returncode == 0, settled.stderr
    assert "settled paymentorder-11 as SUCCESSFUL_FINAL; payment payment-10 is SUCCESS" in settled.stdout

    (order,) = await fetch(own_database, "SELECT status, retry_reason FROM payment_orders WHERE payment_order_id = 11")
    assert (order["status"], order["retry_reason"]) == ("SUCCESSFUL_FINAL", "RECONCILED_BY_OPERATOR")
    (payment,) = await fetch(own_database, "SELECT status FROM payments WHERE payment_id = 10")
    assert payment["status"] == "SUCCESS"
    (event,) = await fetch(
        own_database, "SELECT event_type, trace_id, status FROM outbox_event WHERE aggregate_id = '11'"
    )
    assert (event["event_type"], event["trace_id"], event["status"]) == ("payment_order_success", "trace-10", "NEW")
    (audit,) = await fetch(own_database, "SELECT * FROM reconciliation_audit WHERE payment_order_id = 11")
    assert (audit["from_status"], audit["to_status"], audit["source"], audit["actor"], audit["note"]) == (
        "NEEDS_RECONCILIATION",
        "SUCCESSFUL_FINAL",
        "operator",
        "alice",
        "PSP dashboard: charge ch_42 captured",
    )
    postings = await fetch(
        own_database,
        "SELECT p.account_kind, p.side, p.amount FROM journal_entries e JOIN postings p USING (entry_id) "
        "WHERE e.payment_order_id = 11 AND e.kind = 'CHARGE' ORDER BY p.posting_id",
    )
    amount = (await fetch(own_database, "SELECT amount_value FROM payment_orders WHERE payment_order_id = 11"))[0][0]
    commission = amount * 1_000 // 10_000  # the default commission, 10 %
    assert [tuple(p) for p in postings] == [
        ("PSP_RECEIVABLE", "DEBIT", amount),
        ("SELLER_PAYABLE", "CREDIT", amount - commission),
        ("COMMISSION_REVENUE", "CREDIT", commission),
    ]

    again = payments(
        own_database, "settle", "11", "--outcome", "DECLINED_FINAL", "--operator", "bob", "--evidence", "second try"
    )
    assert again.returncode == 1
    assert "not in NEEDS_RECONCILIATION" in again.stderr
    assert len(await fetch(own_database, "SELECT 1 FROM reconciliation_audit WHERE payment_order_id = 11")) == 1


async def test_the_requery_claim_asks_each_parked_order_once_per_interval_on_the_database_clock(
    own_database: str,
) -> None:
    parked_at = datetime.now(UTC) - timedelta(hours=2)
    await insert_orders(
        own_database, [StoredOrder(21, parked_at, "NEEDS_RECONCILIATION", retry_count=2, status_check_number=5)]
    )
    engine = create_engine(DatabaseSettings(url=own_database, pool_size=2), application_name="requery-tests")
    try:
        parked = PostgresParkedOrders(engine)
        every = timedelta(minutes=30)
        (first,) = [p for p in await parked.claim_due(every=every, limit=10) if p.order.payment_order_id.value == 21]
        again = [p for p in await parked.claim_due(every=every, limit=10) if p.order.payment_order_id.value == 21]
        (stamp,) = await fetch(
            own_database, "SELECT reconcile_queried_at - now() AS age FROM payment_orders WHERE payment_order_id = 21"
        )
        # As if the last question was asked 31 minutes ago (the database's clock judges it).
        await fetch(
            own_database,
            "UPDATE payment_orders SET reconcile_queried_at = now() - interval '31 minutes' "
            "WHERE payment_order_id = 21 RETURNING 1",
        )
        (later,) = [p for p in await parked.claim_due(every=every, limit=10) if p.order.payment_order_id.value == 21]
    finally:
        await engine.dispose()

    assert (first.query_number, first.order.retry_count, first.trace_id) == (6, 2, "trace-21")
    assert again == []
    assert abs(stamp["age"]) < timedelta(seconds=30)
    assert later.query_number == 7
