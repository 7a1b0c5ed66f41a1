"""The dev issuer answers on Keycloak's paths, with Keycloak's shapes, over real HTTP."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest

from tests.fixtures.issuer import RunningDevIssuer

CLIENT_CREDENTIALS = {"grant_type": "client_credentials"}


async def post_token(
    issuer: RunningDevIssuer, form: dict[str, str], auth: tuple[str, str] | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(auth=auth) as client:
        return await client.post(issuer.token_url, data=form)


async def test_token_endpoint_accepts_client_credentials_in_form_fields(dev_issuer: RunningDevIssuer) -> None:
    form = {**CLIENT_CREDENTIALS, "client_id": "order-service", "client_secret": "order-service-secret"}

    response = await post_token(dev_issuer, form)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "access_token", "expires_in", "refresh_expires_in", "token_type", "not-before-policy", "scope",
    }  # fmt: skip
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["refresh_expires_in"] == 0
    assert body["not-before-policy"] == 0
    assert response.headers["cache-control"] == "no-store"


async def test_token_endpoint_accepts_client_credentials_in_http_basic(dev_issuer: RunningDevIssuer) -> None:
    response = await post_token(dev_issuer, CLIENT_CREDENTIALS, auth=("payment-reader", "payment-reader-secret"))

    assert response.status_code == 200
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["azp"] == "payment-reader"


async def test_wrong_secret_is_refused_with_401_unauthorized_client(dev_issuer: RunningDevIssuer) -> None:
    form = {**CLIENT_CREDENTIALS, "client_id": "order-service", "client_secret": "guessed"}

    response = await post_token(dev_issuer, form)

    assert response.status_code == 401
    assert response.json() == {
        "error": "unauthorized_client",
        "error_description": "Invalid client or Invalid client credentials",
    }


async def test_wrong_secret_in_http_basic_is_refused_with_401(dev_issuer: RunningDevIssuer) -> None:
    response = await post_token(dev_issuer, CLIENT_CREDENTIALS, auth=("order-service", "payment-reader-secret"))

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized_client"


async def test_unknown_client_is_refused_with_401_invalid_client(dev_issuer: RunningDevIssuer) -> None:
    form = {**CLIENT_CREDENTIALS, "client_id": "stranger", "client_secret": "order-service-secret"}

    response = await post_token(dev_issuer, form)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_request_without_client_is_refused_with_401_invalid_client(dev_issuer: RunningDevIssuer) -> None:
    response = await post_token(dev_issuer, CLIENT_CREDENTIALS)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("grant_type", ["password", "authorization_code", "refresh_token"])
async def test_grants_other_than_client_credentials_are_refused_with_400(
    dev_issuer: RunningDevIssuer, grant_type: str
) -> None:
    form = {"grant_type": grant_type, "client_id": "order-service", "client_secret": "order-service-secret"}

    response = await post_token(dev_issuer, form)

    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


async def test_missing_grant_type_is_refused_with_400_invalid_request(dev_issuer: RunningDevIssuer) -> None:
    response = await post_token(dev_issuer, {"client_id": "order-service", "client_secret": "order-service-secret"})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "path", ["/.well-known/openid-configuration", "/protocol/openid-connect/certs", "/protocol/openid-connect/token"]
)
async def test_unknown_realm_answers_404(dev_issuer: RunningDevIssuer, path: str) -> None:
    async with httpx.AsyncClient() as client:
        method = "POST" if path.endswith("/token") else "GET"
        response = await client.request(method, f"{dev_issuer.base_url}/realms/master{path}", data=CLIENT_CREDENTIALS)

    assert response.status_code == 404
    assert response.json() == {"error": "Realm does not exist"}


async def test_discovery_document_points_at_the_realm_endpoints(dev_issuer: RunningDevIssuer) -> None:
    async with httpx.AsyncClient() as client:
        document = (await client.get(dev_issuer.discovery_url)).json()

    assert document["issuer"] == f"{dev_issuer.base_url}/realms/ecommerce-platform"
    assert document["jwks_uri"] == dev_issuer.jwks_url
    assert document["token_endpoint"] == dev_issuer.token_url
    assert document["grant_types_supported"] == ["client_credentials"]
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]


async def test_jwks_publishes_the_signing_key_as_rs256_sig(dev_issuer: RunningDevIssuer) -> None:
    async with httpx.AsyncClient() as client:
        jwks = (await client.get(dev_issuer.jwks_url)).json()

    (key,) = [key for key in jwks["keys"] if key["kid"] == dev_issuer.issuer.kid]
    assert {key["kty"], key["alg"], key["use"]} == {"RSA", "RS256", "sig"}
    assert key["e"] == "AQAB"
    public_key = jwt.PyJWK(key).key
    assert public_key.key_size == 2048


async def test_access_token_carries_keycloak_claims_signed_by_the_published_key(
    dev_issuer: RunningDevIssuer,
) -> None:
    before = int(time.time())

    token = await dev_issuer.token("order-service")

    header = jwt.get_unverified_header(token)
    assert header == {"alg": "RS256", "typ": "JWT", "kid": dev_issuer.issuer.kid}
    async with httpx.AsyncClient() as client:
        jwks = jwt.PyJWKSet.from_dict((await client.get(dev_issuer.jwks_url)).json())
    claims = jwt.decode(token, jwks[header["kid"]].key, algorithms=["RS256"], audience="account")
    assert claims["iss"] == dev_issuer.issuer_url
    assert claims["azp"] == claims["clientId"] == "order-service"
    assert claims["typ"] == "Bearer"
    assert claims["preferred_username"] == "service-account-order-service"
    assert claims["sub"] == "fbfddff6-ba88-54a3-9910-6082cf1d57b1"  # the user id in the realm export
    assert sorted(claims["realm_access"]["roles"]) == ["payment:read", "payment:write"]
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 300
    assert isinstance(claims["jti"], str)


async def test_each_token_has_a_fresh_jti_but_a_stable_subject(dev_issuer: RunningDevIssuer) -> None:
    first, second = [
        jwt.decode(await dev_issuer.token("payment-reader"), options={"verify_signature": False}) for _ in range(2)
    ]

    assert first["jti"] != second["jti"]
    assert first["sub"] == second["sub"]


async def test_client_without_roles_gets_a_token_without_realm_access(dev_issuer: RunningDevIssuer) -> None:
    claims = jwt.decode(await dev_issuer.token("no-role-client"), options={"verify_signature": False})

    assert "realm_access" not in claims
    assert claims["azp"] == "no-role-client"
