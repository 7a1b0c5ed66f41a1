"""The dev issuer's HTTP face: Keycloak's discovery, JWKS and token paths for one realm. Dev only."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.dev_issuer.issuer import INVALID_CLIENT_CREDENTIALS, DevIssuer, TokenRequestError

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class _JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def create_app(issuer: DevIssuer) -> Starlette:
    """Build the ASGI app serving ``issuer``'s realm under ``/realms/{realm}``."""

    def known_realm(request: Request) -> bool:
        return bool(request.path_params["realm"] == issuer.realm.name)

    async def openid_configuration(request: Request) -> Response:
        if not known_realm(request):
            return _realm_not_found()
        return _JsonResponse(issuer.openid_configuration())

    async def certs(request: Request) -> Response:
        if not known_realm(request):
            return _realm_not_found()
        return _JsonResponse(issuer.jwks())

    async def token(request: Request) -> Response:
        if not known_realm(request):
            return _realm_not_found()
        form = await _form(request)
        try:
            grant_type = form.get("grant_type")
            if not grant_type:
                raise TokenRequestError(400, "invalid_request", "Missing form parameter: grant_type")
            if grant_type != "client_credentials":
                raise TokenRequestError(400, "unsupported_grant_type", "Unsupported grant_type")
            client_id, secret = _client_credentials(request, form)
            client = issuer.authenticate_client(client_id, secret)
        except TokenRequestError as error:
            body = {"error": error.error, "error_description": error.description}
            return _JsonResponse(body, status_code=error.status, headers=NO_STORE)
        address = request.client.host if request.client else "127.0.0.1"
        grant = issuer.issue_access_token(client, client_address=address)
        return _JsonResponse(grant.as_keycloak_response(), headers=NO_STORE)

    realm_path = "/realms/{realm}"
    return Starlette(
        routes=[
            Route(f"{realm_path}/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
            Route(f"{realm_path}/protocol/openid-connect/certs", certs, methods=["GET"]),
            Route(f"{realm_path}/protocol/openid-connect/token", token, methods=["POST"]),
        ]
    )


def _realm_not_found() -> Response:
    return _JsonResponse({"error": "Realm does not exist"}, status_code=404)


async def _form(request: Request) -> dict[str, str]:
    """Parse an urlencoded body by hand: Starlette's form parser needs python-multipart, not a dependency."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != FORM_CONTENT_TYPE:
        return {}
    fields = parse_qs((await request.body()).decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
    """HTTP Basic wins over form fields, as in Keycloak; Basic parts are form-urlencoded (RFC 6749 2.3.1)."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic" and encoded:
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as error:
            raise TokenRequestError(401, "invalid_client", INVALID_CLIENT_CREDENTIALS) from error
        client_id, separator, secret = decoded.partition(":")
        if not separator:
            raise TokenRequestError(401, "invalid_client", INVALID_CLIENT_CREDENTIALS)
        return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))
    return form.get("client_id"), form.get("client_secret")
