"""Idempotency-Key (IETF draft / Stripe semantics), scoped to the calling client."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg

from services.payment_service.maintenance import purge_idempotency_keys
from tests.fixtures.payment_api import ApiFactory, MutableClock, RunningApi
from tests.fixtures.signing_issuer import SigningIssuer
from tests.integration.api.helpers import bearer, dsn, fetch, row_counts, valid_payment


def keyed(token: str, key: str) -> dict[str, str]:
    return {**bearer(token), "Idempotency-Key": key}


async def test_same_key_and_body_replays_the_first_response(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    key, body = str(uuid.uuid4()), valid_payment()
    async with payment_api.client() as client:
        first = await client.post("/payments", json=body, headers=keyed(tokens["order-service"], key))
        before = await row_counts(database_url)
        second = await client.post("/payments", json=body, headers=keyed(tokens["order-service"], key))
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    assert second.status_code == 202
    assert second.headers["idempotent-replayed"] == "true"
    assert second.content == first.content
    assert second.headers["location"] == first.headers["location"]
    assert await row_counts(database_url) == before


async def test_replay_ignores_formatting_differences_of_the_same_body(
    payment_api: RunningApi, tokens: dict[str, str]
) -> None:
    key, body = str(uuid.uuid4()), valid_payment()
    reordered = {k: body[k] for k in reversed(list(body))}
    async with payment_api.client() as client:
        first = await client.post("/payments", json=body, headers=keyed(tokens["order-service"], key))
        second = await client.post("/payments", json=reordered, headers=keyed(tokens["order-service"], key))
    assert second.status_code == 202 and second.headers["idempotent-replayed"] == "true"
    assert second.json()["paymentId"] == first.json()["paymentId"]


async def test_same_key_different_body_is_rejected_with_422(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    key = str(uuid.uuid4())
    async with payment_api.client() as client:
        await client.post("/payments", json=valid_payment(buyerId="B-1"), headers=keyed(tokens["order-service"], key))
        before = await row_counts(database_url)
        response = await client.post(
            "/payments", json=valid_payment(buyerId="B-2"), headers=keyed(tokens["order-service"], key)
        )
    assert response.status_code == 422
    assert response.json()["type"].endswith("idempotency-key-mismatch")
    assert await row_counts(database_url) == before


async def test_keys_are_scoped_to_the_calling_client(
    api_factory: ApiFactory, signing_issuer: SigningIssuer, database_url: str
) -> None:
    # The realm has a single client allowed to write, so two writing clients exist only as tokens the test
    # signs, for an API that trusts the test's issuer; both are shaped like Keycloak's.
    api = await api_factory(issuer_url=signing_issuer.issuer_url)
    order_service = signing_issuer.sign(signing_issuer.access_token_claims("order-service"))
    checkout_service = signing_issuer.sign(
        signing_issuer.access_token_claims("order-service")
        | {"azp": "checkout-service", "sub": str(uuid.uuid4()), "preferred_username": "service-account-checkout"}
    )
    key, body = str(uuid.uuid4()), valid_payment()
    async with api.client() as client:
        mine = await client.post("/payments", json=body, headers=keyed(order_service, key))
        my_replay = await client.post("/payments", json=body, headers=keyed(order_service, key))
        theirs = await client.post("/payments", json=body, headers=keyed(checkout_service, key))
    assert mine.status_code == theirs.status_code == my_replay.status_code == 202
    assert my_replay.headers["idempotent-replayed"] == "true"  # the key is live: only the client differs
    assert "idempotent-replayed" not in theirs.headers
    assert mine.json()["paymentId"] != theirs.json()["paymentId"]
    holders = await fetch(database_url, "SELECT client_id FROM idempotency_keys WHERE idempotency_key = $1", key)
    assert sorted(row["client_id"] for row in holders) == ["checkout-service", "order-service"]


async def test_retry_while_the_first_request_is_in_flight_is_409_with_retry_after(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    key, body = str(uuid.uuid4()), valid_payment()
    # Another request's claim on the key, not yet committed: exactly what an in-flight first request holds.
    conn = await asyncpg.connect(dsn(database_url))
    tx = conn.transaction()
    await tx.start()
    await conn.execute(
        """INSERT INTO idempotency_keys VALUES ($1, $2, 'h', 202, '\\x7b7d', 1, now(), now() + interval '1 day')""",
        "order-service",
        key,
    )
    try:
        async with payment_api.client() as client:
            response = await client.post("/payments", json=body, headers=keyed(tokens["order-service"], key))
        assert response.status_code == 409
        assert response.headers["retry-after"] == "1"
        assert response.json()["type"].endswith("idempotency-key-in-use")
    finally:
        await tx.rollback()
        await conn.close()
    async with payment_api.client() as client:
        retried = await client.post("/payments", json=body, headers=keyed(tokens["order-service"], key))
    assert retried.status_code == 202 and "idempotent-replayed" not in retried.headers


async def test_concurrent_requests_with_one_key_create_exactly_one_payment(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    key, body = str(uuid.uuid4()), valid_payment()
    before = await row_counts(database_url)
    async with payment_api.client() as client:
        responses = await asyncio.gather(
            *(client.post("/payments", json=body, headers=keyed(tokens["order-service"], key)) for _ in range(12))
        )
    assert {r.status_code for r in responses} <= {202, 409}
    accepted = [r for r in responses if r.status_code == 202]
    assert accepted, "at least the first request must be accepted"
    assert len({r.json()["paymentId"] for r in accepted}) == 1
    assert sum(1 for r in accepted if "idempotent-replayed" not in r.headers) == 1
    after = await row_counts(database_url)
    assert after["payments"] == before["payments"] + 1
    assert after["outbox_event"] == before["outbox_event"] + 3


async def test_invalid_idempotency_keys_are_400(payment_api: RunningApi, tokens: dict[str, str]) -> None:
    async with payment_api.client() as client:
        for bad in ("x" * 256, "has space", "tab\tkey"):
            response = await client.post("/payments", json=valid_payment(), headers=keyed(tokens["order-service"], bad))
            assert response.status_code == 400, bad
        ok = await client.post("/payments", json=valid_payment(), headers=keyed(tokens["order-service"], "k" * 255))
    assert ok.status_code == 202


async def test_expired_keys_are_reusable_and_purged(
    api_factory: ApiFactory, tokens: dict[str, str], database_url: str
) -> None:
    clock = MutableClock()
    api = await api_factory(clock=clock, api={"idempotency_ttl_hours": 24})
    key = f"expiring-{uuid.uuid4()}"
    async with api.client() as client:
        first = await client.post(
            "/payments", json=valid_payment(buyerId="B-1"), headers=keyed(tokens["order-service"], key)
        )
        clock.advance(timedelta(hours=23))
        mismatch = await client.post(
            "/payments", json=valid_payment(buyerId="B-2"), headers=keyed(tokens["order-service"], key)
        )
        clock.advance(timedelta(hours=2))
        reused = await client.post(
            "/payments", json=valid_payment(buyerId="B-2"), headers=keyed(tokens["order-service"], key)
        )
    assert first.status_code == 202 and mismatch.status_code == 422
    assert reused.status_code == 202 and "idempotent-replayed" not in reused.headers
    assert reused.json()["paymentId"] != first.json()["paymentId"]

    clock.advance(timedelta(hours=25))
    purged = await purge_idempotency_keys(api.container)
    assert purged >= 1
    assert not await fetch(database_url, "SELECT 1 FROM idempotency_keys WHERE idempotency_key = $1", key)
