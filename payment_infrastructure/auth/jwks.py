"""The issuer's signing keys: found through OIDC discovery, cached by ``kid``, refreshed without a stampede.

All I/O goes through the injected ``httpx.AsyncClient`` (PyJWKClient would block the event loop on urllib).
A refresh is single-flight: concurrent callers share one in-flight fetch, and a new fetch is started at most
once per ``min_refresh_interval`` (a flood of tokens with made-up ``kid``s costs one fetch per interval).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import structlog
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from payment_infrastructure.auth.errors import AuthenticationError, JwksUnavailableError
from payment_infrastructure.auth.metrics import JWKS_FETCHES

log = structlog.get_logger(__name__)

SIGNING_ALGORITHM = "RS256"


class _FetchError(Exception):
    pass


class JwksCache:
    """Signing keys of one issuer, by ``kid``. Serves stale keys while the issuer is unreachable."""

    def __init__(
        self,
        issuer_url: str,
        http_client: httpx.AsyncClient,
        *,
        ttl_seconds: float,
        min_refresh_interval_seconds: float,
        timeout_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuer_url = issuer_url
        self._http = http_client
        self._ttl = ttl_seconds
        self._min_interval = min_refresh_interval_seconds
        self._timeout = timeout_seconds
        self._monotonic = monotonic
        self._keys: dict[str, PyJWK] = {}
        self._jwks_uri: str | None = None
        self._loaded_at: float | None = None
        self._attempted_at: float | None = None
        self._last_attempt_failed = False
        self._in_flight: asyncio.Task[None] | None = None

    @property
    def has_keys(self) -> bool:
        return bool(self._keys)

    async def refresh(self) -> bool:
        """Fetch the keys unless a fetch is running (then wait for it) or one started too recently.

        Never raises for an unreachable issuer; returns whether the keys are now known to be current
        (False when the latest attempt failed)."""
        task = self._in_flight
        if task is None or task.done():  # done without clearing itself: cancelled before it ran
            now = self._monotonic()
            if self._attempted_at is not None and now - self._attempted_at < self._min_interval:
                return not self._last_attempt_failed
            self._attempted_at = now
            task = asyncio.create_task(self._fetch(), name="jwks-fetch")
            self._in_flight = task
        # Shielded: a caller that is cancelled (client went away) must not cancel the fetch others await.
        await asyncio.shield(task)
        return not self._last_attempt_failed

    async def key_for(self, kid: str) -> PyJWK:
        if self._loaded_at is None or self._monotonic() - self._loaded_at >= self._ttl:
            await self.refresh()
        key = self._keys.get(kid)
        if key is None:
            await self.refresh()  # maybe the issuer rotated its keys
            key = self._keys.get(kid)
        if key is not None:
            return key
        if self._last_attempt_failed:
            raise JwksUnavailableError()
        raise AuthenticationError("unknown signing key")

    async def _fetch(self) -> None:
        try:
            keys = await self._download()
        except Exception as error:  # a fetch failure of any kind leaves the cached keys in service
            self._last_attempt_failed = True
            self._jwks_uri = None  # rediscover next time: the issuer may have moved its keys
            JWKS_FETCHES.labels(result="error").inc()
            log.warning("jwks_fetch_failed", issuer=self._issuer_url, error=str(error), cached_keys=len(self._keys))
        else:
            self._keys = keys
            self._loaded_at = self._monotonic()
            self._last_attempt_failed = False
            JWKS_FETCHES.labels(result="ok").inc()
            log.info("jwks_fetched", issuer=self._issuer_url, kids=sorted(keys))
        finally:
            self._in_flight = None

    async def _download(self) -> dict[str, PyJWK]:
        if self._jwks_uri is None:
            discovery = await self._get_json(f"{self._issuer_url}/.well-known/openid-configuration")
            if discovery.get("issuer") != self._issuer_url:
                raise _FetchError(f"discovery document names issuer {discovery.get('issuer')!r}")
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise _FetchError("discovery document has no jwks_uri")
            self._jwks_uri = jwks_uri
        keys = _signing_keys(await self._get_json(self._jwks_uri))
        if not keys:
            raise _FetchError("JWKS holds no RS256 signing key")
        return keys

    async def _get_json(self, url: str) -> Mapping[str, Any]:
        try:
            response = await self._http.get(url, timeout=self._timeout, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise _FetchError(f"GET {url}: {type(error).__name__}: {error}") from error
        if not isinstance(document, dict):
            raise _FetchError(f"GET {url}: not a JSON object")
        return document


def _signing_keys(jwks: Mapping[str, Any]) -> dict[str, PyJWK]:
    """RS256 signature keys by kid; Keycloak also publishes an RSA-OAEP encryption key, which is skipped."""
    keys: dict[str, PyJWK] = {}
    entries = jwks.get("keys")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", SIGNING_ALGORITHM) != SIGNING_ALGORITHM:
            continue
        try:
            keys[entry["kid"]] = PyJWK(entry, algorithm=SIGNING_ALGORITHM)
        except PyJWTError as error:
            log.warning("jwks_key_skipped", kid=entry["kid"], error=str(error))
    return keys
