"""SASL/OAUTHBEARER's token provider against a real token endpoint (Keycloak, client credentials): it hands out an
access token of the client, fetches it once however many connections ask at once, and says why when refused."""

from __future__ import annotations

import asyncio

import jwt
import pytest

from payment_infrastructure.kafka.security import ClientCredentialsTokens, client_security
from payment_infrastructure.kafka.settings import KafkaSettings
from tests.fixtures.services import IdentityServer

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_token_is_the_clients_and_is_fetched_once_for_many_connections(keycloak: IdentityServer) -> None:
    settings = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        oauth_token_url=keycloak.token_url,
        oauth_client_id="order-service",
        oauth_client_secret="order-service-secret",
    )
    provider = client_security(settings)["sasl_oauth_token_provider"]
    assert isinstance(provider, ClientCredentialsTokens)
    tokens = await asyncio.gather(*(provider.token() for _ in range(5)))
    assert len(set(tokens)) == 1
    claims = jwt.decode(tokens[0], options={"verify_signature": False})
    assert claims["azp"] == "order-service"
    assert await provider.token() == tokens[0]  # reused until shortly before it expires


async def test_a_refused_client_is_told_why(keycloak: IdentityServer) -> None:
    provider = ClientCredentialsTokens(keycloak.token_url, "order-service", "not-the-secret")
    with pytest.raises(RuntimeError, match="HTTP 401"):
        await provider.token()
