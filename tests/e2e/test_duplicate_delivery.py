"""Every message delivered twice, end to end, changes nothing. (Its own module: one pipeline at a time, since
pipelines share consumer group names on the session broker.)"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest

from devstack.keycloak import Keycloak
from tests.e2e.helpers import create_payments, outbox_events, wait_until_final
from tests.fixtures.pipeline import Pipeline, running_pipeline
from tests.fixtures.psp import PspSimulatorHandle
from tests.integration.api.helpers import fetch

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def doubled_pipeline(
    psp_simulator: PspSimulatorHandle, keycloak: Keycloak, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    data_dir = tmp_path_factory.mktemp("doubled-kafka")
    async with running_pipeline(
        psp=psp_simulator, issuer_url=keycloak.issuer_url, data_dir=data_dir, doubled=True
    ) as running:
        yield running


async def test_delivering_every_message_twice_changes_nothing(
    doubled_pipeline: Pipeline, tokens: dict[str, str]
) -> None:
    pipeline = doubled_pipeline
    await pipeline.psp.reset()
    # Every path at once: successes, declines, transient retries, timeouts and pending answers.
    await pipeline.psp.set_scenario(
        "NORMAL", timeout_duration_ms=800, pending_percent=10, pending_resolve_min_ms=200, pending_resolve_max_ms=500
    )
    payment_ids = await create_payments(pipeline, tokens["order-service"], 8)

    payments = await wait_until_final(pipeline, tokens["order-service"], payment_ids, within=60)

    summary = await pipeline.psp.summary()
    assert summary["orders_charged_more_than_once"] == 0
    statuses = Counter(o["status"] for p in payments.values() for o in p["paymentOrders"])
    assert statuses["SUCCESSFUL_FINAL"] <= summary["orders_charged"]
    assert summary["orders_charged"] <= statuses["SUCCESSFUL_FINAL"] + statuses["NEEDS_RECONCILIATION"]
    # One settled event per final order, however often each hop delivered.
    settled = [
        *(await outbox_events(pipeline, "payment_order_success")),
        *(await outbox_events(pipeline, "payment_order_failed")),
    ]
    per_order = Counter(r["aggregate_id"] for r in settled)
    final = {
        o["paymentOrderId"].removeprefix("paymentorder-")
        for p in payments.values()
        for o in p["paymentOrders"]
        if o["status"] != "NEEDS_RECONCILIATION"
    }
    assert set(per_order) == final
    assert set(per_order.values()) == {1}
    # The inbox saw every result; duplicates were recognised by their deterministic event ids.
    inbox = await fetch(pipeline.database_url, "SELECT count(*) AS n FROM processed_events")
    assert inbox[0]["n"] >= len(final)
