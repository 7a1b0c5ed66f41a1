"""The realm export, imported into a real Keycloak: each client's token says what the API expects, wrong secrets
are refused, and the project's JwtVerifier accepts Keycloak's tokens and maps their roles."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from devstack.keycloak import CLIENT_SECRETS, Keycloak
from payment_infrastructure.auth import AuthenticationError, AuthorizationError
from tests.fixtures.signing_issuer import REALM_FILE, SigningIssuer
from tests.integration.auth.conftest import VerifierKit

PAYMENT_ROLES = {"payment:write", "payment:read", "finance:read"}
EXPECTED_ROLES = {
    "order-service": {"payment:write", "payment:read"},
    "payment-reader": {"payment:read"},
    "no-role-client": set(),
    "finance-reader": {"finance:read"},
    "seller-1-portal": set(),
}
SELLER_CLAIMS = {"seller-1-portal": "seller-1"}  # the clients of one seller: their token's seller_id
# Fields of Keycloak's RealmRepresentation used by the export.
KEYCLOAK_REALM_FIELDS = {
    "realm", "displayName", "enabled", "sslRequired", "accessTokenLifespan", "roles", "clients", "users",
}  # fmt: skip
# Claims that differ between any two tokens (or issuers) by nature.
PER_TOKEN_CLAIMS = {"exp", "iat", "jti", "iss"}


@pytest.fixture(scope="module")
def export() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(REALM_FILE.read_text())
    return document


async def keycloak_jwks(keycloak: Keycloak) -> jwt.PyJWKSet:
    async with httpx.AsyncClient() as client:
        return jwt.PyJWKSet.from_dict((await client.get(keycloak.jwks_url)).raise_for_status().json())


async def verified_claims(keycloak: Keycloak, token: str) -> dict[str, Any]:
    """The token's claims, checked with PyJWT alone against Keycloak's published key (not the project's code)."""
    key = (await keycloak_jwks(keycloak))[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["RS256"], issuer=keycloak.issuer_url, options={"verify_aud": False}
    )
    return claims


# The export itself.


def test_export_uses_only_keycloak_realm_fields(export: dict[str, Any]) -> None:
    assert set(export) <= KEYCLOAK_REALM_FIELDS
    assert export["realm"] == "ecommerce-platform"
    assert export["enabled"] is True
    assert {role["name"] for role in export["roles"]["realm"]} == PAYMENT_ROLES


def test_every_client_is_a_confidential_service_account_with_300s_tokens(export: dict[str, Any]) -> None:
    clients = {client["clientId"]: client for client in export["clients"]}

    assert set(clients) == set(EXPECTED_ROLES)
    for client_id, client in clients.items():
        assert client["secret"] == CLIENT_SECRETS[client_id]
        assert client["clientAuthenticatorType"] == "client-secret"
        assert client["publicClient"] is False
        assert client["serviceAccountsEnabled"] is True
        assert client["directAccessGrantsEnabled"] is False
        assert client["standardFlowEnabled"] is False
        assert client["attributes"]["access.token.lifespan"] == "300"


def test_each_client_has_its_service_account_user_with_its_roles(export: dict[str, Any]) -> None:
    users = {user["serviceAccountClientId"]: user for user in export["users"]}

    assert set(users) == set(EXPECTED_ROLES)
    for client_id, user in users.items():
        assert user["username"] == f"service-account-{client_id}"
        assert user["enabled"] is True
        assert set(user["realmRoles"]) == EXPECTED_ROLES[client_id]


def test_readme_marks_the_secrets_dev_only() -> None:
    readme = (REALM_FILE.parent / "README.md").read_text()

    assert "dev-only" in readme
    assert "never be used in any shared or production environment" in readme


# What the real Keycloak makes of it.


@pytest.mark.parametrize("client_id", sorted(EXPECTED_ROLES))
async def test_each_client_gets_a_token_with_the_issuer_client_and_roles_the_api_expects(
    keycloak: Keycloak, export: dict[str, Any], client_id: str
) -> None:
    user = next(user for user in export["users"] if user["serviceAccountClientId"] == client_id)

    claims = await verified_claims(keycloak, await keycloak.token(client_id))

    assert claims["iss"] == keycloak.issuer_url
    assert claims["azp"] == client_id
    assert claims["typ"] == "Bearer"
    assert claims["sub"] == user["id"]
    assert claims["preferred_username"] == f"service-account-{client_id}"
    assert claims["exp"] - claims["iat"] == 300
    roles = set(claims.get("realm_access", {}).get("roles", []))
    assert roles & PAYMENT_ROLES == EXPECTED_ROLES[client_id]
    assert claims.get("seller_id") == SELLER_CLAIMS.get(client_id)
    assert "aud" not in claims  # Keycloak 26's client-credentials token names no audience by default


async def test_client_without_roles_gets_no_realm_access_claim(tokens: dict[str, str]) -> None:
    claims = jwt.decode(tokens["no-role-client"], options={"verify_signature": False})

    assert claims["azp"] == "no-role-client"
    assert "realm_access" not in claims


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [
        ("order-service", "guessed"),
        ("order-service", "payment-reader-secret"),  # another client's secret
        ("payment-reader", ""),
    ],
)
async def test_wrong_secret_is_refused_with_401(keycloak: Keycloak, client_id: str, secret: str) -> None:
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await keycloak.token(client_id, secret)

    assert caught.value.response.status_code == 401
    assert caught.value.response.json()["error"] == "unauthorized_client"


async def test_unknown_client_is_refused_with_401(keycloak: Keycloak) -> None:
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await keycloak.token("stranger", "order-service-secret")

    assert caught.value.response.status_code == 401
    assert caught.value.response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("client_id", sorted(EXPECTED_ROLES))
async def test_jwt_verifier_accepts_keycloak_tokens_and_maps_their_roles(
    tokens: dict[str, str], export: dict[str, Any], keycloak_kit: VerifierKit, client_id: str
) -> None:
    verifier = keycloak_kit.verifier
    user = next(user for user in export["users"] if user["serviceAccountClientId"] == client_id)

    principal = await verifier.verify(tokens[client_id])

    assert principal.client_id == client_id
    assert principal.subject == user["id"]
    assert principal.roles & PAYMENT_ROLES == EXPECTED_ROLES[client_id]
    assert principal.seller_id == SELLER_CLAIMS.get(client_id)
    for role in sorted(PAYMENT_ROLES):
        if role in EXPECTED_ROLES[client_id]:
            verifier.require(principal, role)
        else:
            with pytest.raises(AuthorizationError):
                verifier.require(principal, role)


async def test_verifier_with_an_audience_refuses_keycloaks_default_tokens(
    keycloak: Keycloak, tokens: dict[str, str], make_verifier: Callable[..., VerifierKit]
) -> None:
    # Keycloak adds `aud` only through an audience mapper, which the realm does not define: configuring
    # `auth.audience` against this realm locks every client out.
    verifier = make_verifier(keycloak.issuer_url, audience="payment-service").verifier

    with pytest.raises(AuthenticationError) as caught:
        await verifier.verify(tokens["order-service"])

    assert caught.value.description == "missing claim: aud"


@pytest.mark.parametrize("client_id", sorted(EXPECTED_ROLES))
async def test_signing_issuer_forges_tokens_shaped_like_keycloaks(
    keycloak: Keycloak, tokens: dict[str, str], signing_issuer: SigningIssuer, client_id: str
) -> None:
    # The negative tests forge tokens from these claims; they must stay what Keycloak really issues.
    real = jwt.decode(tokens[client_id], options={"verify_signature": False})
    forged = signing_issuer.access_token_claims(client_id)

    assert set(forged) == set(real)
    assert {k: v for k, v in forged.items() if k not in PER_TOKEN_CLAIMS | {"scope"}} == {
        k: v for k, v in real.items() if k not in PER_TOKEN_CLAIMS | {"scope"}
    }
    assert set(str(forged["scope"]).split()) == set(real["scope"].split())  # Keycloak's order varies
    assert forged["exp"] - forged["iat"] == real["exp"] - real["iat"]  # type: ignore[operator]
    assert str(forged["jti"]).split(":")[0] == real["jti"].split(":")[0]
    assert real["iss"] == keycloak.issuer_url and forged["iss"] == signing_issuer.issuer_url
