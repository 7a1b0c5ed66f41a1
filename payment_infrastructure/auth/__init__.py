"""Bearer-token (Keycloak JWT) verification for the payment API: JWKS discovery and cache, roles, metrics.

The package exports the names any module may use; the verifier itself (`auth.verifier`, which fetches keys over
HTTP) is a concrete adapter that only a composition root imports."""

from payment_infrastructure.auth.errors import AuthenticationError, AuthorizationError, JwksUnavailableError
from payment_infrastructure.auth.principal import Principal
from payment_infrastructure.auth.settings import AuthSettings

__all__ = [
    "AuthSettings",
    "AuthenticationError",
    "AuthorizationError",
    "JwksUnavailableError",
    "Principal",
]
