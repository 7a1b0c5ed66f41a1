"""The dev issuer's state: one realm, its RSA keys, Keycloak-shaped client-credentials tokens. Dev only."""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from services.dev_issuer.realm import Realm, ServiceAccountClient, load_realm
from services.dev_issuer.signing import RsaSigningKey

TOKEN_SCOPE = "profile email"
TOKEN_AUDIENCE = "account"
INVALID_CLIENT_CREDENTIALS = "Invalid client or Invalid client credentials"
SERVICE_ACCOUNTS_DISABLED = "Client not enabled to retrieve service account"


class TokenRequestError(Exception):
    """A token request Keycloak would refuse; carries Keycloak's status, error code and description."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    expires_in: int
    scope: str

    def as_keycloak_response(self) -> dict[str, object]:
        return {
            "access_token": self.access_token,
            "expires_in": self.expires_in,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": self.scope,
        }


def _new_uuid() -> str:
    return str(uuid.uuid4())


class DevIssuer:
    """Signs tokens for one realm. Usable in-process: tests call :meth:`sign` to forge tokens with its key.

    Thread-safe enough for its use (the HTTP server runs in another thread than the tests): key rotation
    replaces an immutable tuple in one assignment.
    """

    def __init__(
        self,
        realm: Realm,
        public_url: str,
        *,
        signing_key: RsaSigningKey | None = None,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = _new_uuid,
    ) -> None:
        self.realm = realm
        self.public_url = public_url.rstrip("/")
        self._keys: tuple[RsaSigningKey, ...] = (signing_key or RsaSigningKey.generate(),)
        self._clock = clock
        self._new_id = new_id

    @classmethod
    def from_realm_file(cls, path: Path, public_url: str) -> DevIssuer:
        return cls(load_realm(path), public_url)

    @property
    def issuer_url(self) -> str:
        return f"{self.public_url}/realms/{self.realm.name}"

    @property
    def signing_key(self) -> RsaSigningKey:
        return self._keys[-1]

    @property
    def kid(self) -> str:
        return self.signing_key.kid

    def sign(self, claims: Mapping[str, object], *, kid: str | None = None) -> str:
        """Sign ``claims`` verbatim with the current key; ``kid`` overrides the header's key id."""
        return self.signing_key.sign(claims, kid=kid)

    def rotate_key(self, *, keep_previous: bool = True) -> str:
        """Start signing with a fresh key, as a Keycloak key rotation does; returns the new ``kid``."""
        new_key = RsaSigningKey.generate()
        self._keys = (*self._keys, new_key) if keep_previous else (new_key,)
        return new_key.kid

    def jwks(self) -> dict[str, object]:
        return {"keys": [key.public_jwk() for key in reversed(self._keys)]}

    def openid_configuration(self) -> dict[str, object]:
        oidc = f"{self.issuer_url}/protocol/openid-connect"
        return {
            "issuer": self.issuer_url,
            "token_endpoint": f"{oidc}/token",
            "jwks_uri": f"{oidc}/certs",
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email"],
            "claims_supported": [
                "aud", "sub", "iss", "exp", "iat", "jti", "typ", "azp",
                "scope", "preferred_username", "realm_access", "clientId",
            ],
        }  # fmt: skip

    def authenticate_client(self, client_id: str | None, secret: str | None) -> ServiceAccountClient:
        if not client_id:
            raise TokenRequestError(401, "invalid_client", "Missing client_id parameter")
        client = self.realm.clients.get(client_id)
        if client is None or not client.enabled:
            raise TokenRequestError(401, "invalid_client", INVALID_CLIENT_CREDENTIALS)
        if secret is None or not hmac.compare_digest(secret.encode(), client.secret.encode()):
            raise TokenRequestError(401, "unauthorized_client", INVALID_CLIENT_CREDENTIALS)
        if not client.service_accounts_enabled:
            raise TokenRequestError(401, "unauthorized_client", SERVICE_ACCOUNTS_DISABLED)
        return client

    def access_token_claims(self, client_id: str, *, client_address: str = "127.0.0.1") -> dict[str, object]:
        """The claims Keycloak 24 puts in a client-credentials access token for ``client_id``."""
        client = self.realm.clients[client_id]
        issued_at = int(self._clock())
        claims: dict[str, object] = {
            "exp": issued_at + client.token_lifespan_seconds,
            "iat": issued_at,
            "jti": self._new_id(),
            "iss": self.issuer_url,
            "aud": TOKEN_AUDIENCE,
            "sub": client.user_id,
            "typ": "Bearer",
            "azp": client.client_id,
            "acr": "1",
            "scope": TOKEN_SCOPE,
            "email_verified": False,
            "clientHost": client_address,
            "preferred_username": client.username,
            "clientAddress": client_address,
            "clientId": client.client_id,
        }
        if client.roles:  # Keycloak leaves the claim out when the user holds no realm role
            claims["realm_access"] = {"roles": list(client.roles)}
        return claims

    def issue_access_token(self, client: ServiceAccountClient, *, client_address: str = "127.0.0.1") -> TokenGrant:
        claims = self.access_token_claims(client.client_id, client_address=client_address)
        return TokenGrant(access_token=self.sign(claims), expires_in=client.token_lifespan_seconds, scope=TOKEN_SCOPE)
