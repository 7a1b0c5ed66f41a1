"""End to end under the NORMAL scenario: after the load settles, every seller's balance read from the API is what
the PSP simulator says it charged that seller less the commission, to the cent, and `payments ledger verify`
finds the book whole (the trial balance equal, every SUCCESSFUL_FINAL order with its one entry). Then every topic
is replayed from offset 0 and nothing changes: no posting, no status, no PSP call."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from payment_domain.ledger import commission_of
from payment_infrastructure.kafka.group_lag import BrokerGroupLag
from payment_infrastructure.kafka.settings import KafkaSettings
from services.payment_consumers.lag_exporter import code_groups
from tests.e2e.helpers import create_payments, ledger_verify, order_statuses, wait_until_final
from tests.fixtures.pipeline import Pipeline
from tests.fixtures.ports import wait_until
from tests.integration.api.helpers import bearer, fetch

pytestmark = pytest.mark.asyncio(loop_scope="session")
DEFAULT_BPS = 1_000  # the consumers' default commission


def three_seller_payment(run: str, n: int) -> dict[str, Any]:
    amounts = (4_999, 2_950, 12_005)
    lines = [
        {"sellerId": f"{run}-{n}-{i}", "amount": {"value": amount, "currency": "EUR"}}
        for i, amount in enumerate(amounts)
    ]
    return {
        "buyerId": "BUYER-E2E",
        "orderId": f"ORDER-{run}-{n}",
        "totalAmount": {"value": sum(amounts), "currency": "EUR"},
        "paymentOrders": lines,
    }


async def test_seller_balances_match_what_the_psp_charged_after_a_normal_load(
    pipeline: Pipeline, tokens: dict[str, str]
) -> None:
    await pipeline.psp.reset()
    await pipeline.psp.set_scenario(
        "NORMAL", timeout_duration_ms=900, pending_percent=10, pending_resolve_min_ms=200, pending_resolve_max_ms=600
    )
    run = f"LEDGER-{uuid.uuid4().hex[:8]}"
    bodies = [three_seller_payment(run, n) for n in range(12)]
    async with pipeline.api.client() as client:
        created = await asyncio.gather(
            *(client.post("/payments", json=b, headers=bearer(tokens["order-service"])) for b in bodies)
        )
    assert {r.status_code for r in created} == {202}
    payments = await wait_until_final(
        pipeline, tokens["order-service"], [r.json()["paymentId"] for r in created], within=90
    )

    charged = (await pipeline.psp.summary())["charged_minor_by_seller"]
    parked = {
        o["sellerId"] for p in payments.values() for o in p["paymentOrders"] if o["status"] == "NEEDS_RECONCILIATION"
    }
    succeeded = 0
    async with pipeline.api.client() as client:
        for body in bodies:
            for line in body["paymentOrders"]:
                seller = line["sellerId"]
                if seller in parked:
                    continue  # charged or not, its money waits for reconciliation
                response = await client.get(f"/sellers/{seller}/balance", headers=bearer(tokens["finance-reader"]))
                assert response.status_code == 200, response.text
                gross = charged.get(seller, {}).get("EUR", 0)
                expected = [] if gross == 0 else [gross - commission_of(gross, DEFAULT_BPS)]
                assert [b["balance"] for b in response.json()["balances"]] == expected, seller
                succeeded += bool(gross)
    assert succeeded > 0

    verified = ledger_verify(pipeline)
    assert verified.returncode == 0, verified.stderr
    assert "ok:" in verified.stdout


async def test_replaying_every_topic_from_offset_zero_changes_no_balance_and_charges_nothing(
    pipeline: Pipeline, tokens: dict[str, str]
) -> None:
    """Every consumer group rewound to the start of its topic and the consumers started again: each event of the
    run above (and of this one) is delivered a second time, and the inbox and the state machine must make every
    one of them a no-op: no posting, no status change, no PSP call."""
    await pipeline.psp.set_scenario("BEST_PSP_EVER")
    ids = await create_payments(pipeline, tokens["order-service"], 10, sellers=3)
    await wait_until_final(pipeline, tokens["order-service"], ids, within=60)
    await wait_until_drained(pipeline)
    before = await book(pipeline)
    calls_before = (await pipeline.psp.summary())["calls"]

    await pipeline.stop_consumers()
    rewound = await rewind_every_group(pipeline.bootstrap)
    assert rewound > len(ids) * 3  # at least one created event per order waits to be delivered again
    pipeline.start_consumers()
    await wait_until_drained(pipeline)

    assert await book(pipeline) == before
    summary = await pipeline.psp.summary()
    assert summary["calls"] == calls_before
    assert summary["orders_charged_more_than_once"] == 0


async def book(pipeline: Pipeline) -> tuple[list[Any], list[Any], dict[str, str]]:
    """Every account's balance, every journal entry, every order's status: what a replay must leave alone."""
    balances = await fetch(
        pipeline.database_url,
        "SELECT account_kind, account_owner, currency,"
        " sum(CASE side WHEN 'DEBIT' THEN amount ELSE -amount END) AS net FROM postings"
        " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    entries = await fetch(
        pipeline.database_url, "SELECT entry_id, kind, payment_order_id FROM journal_entries ORDER BY entry_id"
    )
    return [tuple(r) for r in balances], [tuple(r) for r in entries], await order_statuses(pipeline)


async def rewind_every_group(bootstrap: str) -> int:
    """Commit each code group's offsets back to the start of its topic (its members are stopped); returns how many
    records now wait to be delivered again."""
    reader = BrokerGroupLag(KafkaSettings(bootstrap_servers=bootstrap), client_id="e2e-rewind")
    await reader.start()
    try:
        waiting = 0
        for group, topics in code_groups().items():
            partitions = [TopicPartition(p.topic, p.partition) for p in await reader.read({group: topics}) if p.end]
            waiting += await rewind(bootstrap, group, partitions)
        return waiting
    finally:
        await reader.close()


async def rewind(bootstrap: str, group: str, partitions: list[TopicPartition]) -> int:
    if not partitions:
        return 0  # nothing was ever published to its topic (e.g. no refund in this run)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        offsets = {tp: OffsetAndMetadata(starts[tp], "") for tp in partitions}
        # The stopped members left the group, but the coordinator may not have settled it yet: retry.
        await wait_until(lambda: _committed(consumer, offsets), timeout=30, what=f"{group} rewound")
        return sum(ends[tp] - starts[tp] for tp in partitions)
    finally:
        await consumer.stop()


async def _committed(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, OffsetAndMetadata]) -> bool:
    try:
        await consumer.commit(offsets)
    except KafkaError:
        return False
    return True


async def wait_until_drained(pipeline: Pipeline) -> None:
    """Every code group has consumed and committed everything on its topic (and the outbox is empty)."""
    reader = BrokerGroupLag(KafkaSettings(bootstrap_servers=pipeline.bootstrap), client_id="e2e-drained")
    await reader.start()

    async def drained() -> bool:
        lags = await reader.read(code_groups())
        pending = await fetch(pipeline.database_url, "SELECT count(*) AS n FROM outbox_event WHERE status = 'NEW'")
        return all(p.lag == 0 for p in lags) and pending[0]["n"] == 0

    try:
        await wait_until(drained, timeout=90, interval=0.5, what="every group caught up")
    finally:
        await reader.close()
