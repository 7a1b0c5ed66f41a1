"""FastAPI dependencies that authenticate the caller's bearer token and check its realm role.

They only raise ``AuthenticationError`` (401), ``AuthorizationError`` (403) and ``JwksUnavailableError`` (503);
the app's exception handlers turn those into problem responses, using :func:`www_authenticate` for the 401.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from fastapi import Request

from payment_infrastructure.auth.errors import AuthenticationError, MissingBearerTokenError
from payment_infrastructure.auth.principal import Principal
from payment_infrastructure.auth.settings import AuthSettings

DEFAULT_REALM = "ecommerce-platform"


class TokenVerifier(Protocol):
    """What the dependencies need of the verifier the composition root put on `app.state.jwt_verifier`."""

    async def verify(self, token: str) -> Principal: ...

    def require(self, principal: Principal, role: str) -> None: ...


def bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise MissingBearerTokenError()
    if " " in token:
        raise AuthenticationError("malformed token")
    return token


def require_role(
    role_attr: Literal["write_role", "read_role"],
) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency yielding the verified caller, who must hold the role named by ``AuthSettings.<role_attr>``."""

    async def authenticated_principal(request: Request) -> Principal:
        token = bearer_token(request)
        verifier: TokenVerifier = request.app.state.jwt_verifier
        settings: AuthSettings = request.app.state.auth_settings
        principal = await verifier.verify(token)
        verifier.require(principal, getattr(settings, role_attr))
        return principal

    authenticated_principal.__name__ = f"require_{role_attr}"
    return authenticated_principal


require_write = require_role("write_role")
require_read = require_role("read_role")


async def require_seller_reader(request: Request, seller_id: str) -> Principal:
    """The caller may read seller `seller_id`'s account: its own (the token's `seller_id` claim names it) or any
    seller's with the finance role; anyone else gets 403."""
    verifier: TokenVerifier = request.app.state.jwt_verifier
    settings: AuthSettings = request.app.state.auth_settings
    principal = await verifier.verify(bearer_token(request))
    if principal.seller_id is None or principal.seller_id != seller_id:
        verifier.require(principal, settings.finance_role)
    return principal


def www_authenticate(error: AuthenticationError, *, realm: str = DEFAULT_REALM) -> str:
    """The 401's ``WWW-Authenticate`` value (RFC 6750 3): no error code when no token was sent at all."""
    challenge = f'Bearer realm="{_quoted(realm)}"'
    if isinstance(error, MissingBearerTokenError):
        return challenge
    return f'{challenge}, error="invalid_token", error_description="{_quoted(error.description)}"'


def _quoted(value: str) -> str:
    """Keep the value inside its quoted-string: quotes and backslashes dropped, control characters blanked."""
    return "".join(char if char.isprintable() else " " for char in value if char not in '"\\')
