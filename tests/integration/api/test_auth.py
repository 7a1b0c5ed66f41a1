"""401/403 on the API: real tokens from Keycloak, forged ones signed by the test's signing issuer or a foreign key."""

from __future__ import annotations

import time
from typing import Any

import pytest

from devstack.keycloak import Keycloak
from tests.fixtures.payment_api import ApiFactory, RunningApi
from tests.fixtures.signing_issuer import RsaSigningKey, SigningIssuer
from tests.integration.api.helpers import bearer, row_counts, valid_payment


def claims(issuer: SigningIssuer, iss: str, **overrides: Any) -> dict[str, Any]:
    """order-service's claims, shaped like Keycloak's, naming ``iss`` as issuer, with ``overrides``."""
    return {**issuer.access_token_claims("order-service"), "iss": iss, **overrides}


async def test_missing_token_is_401_with_a_bearer_challenge(payment_api: RunningApi, database_url: str) -> None:
    before = await row_counts(database_url)
    async with payment_api.client() as client:
        response = await client.post("/payments", json=valid_payment())
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer realm=")
    assert response.headers["content-type"] == "application/problem+json"
    assert await row_counts(database_url) == before


@pytest.fixture
async def forged_api(api_factory: ApiFactory, signing_issuer: SigningIssuer) -> RunningApi:
    """An API trusting the signing issuer: it judges tokens Keycloak cannot be made to sign."""
    return await api_factory(issuer_url=signing_issuer.issuer_url)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("expired", "token expired"),
        ("wrong_issuer", "wrong issuer"),
        ("not_yet_valid", "token not yet valid"),
        ("no_client", "token names no client"),
        ("garbage", "malformed token"),
    ],
)
async def test_invalid_tokens_are_401_invalid_token(
    forged_api: RunningApi, signing_issuer: SigningIssuer, database_url: str, kind: str, reason: str
) -> None:
    now = int(time.time())
    own = signing_issuer.issuer_url
    tokens = {
        "expired": signing_issuer.sign(claims(signing_issuer, own, iat=now - 600, exp=now - 300)),
        "wrong_issuer": signing_issuer.sign(claims(signing_issuer, "http://127.0.0.1:1/realms/elsewhere")),
        "not_yet_valid": signing_issuer.sign(claims(signing_issuer, own, nbf=now + 600)),
        "no_client": signing_issuer.sign({k: v for k, v in claims(signing_issuer, own).items() if k != "azp"}),
        "garbage": "not.a.jwt",
    }
    before = await row_counts(database_url)
    async with forged_api.client() as client:
        response = await client.post("/payments", json=valid_payment(), headers=bearer(tokens[kind]))
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge
    assert f'error_description="{reason}"' in challenge
    assert await row_counts(database_url) == before


async def test_the_same_claims_signed_by_the_trusted_issuer_are_accepted(
    forged_api: RunningApi, signing_issuer: SigningIssuer
) -> None:
    # The control for the 401s above: what fails there is the one claim each case changes.
    token = signing_issuer.sign(claims(signing_issuer, signing_issuer.issuer_url))
    async with forged_api.client() as client:
        response = await client.post("/payments", json=valid_payment(), headers=bearer(token))
    assert response.status_code == 202, response.text


async def test_token_signed_by_the_test_issuer_is_401_on_the_api_trusting_keycloak(
    payment_api: RunningApi, keycloak: Keycloak, signing_issuer: SigningIssuer
) -> None:
    # Keycloak's issuer and claims, but not Keycloak's key: the kid is unknown to the API.
    forged = signing_issuer.sign(claims(signing_issuer, keycloak.issuer_url))
    async with payment_api.client() as client:
        response = await client.post("/payments", json=valid_payment(), headers=bearer(forged))
    assert response.status_code == 401
    assert 'error_description="unknown signing key"' in response.headers["www-authenticate"]


async def test_token_with_a_forged_signature_is_401(
    forged_api: RunningApi, signing_issuer: SigningIssuer, foreign_signing_key: RsaSigningKey
) -> None:
    forged = foreign_signing_key.sign(claims(signing_issuer, signing_issuer.issuer_url))
    async with forged_api.client() as client:
        response = await client.post("/payments", json=valid_payment(), headers=bearer(forged))
    assert response.status_code == 401
    assert 'error_description="signature verification failed"' in response.headers["www-authenticate"]


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


async def test_writer_without_read_role_cannot_read(forged_api: RunningApi, signing_issuer: SigningIssuer) -> None:
    # No realm client holds payment:write without payment:read, so this principal can only be forged.
    writer_only = signing_issuer.sign(
        claims(signing_issuer, signing_issuer.issuer_url, realm_access={"roles": ["payment:write"]})
    )
    async with forged_api.client() as client:
        created = await client.post("/payments", json=valid_payment(), headers=bearer(writer_only))
        response = await client.get(created.headers["location"], headers=bearer(writer_only))
    assert created.status_code == 202
    assert response.status_code == 403
    assert "payment:read" in response.json()["detail"]
