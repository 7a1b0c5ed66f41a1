"""End to end under the NORMAL scenario: after the load settles, every seller's balance read from the API is what
the PSP simulator says it charged that seller less the commission, to the cent, and `payments ledger verify`
finds the book whole (the trial balance equal, every SUCCESSFUL_FINAL order with its one entry)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from payment_domain.ledger import commission_of
from tests.e2e.helpers import ledger_verify, wait_until_final
from tests.fixtures.pipeline import Pipeline
from tests.integration.api.helpers import bearer

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
