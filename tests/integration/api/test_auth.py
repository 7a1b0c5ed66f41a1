"""401/403 on the API with real tokens signed by the dev issuer (or deliberately by something else)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from services.dev_issuer.signing import RsaSigningKey
from tests.fixtures.issuer import RunningDevIssuer
from tests.fixtures.payment_api import RunningApi
from tests.integration.api.helpers import bearer, row_counts, valid_payment


def claims(issuer_url: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": issuer_url,
        "azp": "order-service",
        "sub": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 300,
        "realm_access": {"roles": ["payment:write", "payment:read"]},
    }
    base.update(overrides)
    return base


async def test_missing_token_is_401_with_a_bearer_challenge(payment_api: RunningApi, database_url: str) -> None:
    before = await row_counts(database_url)
    async with payment_api.client() as client:
        response = await client.post("/payments", json=valid_payment())
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer realm=")
    assert response.headers["content-type"] == "application/problem+json"
    assert await row_counts(database_url) == before


@pytest.mark.parametrize("kind", ["expired", "wrong_issuer", "not_yet_valid", "garbage"])
async def test_invalid_tokens_are_401_invalid_token(
    payment_api: RunningApi, dev_issuer: RunningDevIssuer, kind: str
) -> None:
    now = int(time.time())
    tokens = {
        "expired": dev_issuer.issuer.sign(claims(dev_issuer.issuer_url, iat=now - 600, exp=now - 300)),
        "wrong_issuer": dev_issuer.issuer.sign(claims("http://127.0.0.1:1/realms/elsewhere")),
        "not_yet_valid": dev_issuer.issuer.sign(claims(dev_issuer.issuer_url, nbf=now + 600)),
        "garbage": "not.a.jwt",
    }
    async with payment_api.client() as client:
        response = await client.post("/payments", json=valid_payment(), headers=bearer(tokens[kind]))
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_token_with_a_forged_signature_is_401(
    payment_api: RunningApi, dev_issuer: RunningDevIssuer, foreign_signing_key: RsaSigningKey
) -> None:
    forged = foreign_signing_key.sign(claims(dev_issuer.issuer_url))
    async with payment_api.client() as client:
        response = await client.post("/payments", json=valid_payment(), headers=bearer(forged))
    assert response.status_code == 401


async def test_client_without_roles_is_403(payment_api: RunningApi, tokens: dict[str, str], database_url: str) -> None:
    before = await row_counts(database_url)
    async with payment_api.client() as client:
        post = await client.post("/payments", json=valid_payment(), headers=bearer(tokens["no-role-client"]))
        get = await client.get("/payments/payment-1", headers=bearer(tokens["no-role-client"]))
    assert post.status_code == 403 and get.status_code == 403
    assert "payment:write" in post.json()["detail"]
    assert await row_counts(database_url) == before


async def test_reader_can_read_but_not_create(payment_api: RunningApi, tokens: dict[str, str]) -> None:
    async with payment_api.client() as client:
        created = await client.post("/payments", json=valid_payment(), headers=bearer(tokens["order-service"]))
        post = await client.post("/payments", json=valid_payment(), headers=bearer(tokens["payment-reader"]))
        get = await client.get(created.headers["location"], headers=bearer(tokens["payment-reader"]))
    assert post.status_code == 403
    assert get.status_code == 200


async def test_writer_without_read_role_cannot_read(payment_api: RunningApi, dev_issuer: RunningDevIssuer) -> None:
    writer_only = dev_issuer.issuer.sign(claims(dev_issuer.issuer_url, realm_access={"roles": ["payment:write"]}))
    async with payment_api.client() as client:
        response = await client.get("/payments/payment-1", headers=bearer(writer_only))
    assert response.status_code == 403
