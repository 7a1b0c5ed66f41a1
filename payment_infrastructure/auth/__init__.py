"""Bearer-token (Keycloak JWT) verification for the payment API: JWKS discovery and cache, roles, metrics."""

from payment_infrastructure.auth.errors import AuthenticationError, AuthorizationError, JwksUnavailableError
from payment_infrastructure.auth.principal import Principal
from payment_infrastructure.auth.settings import AuthSettings
from payment_infrastructure.auth.verifier import JwtVerifier

__all__ = [
    "AuthSettings",
    "AuthenticationError",
    "AuthorizationError",
    "JwksUnavailableError",
    "JwtVerifier",
    "Principal",
]
