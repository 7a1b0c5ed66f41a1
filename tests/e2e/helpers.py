"""Driving the pipeline from the outside: create payments over HTTP, wait for final states, read the ledger."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from tests.fixtures.pipeline import Pipeline
from tests.integration.api.helpers import bearer, fetch

FINAL = {"SUCCESSFUL_FINAL", "FAILED_FINAL", "DECLINED_FINAL", "NEEDS_RECONCILIATION"}


def payment_body(sellers: int = 2) -> dict[str, Any]:
    lines = [{"sellerId": f"SELLER-{i}", "amount": {"value": 1000 + i, "currency": "EUR"}} for i in range(sellers)]
    return {
        "buyerId": "BUYER-E2E",
        "orderId": f"ORDER-{uuid.uuid4().hex[:10]}",
        "totalAmount": {"value": sum(line["amount"]["value"] for line in lines), "currency": "EUR"},
        "paymentOrders": lines,
    }


async def create_payments(pipeline: Pipeline, token: str, count: int, sellers: int = 2) -> list[str]:
    async with pipeline.api.client() as client:
        responses = await asyncio.gather(
            *(client.post("/payments", json=payment_body(sellers), headers=bearer(token)) for _ in range(count))
        )
    assert {r.status_code for r in responses} == {202}, [r.text for r in responses if r.status_code != 202]
    return [r.json()["paymentId"] for r in responses]


async def wait_until_final(
    pipeline: Pipeline, token: str, payment_ids: list[str], *, within: float
) -> dict[str, dict[str, Any]]:
    """Poll GET /payments/{id} until every order is final (or parked for reconciliation)."""
    deadline = time.monotonic() + within
    latest: dict[str, dict[str, Any]] = {}
    async with pipeline.api.client() as client:
        while True:
            pending = [p for p in payment_ids if p not in latest or not _settled(latest[p])]
            for payment_id in pending:
                response = await client.get(f"/payments/{payment_id}", headers=bearer(token))
                assert response.status_code == 200, response.text
                latest[payment_id] = response.json()
            if all(_settled(latest[p]) for p in payment_ids):
                return latest
            if time.monotonic() > deadline:
                stuck = {p: [o["status"] for o in latest[p]["paymentOrders"]] for p in pending}
                raise AssertionError(f"not final within {within}s: {stuck}")
            await asyncio.sleep(0.1)


def _settled(payment: dict[str, Any]) -> bool:
    return all(o["status"] in FINAL for o in payment["paymentOrders"])


async def order_statuses(pipeline: Pipeline) -> dict[str, str]:
    rows = await fetch(pipeline.database_url, "SELECT public_payment_order_id, status FROM payment_orders")
    return {r["public_payment_order_id"]: r["status"] for r in rows}


async def outbox_events(pipeline: Pipeline, event_type: str) -> list[Any]:
    return await fetch(
        pipeline.database_url, "SELECT aggregate_id, event_id FROM outbox_event WHERE event_type = $1", event_type
    )


PAYMENTS = Path(sys.executable).with_name("payments")


def ledger_verify(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    """`payments ledger verify` as the operator runs it (the installed console script), on the pipeline's database."""
    return subprocess.run(
        [str(PAYMENTS), "ledger", "verify", *args],
        env={**os.environ, "PAYMENTS_DB__URL": pipeline.database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
