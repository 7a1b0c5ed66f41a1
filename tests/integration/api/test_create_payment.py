"""POST /payments and GET /payments/{id} on real HTTP, Postgres, Redis and real Keycloak tokens."""

from __future__ import annotations

import orjson

from tests.fixtures.payment_api import RunningApi
from tests.integration.api.helpers import bearer, fetch, valid_payment


async def test_create_payment_is_accepted_with_location_and_every_payment_order(
    payment_api: RunningApi, tokens: dict[str, str]
) -> None:
    async with payment_api.client() as client:
        response = await client.post("/payments", json=valid_payment(), headers=bearer(tokens["order-service"]))

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["paymentId"].startswith("payment-") and body["id"] == body["paymentId"]
    assert response.headers["location"] == f"/payments/{body['paymentId']}"
    assert body["status"] == "INITIATED"
    assert body["totalAmount"] == {"value": 19949, "currency": "EUR"}
    orders = body["paymentOrders"]
    assert [o["sellerId"] for o in orders] == ["SELLER-111", "SELLER-222", "SELLER-333"]
    assert all(o["paymentOrderId"].startswith("paymentorder-") for o in orders)
    assert len({o["paymentOrderId"] for o in orders}) == 3
    assert {o["status"] for o in orders} == {"INITIATED_PENDING"}
    assert response.headers["x-trace-id"]


async def test_payment_orders_and_outbox_rows_are_written_together(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    async with payment_api.client() as client:
        response = await client.post(
            "/payments",
            json=valid_payment(),
            headers={**bearer(tokens["order-service"]), "X-Trace-Id": "trace-abc-123"},
        )
    assert response.status_code == 202
    assert response.headers["x-trace-id"] == "trace-abc-123"
    payment_id = int(response.json()["paymentId"].removeprefix("payment-"))

    payments = await fetch(database_url, "SELECT * FROM payments WHERE payment_id = $1", payment_id)
    orders = await fetch(
        database_url, "SELECT * FROM payment_orders WHERE payment_id = $1 ORDER BY payment_order_id", payment_id
    )
    outbox = await fetch(
        database_url,
        "SELECT * FROM outbox_event WHERE aggregate_id = ANY($1::text[]) ORDER BY id",
        [str(o["payment_order_id"]) for o in orders],
    )
    assert payments[0]["status"] == "INITIATED" and payments[0]["client_id"] == "order-service"
    assert payments[0]["trace_id"] == "trace-abc-123"
    assert [o["amount_value"] for o in orders] == [4999, 2950, 12000]
    assert len(outbox) == 3
    for order, row in zip(orders, outbox, strict=True):
        envelope = orjson.loads(row["payload"])
        assert row["status"] == "NEW" and row["topic"] == "payment_order_created_topic"
        assert envelope["eventType"] == "payment_order_created"
        assert envelope["aggregateId"] == str(order["payment_order_id"]) == row["aggregate_id"]
        assert envelope["eventId"] == str(row["event_id"]) == envelope["parentEventId"]
        assert envelope["traceId"] == "trace-abc-123"
        data = envelope["data"]
        assert data["publicPaymentOrderId"] == order["public_payment_order_id"]
        assert data["paymentId"] == str(payment_id) and data["publicPaymentId"] == f"payment-{payment_id}"
        assert data["amountValue"] == order["amount_value"] and data["currency"] == "EUR"
        assert data["status"] == "INITIATED_PENDING" and data["retryCount"] == 0


async def test_w3c_traceparent_is_accepted_and_echoed(payment_api: RunningApi, tokens: dict[str, str]) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with payment_api.client() as client:
        response = await client.post(
            "/payments",
            json=valid_payment(),
            headers={**bearer(tokens["order-service"]), "traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
        )
    assert response.status_code == 202
    assert response.headers["x-trace-id"] == trace
    assert response.headers["traceparent"].startswith(f"00-{trace}-")


async def test_get_payment_returns_its_orders_with_current_statuses(
    payment_api: RunningApi, tokens: dict[str, str]
) -> None:
    async with payment_api.client() as client:
        created = (await client.post("/payments", json=valid_payment(), headers=bearer(tokens["order-service"]))).json()
        response = await client.get(f"/payments/{created['paymentId']}", headers=bearer(tokens["payment-reader"]))
    assert response.status_code == 200
    body = response.json()
    assert body["paymentId"] == created["paymentId"]
    assert [o["paymentOrderId"] for o in body["paymentOrders"]] == [
        o["paymentOrderId"] for o in created["paymentOrders"]
    ]
    assert {o["status"] for o in body["paymentOrders"]} == {"INITIATED_PENDING"}


async def test_unknown_or_malformed_payment_id_is_404_problem(payment_api: RunningApi, tokens: dict[str, str]) -> None:
    async with payment_api.client() as client:
        for path in (
            "/payments/payment-999999999999",
            "/payments/not-a-payment",
            "/payments/payment-0",
            "/payments/payment-9223372036854775808",
        ):
            response = await client.get(path, headers=bearer(tokens["payment-reader"]))
            assert response.status_code == 404, path
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["traceId"] == response.headers["x-trace-id"]


async def test_ids_are_unique_across_many_concurrent_creates(payment_api: RunningApi, tokens: dict[str, str]) -> None:
    import asyncio

    async with payment_api.client() as client:
        responses = await asyncio.gather(
            *(
                client.post("/payments", json=valid_payment(), headers=bearer(tokens["order-service"]))
                for _ in range(40)
            )
        )
    assert {r.status_code for r in responses} == {202}
    payment_ids = [r.json()["paymentId"] for r in responses]
    order_ids = [o["paymentOrderId"] for r in responses for o in r.json()["paymentOrders"]]
    assert len(set(payment_ids)) == 40
    assert len(set(order_ids)) == 120


async def test_openapi_documents_the_payment_request_schema(payment_api: RunningApi) -> None:
    async with payment_api.client() as client:
        document = (await client.get("/openapi.json")).json()
    body = document["paths"]["/payments"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/CreatePaymentRequest"}
    schemas = document["components"]["schemas"]
    assert {"CreatePaymentRequest", "AmountIn", "PaymentOrderIn"} <= set(schemas)
    assert schemas["CreatePaymentRequest"]["properties"]["totalAmount"]["$ref"] == "#/components/schemas/AmountIn"
