"""Verifies Keycloak access tokens (RS256 only) and checks realm roles."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import jwt
import structlog
from jwt import exceptions as jwt_errors

from payment_infrastructure.auth.errors import AuthenticationError, AuthorizationError, JwksUnavailableError
from payment_infrastructure.auth.jwks import SIGNING_ALGORITHM, JwksCache
from payment_infrastructure.auth.metrics import TOKEN_VERIFICATIONS
from payment_infrastructure.auth.principal import Principal
from payment_infrastructure.auth.settings import AuthSettings

log = structlog.get_logger(__name__)

REQUIRED_CLAIMS = ["exp", "iss", "sub"]
ACCESS_TOKEN_TYPE = "bearer"  # Keycloak's `typ` claim; ID and refresh tokens say "ID" / "Refresh"

# Most specific first: several of PyJWT's errors subclass DecodeError.
_DESCRIPTIONS: tuple[tuple[type[jwt_errors.PyJWTError], str], ...] = (
    (jwt_errors.ExpiredSignatureError, "token expired"),
    (jwt_errors.ImmatureSignatureError, "token not yet valid"),
    (jwt_errors.InvalidIssuerError, "wrong issuer"),
    (jwt_errors.InvalidAudienceError, "wrong audience"),
    (jwt_errors.InvalidSignatureError, "signature verification failed"),
    (jwt_errors.InvalidAlgorithmError, "unsupported algorithm"),
    (jwt_errors.DecodeError, "malformed token"),
)


class JwtVerifier:
    """Turns a bearer token into a :class:`Principal`, or says precisely why it will not.

    The ``httpx.AsyncClient`` is injected so the app owns its lifetime; ``monotonic`` paces JWKS refreshes.
    """

    def __init__(
        self,
        settings: AuthSettings,
        http_client: httpx.AsyncClient,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._wall_clock = wall_clock
        self._verified: dict[str, tuple[Principal, float]] = {}
        self._keys = JwksCache(
            settings.issuer_url,
            http_client,
            ttl_seconds=settings.jwks_cache_ttl_seconds,
            min_refresh_interval_seconds=settings.jwks_min_refresh_interval_seconds,
            timeout_seconds=settings.http_timeout_seconds,
            monotonic=monotonic,
        )

    @property
    def settings(self) -> AuthSettings:
        return self._settings

    @property
    def has_signing_keys(self) -> bool:
        """Whether any key is cached (for a readiness report; tokens still verify lazily without it)."""
        return self._keys.has_keys

    async def warm_up(self) -> None:
        """Load the signing keys at start-up. An issuer that is down is logged, not raised: the keys are
        fetched again when the first token needs them."""
        if not await self._keys.refresh():
            log.warning("jwks_warm_up_failed", issuer=self._settings.issuer_url)

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None and cached[1] > self._wall_clock():
            TOKEN_VERIFICATIONS.labels(result="ok").inc()
            return cached[0]
        try:
            principal = await self._verify(token)
        except AuthenticationError as error:
            result = "expired" if error.description == "token expired" else "invalid"
            TOKEN_VERIFICATIONS.labels(result=result).inc()
            raise
        except JwksUnavailableError:
            TOKEN_VERIFICATIONS.labels(result="unavailable").inc()
            raise
        TOKEN_VERIFICATIONS.labels(result="ok").inc()
        return principal

    def require(self, principal: Principal, role: str) -> None:
        if not principal.has_role(role):
            TOKEN_VERIFICATIONS.labels(result="forbidden").inc()
            raise AuthorizationError(role)

    async def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt_errors.PyJWTError as error:
            raise AuthenticationError("malformed token") from error
        # Checked before any key lookup: `none`/HS256 tokens are refused outright and cost no JWKS fetch.
        if header.get("alg") != SIGNING_ALGORITHM:
            raise AuthenticationError("unsupported algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthenticationError("missing key id")
        key = await self._keys.key_for(kid)
        settings = self._settings
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[SIGNING_ALGORITHM],
                issuer=settings.issuer_url,
                audience=settings.audience,
                leeway=settings.leeway_seconds,
                options={"require": REQUIRED_CLAIMS, "verify_aud": settings.audience is not None},
            )
        except jwt_errors.MissingRequiredClaimError as error:
            raise AuthenticationError(f"missing claim: {error.claim}") from error
        except jwt_errors.PyJWTError as error:
            raise AuthenticationError(_describe(error)) from error
        token_type = claims.get("typ")
        if isinstance(token_type, str) and token_type.lower() != ACCESS_TOKEN_TYPE:
            raise AuthenticationError("not an access token")
        principal = Principal.from_claims(claims)
        if principal is None:
            raise AuthenticationError("token names no client")
        self._remember(token, principal, claims)
        return principal

    def _remember(self, token: str, principal: Principal, claims: dict[str, object]) -> None:
        """Clients reuse one token for many calls: skip the RSA check until it expires (JWTs are not revocable
        before `exp` anyway). Bounded, oldest first out."""
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or self._settings.verified_token_cache_size == 0:
            return
        if len(self._verified) >= self._settings.verified_token_cache_size:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (principal, float(exp))


def _describe(error: jwt_errors.PyJWTError) -> str:
    for error_type, description in _DESCRIPTIONS:
        if isinstance(error, error_type):
            return description
    return "invalid token"
