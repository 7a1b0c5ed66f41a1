"""End to end over the real broker, Postgres, PSP simulator and HTTP: a partial refund of one seller's order of a
three-seller payment travels outbox -> Kafka -> refund executor -> PSP, reaches SUCCEEDED with its ledger entry,
and the book, the seller's balance and the PSP's refund book agree to the cent (`payments ledger verify`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from payment_domain.ledger import commission_of
from tests.e2e.helpers import ledger_verify, wait_until_final
from tests.e2e.test_ledger_after_load import DEFAULT_BPS, three_seller_payment
from tests.fixtures.pipeline import Pipeline
from tests.integration.api.helpers import bearer, fetch

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def refund_until_final(client: httpx.AsyncClient, location: str, token: str, *, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        response = await client.get(location, headers=bearer(token))
        assert response.status_code == 200, response.text
        if response.json()["status"] != "REQUESTED":
            return dict(response.json())
        if time.monotonic() > deadline:
            raise AssertionError(f"refund {location} still REQUESTED after {within}s")
        await asyncio.sleep(0.1)


async def test_a_partial_refund_reaches_its_final_state_with_its_entry_and_the_psp_agrees(
    pipeline: Pipeline, tokens: dict[str, str]
) -> None:
    await pipeline.psp.reset()
    await pipeline.psp.set_scenario("BEST_PSP_EVER")
    run = f"REFUND-{uuid.uuid4().hex[:8]}"
    body = three_seller_payment(run, 0)
    writer, reader = tokens["order-service"], tokens["payment-reader"]
    async with pipeline.api.client() as client:
        created = await client.post("/payments", json=body, headers=bearer(writer))
        assert created.status_code == 202, created.text
        payment_id = created.json()["paymentId"]
        (payment,) = (await wait_until_final(pipeline, writer, [payment_id], within=30)).values()
        assert {o["status"] for o in payment["paymentOrders"]} == {"SUCCESSFUL_FINAL"}
        order = payment["paymentOrders"][0]  # 4,999 EUR cents of seller <run>-0-0
        seller, charged = order["sellerId"], order["amount"]["value"]

        requested = await client.post(
            f"/payments/{payment_id}/orders/{order['paymentOrderId']}/refunds",
            json={"amount": {"value": 2_000, "currency": "EUR"}},
            headers={**bearer(writer), "Idempotency-Key": f"{run}-refund"},
        )
        assert requested.status_code == 202, requested.text
        refund = await refund_until_final(client, requested.headers["location"], reader, within=30)
        balance = await client.get(f"/sellers/{seller}/balance", headers=bearer(tokens["finance-reader"]))
        read = await client.get(f"/payments/{payment_id}", headers=bearer(reader))

    assert refund["status"] == "SUCCEEDED"
    assert refund["paymentOrderRefunded"] == {"value": 2_000, "currency": "EUR"}
    refunded_line = next(o for o in read.json()["paymentOrders"] if o["paymentOrderId"] == order["paymentOrderId"])
    assert refunded_line["refunded"] == {"value": 2_000, "currency": "EUR"}
    # The platform keeps the commission of what stays charged: floor(499 * 2,999 / 4,999) = 299.
    commission = commission_of(charged, DEFAULT_BPS)
    kept = commission * (charged - 2_000) // charged
    assert [b["balance"] for b in balance.json()["balances"]] == [(charged - 2_000) - kept]
    entries = await fetch(
        pipeline.database_url,
        "SELECT e.kind, count(*) AS n FROM journal_entries e WHERE e.payment_order_id = $1 GROUP BY e.kind",
        int(order["paymentOrderId"].removeprefix("paymentorder-")),
    )
    assert {r["kind"]: r["n"] for r in entries} == {"CHARGE": 1, "REFUND": 1}
    summary = await pipeline.psp.summary()
    assert summary["refunded_minor_by_seller"] == {seller: {"EUR": 2_000}}
    assert summary["orders_refunded_more_than_once"] == 0
    assert summary["orders_refunded_beyond_charge"] == 0

    verified = ledger_verify(pipeline, "--psp-url", pipeline.psp.base_url)
    assert verified.returncode == 0, verified.stderr
    assert "checked against entries, orders and the PSP's record" in verified.stdout


async def test_under_normal_every_refund_ends_final_none_is_paid_twice_and_the_book_matches_the_psp(
    pipeline: Pipeline, tokens: dict[str, str]
) -> None:
    """Timeouts that refund anyway, retryable failures, declines and pending answers; two partial refunds of every
    charged order at once."""
    await pipeline.psp.reset()
    await pipeline.psp.set_scenario(
        "NORMAL", timeout_duration_ms=900, pending_percent=10, pending_resolve_min_ms=200, pending_resolve_max_ms=600
    )
    run = f"REFUNDS-{uuid.uuid4().hex[:8]}"
    writer, reader = tokens["order-service"], tokens["payment-reader"]
    async with pipeline.api.client() as client:
        created = await asyncio.gather(
            *(client.post("/payments", json=three_seller_payment(run, n), headers=bearer(writer)) for n in range(4))
        )
        payments = await wait_until_final(pipeline, writer, [r.json()["paymentId"] for r in created], within=90)
        charged = [
            (p["paymentId"], o)
            for p in payments.values()
            for o in p["paymentOrders"]
            if o["status"] == "SUCCESSFUL_FINAL"
        ]
        assert charged, "NORMAL charged none of twelve orders"
        requests = [
            client.post(
                f"/payments/{payment_id}/orders/{order['paymentOrderId']}/refunds",
                json={"amount": {"value": value, "currency": "EUR"}},
                headers={**bearer(writer), "Idempotency-Key": f"{order['paymentOrderId']}-{value}"},
            )
            for payment_id, order in charged
            for value in (1_000, 1_500)
        ]
        accepted = await asyncio.gather(*requests)
        assert {r.status_code for r in accepted} == {202}, [r.text for r in accepted if r.status_code != 202]
        refunds = [await refund_until_final(client, r.headers["location"], reader, within=90) for r in accepted]

    statuses = Counter(r["status"] for r in refunds)
    assert set(statuses) <= {"SUCCEEDED", "FAILED", "NEEDS_RECONCILIATION"}
    assert statuses["SUCCEEDED"] > 0, statuses
    summary = await pipeline.psp.summary()
    assert summary["orders_refunded_more_than_once"] == 0
    assert summary["orders_refunded_beyond_charge"] == 0
    parked = {r["sellerId"] for r in refunds if r["status"] == "NEEDS_RECONCILIATION"}
    ours: dict[str, int] = {}  # a seller with a parked refund is left out on both sides: it may or may not be paid
    for r in refunds:
        if r["status"] == "SUCCEEDED" and r["sellerId"] not in parked:
            ours[r["sellerId"]] = ours.get(r["sellerId"], 0) + r["amount"]["value"]
    theirs = {s: c["EUR"] for s, c in summary["refunded_minor_by_seller"].items() if s not in parked}
    assert ours == theirs
    verified = ledger_verify(pipeline)
    assert verified.returncode == 0, verified.stderr
