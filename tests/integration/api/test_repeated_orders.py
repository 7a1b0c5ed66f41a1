"""One payment per order: a client's second create for an `orderId` it already paid with is answered 409, pointing
at the first payment, and writes nothing, whatever its body or Idempotency-Key (only a replay of the same key is
answered with the first response)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx

from tests.fixtures.payment_api import ApiFactory, RunningApi
from tests.fixtures.ports import wait_until
from tests.fixtures.signing_issuer import SigningIssuer
from tests.integration.api.helpers import bearer, dsn, fetch, row_counts, valid_payment


def assert_points_at(response: httpx.Response, payment_id: str, order_id: str) -> None:
    assert response.status_code == 409, response.text
    problem = response.json()
    assert problem["type"].endswith("/order-already-has-payment")
    assert problem["paymentId"] == payment_id and problem["orderId"] == order_id
    assert payment_id in problem["detail"]
    assert response.headers["location"] == f"/payments/{payment_id}"
    assert "retry-after" not in response.headers


async def payments_for(database_url: str, order_id: str) -> list[str]:
    rows = await fetch(database_url, "SELECT public_payment_id FROM payments WHERE order_id = $1", order_id)
    return [r["public_payment_id"] for r in rows]


async def test_a_keyless_repeat_of_an_order_does_not_create_a_second_payment(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    body = valid_payment()
    async with payment_api.client() as client:
        first = await client.post("/payments", json=body, headers=bearer(tokens["order-service"]))
        before = await row_counts(database_url)
        again = await client.post("/payments", json=body, headers=bearer(tokens["order-service"]))
        found = await client.get(again.headers["location"], headers=bearer(tokens["payment-reader"]))
    assert first.status_code == 202
    assert_points_at(again, first.json()["paymentId"], body["orderId"])
    assert found.status_code == 200 and found.json()["orderId"] == body["orderId"]
    assert await row_counts(database_url) == before
    assert await payments_for(database_url, body["orderId"]) == [first.json()["paymentId"]]


async def test_a_repeat_with_another_body_is_refused_the_same_way(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    body = valid_payment()
    other_body = valid_payment(orderId=body["orderId"], buyerId="BUYER-OTHER")
    async with payment_api.client() as client:
        first = await client.post("/payments", json=body, headers=bearer(tokens["order-service"]))
        before = await row_counts(database_url)
        other = await client.post("/payments", json=other_body, headers=bearer(tokens["order-service"]))
    assert_points_at(other, first.json()["paymentId"], body["orderId"])
    assert await row_counts(database_url) == before


async def test_a_new_idempotency_key_does_not_make_a_second_payment_for_an_order(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    body, first_key, second_key = valid_payment(), str(uuid.uuid4()), str(uuid.uuid4())
    headers = bearer(tokens["order-service"])
    async with payment_api.client() as client:
        first = await client.post("/payments", json=body, headers={**headers, "Idempotency-Key": first_key})
        before = await row_counts(database_url)
        second = await client.post("/payments", json=body, headers={**headers, "Idempotency-Key": second_key})
        second_again = await client.post("/payments", json=body, headers={**headers, "Idempotency-Key": second_key})
        replay = await client.post("/payments", json=body, headers={**headers, "Idempotency-Key": first_key})
    paid_with = first.json()["paymentId"]
    assert_points_at(second, paid_with, body["orderId"])
    # The refused request left no record under its key: asked again, it is refused again, not replayed.
    assert_points_at(second_again, paid_with, body["orderId"])
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content
    assert await row_counts(database_url) == before


async def test_a_keyed_repeat_of_an_order_first_paid_without_a_key_is_refused(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    body, headers = valid_payment(), bearer(tokens["order-service"])
    async with payment_api.client() as client:
        first = await client.post("/payments", json=body, headers=headers)
        before = await row_counts(database_url)
        keyed = await client.post("/payments", json=body, headers={**headers, "Idempotency-Key": str(uuid.uuid4())})
    assert_points_at(keyed, first.json()["paymentId"], body["orderId"])
    assert await row_counts(database_url) == before


async def test_concurrent_keyless_creates_for_one_order_make_exactly_one_payment(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    body = valid_payment()
    async with payment_api.client() as client:
        responses = await asyncio.gather(
            *(client.post("/payments", json=body, headers=bearer(tokens["order-service"])) for _ in range(10))
        )
    created = [r for r in responses if r.status_code == 202]
    assert len(created) == 1, [r.status_code for r in responses]
    paid_with = created[0].json()["paymentId"]
    for response in responses:
        if response is not created[0]:
            assert_points_at(response, paid_with, body["orderId"])
    assert await payments_for(database_url, body["orderId"]) == [paid_with]


async def _uncommitted_payment(database_url: str, order_id: str) -> tuple[asyncpg.Connection, Any, int]:
    """A payment for `order_id` written by a transaction that is still open."""
    conn = await asyncpg.connect(dsn(database_url))
    tx = conn.transaction()
    await tx.start()
    payment_id = 9 * 10**15 + uuid.uuid4().int % 10**12  # far above what the id counters hand out in a test run
    await conn.execute(
        """
        INSERT INTO payments (payment_id, public_payment_id, buyer_id, order_id, amount_value, amount_currency,
                              status, client_id, trace_id, created_at, updated_at)
        VALUES ($1::bigint, 'payment-' || $1::bigint, 'BUYER-123', $2, 19949, 'EUR', 'INITIATED', 'order-service',
                'trace-race', now(), now())
        """,
        payment_id,
        order_id,
    )
    return conn, tx, payment_id


async def test_a_create_racing_an_uncommitted_payment_for_its_order_waits_and_is_refused(
    api_factory: ApiFactory, tokens: dict[str, str], database_url: str
) -> None:
    api = await api_factory(db={"lock_timeout_ms": 10_000, "statement_timeout_ms": 10_000})
    body = valid_payment()
    conn, tx, rival = await _uncommitted_payment(database_url, body["orderId"])
    try:
        async with api.client() as client:
            racing = asyncio.ensure_future(client.post("/payments", json=body, headers=bearer(tokens["order-service"])))

            async def waiting_for_the_rival() -> bool:
                rows = await fetch(
                    database_url,
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = 'payment-service' "
                    "AND wait_event_type = 'Lock' AND datname = current_database()",
                )
                return bool(rows)

            await wait_until(waiting_for_the_rival, timeout=10, what="the create to wait for the rival's commit")
            await tx.commit()
            response = await racing
    finally:
        await conn.close()
    assert_points_at(response, f"payment-{rival}", body["orderId"])
    assert await payments_for(database_url, body["orderId"]) == [f"payment-{rival}"]


async def test_order_ids_are_scoped_to_the_calling_client(
    api_factory: ApiFactory, signing_issuer: SigningIssuer, database_url: str
) -> None:
    api = await api_factory(issuer_url=signing_issuer.issuer_url)
    order_service = signing_issuer.sign(signing_issuer.access_token_claims("order-service"))
    checkout_service = signing_issuer.sign(
        signing_issuer.access_token_claims("order-service")
        | {"azp": "checkout-service", "sub": str(uuid.uuid4()), "preferred_username": "service-account-checkout"}
    )
    body = valid_payment()
    async with api.client() as client:
        mine = await client.post("/payments", json=body, headers=bearer(order_service))
        theirs = await client.post("/payments", json=body, headers=bearer(checkout_service))
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["paymentId"] != theirs.json()["paymentId"]
    assert len(await payments_for(database_url, body["orderId"])) == 2
