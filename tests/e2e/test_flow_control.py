"""Flow control end to end, over the real API, Postgres, Kafka, consumers and PSP simulator: with payment-consumers
stopped, creates turn into 503 `pipeline-behind` (with Retry-After) within seconds instead of a growing backlog,
nothing accepted is lost, and once the consumers are back the same requests are accepted again and every order
settles, charged once. (Its own module: one pipeline at a time, since pipelines share consumer group names.)"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from devstack.keycloak import Keycloak
from tests.e2e.helpers import create_payments, payment_body, wait_until_final
from tests.fixtures.pipeline import Pipeline, running_pipeline
from tests.fixtures.psp import PspSimulatorHandle
from tests.integration.api.helpers import bearer

pytestmark = pytest.mark.asyncio(loop_scope="session")

BUDGET = 20  # orders awaiting their first PSP answer
SELLERS = 2


@pytest.fixture(scope="module")
async def budgeted_pipeline(
    psp_simulator: PspSimulatorHandle, keycloak: Keycloak, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    data_dir = tmp_path_factory.mktemp("flow-control-kafka")
    async with running_pipeline(
        psp=psp_simulator,
        issuer_url=keycloak.issuer_url,
        data_dir=data_dir,
        api_groups={"admission": {"enabled": True, "in_flight_budget": BUDGET, "refresh_seconds": 0.1}},
    ) as running:
        yield running


async def post(client: httpx.AsyncClient, token: str, body: dict[str, Any], key: str) -> httpx.Response:
    return await client.post("/payments", json=body, headers={**bearer(token), "Idempotency-Key": key})


async def test_creates_are_refused_while_the_consumers_are_stopped_and_accepted_again_once_they_are_back(
    budgeted_pipeline: Pipeline, tokens: dict[str, str]
) -> None:
    pipeline, token = budgeted_pipeline, tokens["order-service"]
    await pipeline.psp.reset()
    await pipeline.psp.set_scenario("BEST_PSP_EVER")
    settled_first = await create_payments(pipeline, token, 3, sellers=SELLERS)
    await wait_until_final(pipeline, token, settled_first, within=30)

    await pipeline.stop_consumers()
    accepted: list[str] = []
    started = time.monotonic()
    async with pipeline.api.client() as client:
        while True:
            body, key = payment_body(SELLERS), str(uuid.uuid4())
            response = await post(client, token, body, key)
            if response.status_code == 503:
                break
            assert response.status_code == 202, response.text
            accepted.append(response.json()["paymentId"])
            assert time.monotonic() - started < 10, f"still accepting after {len(accepted)} payments"

        problem = response.json()
        assert problem["type"].endswith("/pipeline-behind"), problem
        assert "nothing was written" in problem["detail"]
        assert response.headers["retry-after"] == "1"
        # The budget is in orders. A reading taken while a create commits may count it twice until the next one
        # (never less than what is there), so the last payment that fits may be refused.
        assert BUDGET - SELLERS <= len(accepted) * SELLERS <= BUDGET, accepted
        again = await post(client, token, body, key)
        assert again.status_code == 503  # still behind: the consumers are away
        metrics = (await httpx.AsyncClient().get(f"{pipeline.api.management_url}/metrics")).text
        assert f"payment_pipeline_in_flight_budget {float(BUDGET)}" in metrics
        assert 'http_requests_shed_total{reason="pipeline_behind"}' in metrics

        pipeline.start_consumers()
        # The careful client: the same request, the same key, after Retry-After, until it is taken.
        deadline = time.monotonic() + 60
        while (retried := await post(client, token, body, key)).status_code == 503:
            assert time.monotonic() < deadline, "creates still refused a minute after the consumers came back"
            await asyncio.sleep(float(retried.headers["retry-after"]))
        assert retried.status_code == 202, retried.text
        accepted.append(retried.json()["paymentId"])

    payments = await wait_until_final(pipeline, token, [*settled_first, *accepted], within=60)
    assert {p["status"] for p in payments.values()} == {"SUCCESS"}
    summary = await pipeline.psp.summary()
    assert summary["orders_charged"] == (len(settled_first) + len(accepted)) * SELLERS
    assert summary["orders_charged_more_than_once"] == 0
