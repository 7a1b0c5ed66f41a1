"""The FastAPI dependencies of payment-service, in a small app wired like the real one (verifier on app.state).

Valid tokens come from the real Keycloak; expired ones are signed by the test's signing issuer."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from devstack.keycloak import Keycloak
from payment_infrastructure.auth import (
    AuthenticationError,
    AuthorizationError,
    AuthSettings,
    JwksUnavailableError,
    Principal,
)
from payment_infrastructure.auth.verifier import JwtVerifier
from services.payment_service.api.security import require_read, require_write, www_authenticate
from tests.fixtures.signing_issuer import SigningIssuer, url_of


def protected_app(verifier: JwtVerifier, settings: AuthSettings) -> FastAPI:
    app = FastAPI()
    app.state.jwt_verifier = verifier
    app.state.auth_settings = settings

    @app.exception_handler(AuthenticationError)
    async def unauthenticated(_: Request, error: AuthenticationError) -> JSONResponse:
        return JSONResponse(
            {"status": 401, "detail": error.description},
            status_code=401,
            headers={"WWW-Authenticate": www_authenticate(error)},
        )

    @app.exception_handler(AuthorizationError)
    async def forbidden(_: Request, error: AuthorizationError) -> JSONResponse:
        return JSONResponse({"status": 403, "detail": f"requires {error.required_role}"}, status_code=403)

    @app.exception_handler(JwksUnavailableError)
    async def unavailable(_: Request, error: JwksUnavailableError) -> JSONResponse:
        return JSONResponse({"status": 503, "detail": error.description}, status_code=503)

    @app.post("/payments")
    async def create(principal: Annotated[Principal, Depends(require_write)]) -> dict[str, str]:
        return {"client_id": principal.client_id}

    @app.get("/payments")
    async def read(principal: Annotated[Principal, Depends(require_read)]) -> dict[str, str]:
        return {"client_id": principal.client_id}

    return app


async def client_for(issuer_url: str, http: httpx.AsyncClient) -> httpx.AsyncClient:
    settings = AuthSettings(issuer_url=issuer_url)
    app = protected_app(JwtVerifier(settings, http), settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payment-service")


@pytest.fixture
async def api(keycloak: Keycloak) -> AsyncIterator[httpx.AsyncClient]:
    """The app trusting the real Keycloak."""
    async with httpx.AsyncClient() as http, await client_for(keycloak.issuer_url, http) as client:
        yield client


@pytest.fixture
async def forged_api(signing_issuer: SigningIssuer) -> AsyncIterator[httpx.AsyncClient]:
    """The app trusting the test's signing issuer (tokens Keycloak cannot be made to sign)."""
    async with httpx.AsyncClient() as http, await client_for(signing_issuer.issuer_url, http) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_writer_token_may_create_and_read(tokens: dict[str, str], api: httpx.AsyncClient) -> None:
    token = tokens["order-service"]

    created = await api.post("/payments", headers=bearer(token))
    read = await api.get("/payments", headers=bearer(token))

    assert (created.status_code, created.json()) == (200, {"client_id": "order-service"})
    assert read.status_code == 200


async def test_reader_token_may_read_but_creating_is_forbidden_with_403(
    tokens: dict[str, str], api: httpx.AsyncClient
) -> None:
    token = tokens["payment-reader"]

    assert (await api.get("/payments", headers=bearer(token))).status_code == 200
    response = await api.post("/payments", headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["detail"] == "requires payment:write"


async def test_token_without_roles_is_forbidden_with_403(tokens: dict[str, str], api: httpx.AsyncClient) -> None:
    token = tokens["no-role-client"]

    read = await api.get("/payments", headers=bearer(token))
    create = await api.post("/payments", headers=bearer(token))

    assert (read.status_code, read.json()["detail"]) == (403, "requires payment:read")
    assert (create.status_code, create.json()["detail"]) == (403, "requires payment:write")


@pytest.mark.parametrize("authorization", [None, "", "Basic b3JkZXItc2VydmljZTpzZWNyZXQ=", "Bearer", "Bearer   "])
async def test_request_without_bearer_token_gets_401_with_a_bare_challenge(
    api: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}

    response = await api.post("/payments", headers=headers)

    assert response.status_code == 401
    assert response.json()["detail"] == "missing bearer token"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="ecommerce-platform"'


async def test_expired_token_gets_401_naming_the_reason_in_www_authenticate(
    signing_issuer: SigningIssuer, forged_api: httpx.AsyncClient
) -> None:
    now = int(time.time())
    claims = signing_issuer.access_token_claims("order-service") | {"iat": now - 600, "exp": now - 300}

    response = await forged_api.post("/payments", headers=bearer(signing_issuer.sign(claims)))

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="ecommerce-platform", error="invalid_token", error_description="token expired"'
    )


async def test_bearer_scheme_is_case_insensitive(tokens: dict[str, str], api: httpx.AsyncClient) -> None:
    token = tokens["order-service"]

    response = await api.post("/payments", headers={"Authorization": f"bearer {token}"})

    assert response.status_code == 200


async def test_valid_token_while_the_issuer_is_down_gets_503(
    signing_issuer: SigningIssuer, issuer_socket: socket.socket
) -> None:
    down_issuer_url = f"{url_of(issuer_socket)}/realms/ecommerce-platform"
    claims = signing_issuer.access_token_claims("order-service") | {"iss": down_issuer_url}

    async with httpx.AsyncClient() as http, await client_for(down_issuer_url, http) as client:
        response = await client.post("/payments", headers=bearer(signing_issuer.sign(claims)))

    assert response.status_code == 503


def test_www_authenticate_keeps_the_description_inside_its_quotes() -> None:
    header = www_authenticate(AuthenticationError('bad "quote"\\ and\nnewline'))

    assert header.endswith('error_description="bad quote and newline"')
