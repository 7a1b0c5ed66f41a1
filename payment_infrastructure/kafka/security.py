"""The connection options of every Kafka client (producer, consumers, admin): TLS and SASL from KafkaSettings.

One function gives every aiokafka client the same `security_protocol`, `ssl_context`, SASL mechanism and
credentials, so a secured cluster needs only settings (`PAYMENTS_KAFKA__SECURITY_PROTOCOL=SASL_SSL`, ...). With
OAUTHBEARER the token comes from an OAuth token endpoint with the client-credentials grant (Keycloak's, or any
other), is reused until shortly before it expires, and fetched again on the next connection after that.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from aiokafka.abc import AbstractTokenProvider
from aiokafka.helpers import create_ssl_context

from payment_infrastructure.kafka.settings import KafkaSettings

# A token is renewed this long before its expiry (a connection may take a while to use it).
_RENEW_BEFORE_SECONDS = 30.0


class ClientCredentialsTokens(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka ships no types
    """Access tokens of an OAuth client for SASL/OAUTHBEARER, cached until `_RENEW_BEFORE_SECONDS` before expiry."""

    def __init__(
        self, token_url: str, client_id: str, client_secret: str, *, scope: str | None = None, timeout: float = 10.0
    ) -> None:
        self._url = token_url
        self._form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}
        if scope:
            self._form["scope"] = scope
        self._timeout = timeout
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        async with self._lock:  # one fetch however many connections ask at once
            if self._token is None or time.monotonic() >= self._renew_at:
                self._token, lifetime = await self._fetch()
                self._renew_at = time.monotonic() + max(lifetime - _RENEW_BEFORE_SECONDS, 0.0)
            return self._token

    async def _fetch(self) -> tuple[str, float]:
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            response = await client.post(self._url, data=self._form)
        if response.status_code != 200:
            raise RuntimeError(f"Kafka OAuth token request refused: HTTP {response.status_code} {response.text[:200]}")
        body = response.json()
        return str(body["access_token"]), float(body.get("expires_in", 60))


def client_security(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaAdminClient)."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = create_ssl_context(
            cafile=settings.ssl_cafile, certfile=settings.ssl_certfile, keyfile=settings.ssl_keyfile
        )
        context.check_hostname = settings.ssl_check_hostname
        options["ssl_context"] = context
    mechanism = settings.sasl_mechanism
    if mechanism is None:
        return options
    options["sasl_mechanism"] = mechanism
    if mechanism == "OAUTHBEARER":
        assert settings.oauth_token_url and settings.oauth_client_id and settings.oauth_client_secret
        options["sasl_oauth_token_provider"] = ClientCredentialsTokens(
            settings.oauth_token_url,
            settings.oauth_client_id,
            settings.oauth_client_secret.get_secret_value(),
            scope=settings.oauth_scope,
        )
    else:
        assert settings.sasl_password is not None
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return options
