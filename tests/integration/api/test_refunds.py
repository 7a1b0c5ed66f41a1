"""POST and GET of refunds through the real API (Keycloak tokens, real Postgres): full and partial refunds, the
limit as problem+json, idempotent replays and refusals, and the order's GET showing what is refunded so far."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.fixtures.payment_api import RunningApi
from tests.integration.api.helpers import bearer, fetch, valid_payment


def keyed(token: str, key: str | None = None) -> dict[str, str]:
    return {**bearer(token), "Idempotency-Key": key or str(uuid.uuid4())}


def money(value: int, currency: str = "EUR") -> dict[str, Any]:
    return {"amount": {"value": value, "currency": currency}}


async def charged_payment(client: httpx.AsyncClient, token: str, database_url: str) -> tuple[str, str, int]:
    """A payment made through the API whose first order the test marks SUCCESSFUL_FINAL (as the PSP would)."""
    created = await client.post("/payments", json=valid_payment(), headers=keyed(token))
    assert created.status_code == 202, created.text
    payment_id = created.json()["paymentId"]
    first = created.json()["paymentOrders"][0]
    await fetch(
        database_url,
        "UPDATE payment_orders SET status = 'SUCCESSFUL_FINAL' WHERE public_payment_order_id = $1",
        first["paymentOrderId"],
    )
    return payment_id, first["paymentOrderId"], first["amount"]["value"]


async def test_partial_refunds_up_to_the_charge_then_a_refusal_and_the_order_shows_what_is_refunded(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    writer = tokens["order-service"]
    async with payment_api.client() as client:
        payment_id, order_id, charged = await charged_payment(client, writer, database_url)
        path = f"/payments/{payment_id}/orders/{order_id}/refunds"
        first = await client.post(path, json=money(charged - 1), headers=keyed(writer))
        second = await client.post(path, json=money(1), headers=keyed(writer))
        too_much = await client.post(path, json=money(1), headers=keyed(writer))
        read = await client.get(first.headers["location"], headers=bearer(tokens["payment-reader"]))
        payment = await client.get(f"/payments/{payment_id}", headers=bearer(tokens["payment-reader"]))

    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["status"] == "REQUESTED"
    assert first.json()["amount"] == {"value": charged - 1, "currency": "EUR"}
    assert first.headers["location"] == f"{path}/{first.json()['refundId']}"
    assert too_much.status_code == 409
    assert too_much.headers["content-type"] == "application/problem+json"
    assert too_much.json()["type"].endswith("/refund-exceeds-charge")
    assert too_much.json()["remaining"] == 0
    assert read.status_code == 200
    assert read.json()["refundId"] == first.json()["refundId"]
    assert read.json()["paymentOrderRefunded"] == {"value": charged, "currency": "EUR"}
    lines = {line["paymentOrderId"]: line for line in payment.json()["paymentOrders"]}
    assert lines[order_id]["refunded"] == {"value": charged, "currency": "EUR"}
    assert all(line["refunded"]["value"] == 0 for oid, line in lines.items() if oid != order_id)


async def test_same_key_and_body_replay_the_refund_and_another_body_is_refused_with_422(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    writer, key = tokens["order-service"], str(uuid.uuid4())
    async with payment_api.client() as client:
        payment_id, order_id, _ = await charged_payment(client, writer, database_url)
        path = f"/payments/{payment_id}/orders/{order_id}/refunds"
        first = await client.post(path, json=money(100), headers=keyed(writer, key))
        replay = await client.post(path, json=money(100), headers=keyed(writer, key))
        other = await client.post(path, json=money(200), headers=keyed(writer, key))

    assert (first.status_code, replay.status_code) == (202, 202)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["refundId"] == first.json()["refundId"]
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-mismatch")
    rows = await fetch(database_url, "SELECT count(*) AS n FROM refunds WHERE idempotency_key = $1", key)
    assert rows[0]["n"] == 1


async def test_a_refund_needs_a_key_the_write_role_and_a_charged_order(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    writer = tokens["order-service"]
    async with payment_api.client() as client:
        created = await client.post("/payments", json=valid_payment(), headers=keyed(writer))
        payment_id = created.json()["paymentId"]
        pending = created.json()["paymentOrders"][0]["paymentOrderId"]
        path = f"/payments/{payment_id}/orders/{pending}/refunds"
        not_charged = await client.post(path, json=money(100), headers=keyed(writer))
        no_key = await client.post(path, json=money(100), headers=bearer(writer))
        reader = await client.post(path, json=money(100), headers=keyed(tokens["payment-reader"]))
        anonymous = await client.post(path, json=money(100), headers={"Idempotency-Key": "k"})
        unknown = await client.post(
            f"/payments/{payment_id}/orders/paymentorder-1/refunds", json=money(100), headers=keyed(writer)
        )
        bad = await client.post(path, json=money(0), headers=keyed(writer))
        wrong_currency = await client.post(path, json=money(100, "USD"), headers=keyed(writer))

    assert not_charged.status_code == 409
    assert not_charged.json()["type"].endswith("/order-not-refundable")
    assert no_key.status_code == 400
    assert reader.status_code == 403
    assert anonymous.status_code == 401
    assert unknown.status_code == 404
    assert bad.status_code == 422
    assert wrong_currency.status_code == 422  # the currency is checked first: it can never be right
    assert wrong_currency.json()["type"].endswith("/refund-currency-mismatch")
    rows = await fetch(database_url, "SELECT count(*) AS n FROM refunds WHERE payment_id = $1", int(payment_id[8:]))
    assert rows[0]["n"] == 0
