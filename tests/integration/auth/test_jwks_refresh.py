"""How the verifier gets and refreshes the issuer's keys: rotation, stampedes, pacing, and an issuer that is down.

Keycloak's real tokens where its keys stay put; the test's signing issuer where keys rotate or the issuer stops."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from devstack.keycloak import Keycloak
from payment_infrastructure.auth import AuthenticationError, JwksUnavailableError
from tests.fixtures.signing_issuer import SigningIssuer, url_of
from tests.integration.auth.conftest import VerifierKit

REALM_PATH = "/realms/ecommerce-platform"


def jwks_fetches(result: str) -> float:
    return REGISTRY.get_sample_value("auth_jwks_fetches_total", {"result": result}) or 0.0


async def test_warm_up_discovers_the_jwks_through_the_issuer_metadata(keycloak_kit: VerifierKit) -> None:
    assert not keycloak_kit.verifier.has_signing_keys

    await keycloak_kit.verifier.warm_up()

    assert keycloak_kit.verifier.has_signing_keys
    assert keycloak_kit.requests.paths == [
        f"{REALM_PATH}/.well-known/openid-configuration",
        f"{REALM_PATH}/protocol/openid-connect/certs",
    ]


async def test_verifications_reuse_cached_keys(keycloak: Keycloak, keycloak_kit: VerifierKit) -> None:
    tokens = [await keycloak.token("order-service") for _ in range(5)]

    for token in tokens:
        assert (await keycloak_kit.verifier.verify(token)).client_id == "order-service"

    assert len(set(tokens)) == 5
    assert keycloak_kit.requests.jwks_fetches == 1


async def test_unknown_kid_after_rotation_costs_one_fetch_for_twenty_concurrent_verifications(
    signing_issuer_factory: Callable[..., SigningIssuer], make_verifier: Callable[..., VerifierKit]
) -> None:
    issuer = signing_issuer_factory()
    kit = make_verifier(issuer.issuer_url)
    await kit.verifier.warm_up()
    old_kid = issuer.kid
    new_kid = issuer.rotate_key()
    tokens = [issuer.sign(issuer.access_token_claims("order-service")) for _ in range(20)]
    kit.clock.advance(kit.settings.jwks_min_refresh_interval_seconds)
    ok_fetches_before = jwks_fetches("ok")

    principals = await asyncio.gather(*(kit.verifier.verify(token) for token in tokens))

    assert new_kid != old_kid
    assert {principal.client_id for principal in principals} == {"order-service"}
    assert kit.requests.jwks_fetches == 2  # the warm-up, then one refetch shared by all twenty
    assert jwks_fetches("ok") == ok_fetches_before + 1


async def test_unknown_kid_refetches_at_most_once_per_min_refresh_interval(
    signing_issuer: SigningIssuer, verifier_kit: VerifierKit
) -> None:
    verifier, clock = verifier_kit.verifier, verifier_kit.clock
    claims = signing_issuer.access_token_claims("order-service")
    await verifier.warm_up()
    clock.advance(verifier_kit.settings.jwks_min_refresh_interval_seconds)

    for attempt in range(5):
        with pytest.raises(AuthenticationError) as caught:
            await verifier.verify(signing_issuer.sign(claims, kid=f"made-up-{attempt}"))
        assert caught.value.description == "unknown signing key"
    assert verifier_kit.requests.jwks_fetches == 2

    clock.advance(verifier_kit.settings.jwks_min_refresh_interval_seconds)
    with pytest.raises(AuthenticationError):
        await verifier.verify(signing_issuer.sign(claims, kid="made-up-later"))
    assert verifier_kit.requests.jwks_fetches == 3


async def test_keys_are_refetched_once_the_cache_ttl_has_passed(keycloak: Keycloak, keycloak_kit: VerifierKit) -> None:
    token = await keycloak.token("order-service")
    await keycloak_kit.verifier.warm_up()

    keycloak_kit.clock.advance(keycloak_kit.settings.jwks_cache_ttl_seconds - 1)
    await keycloak_kit.verifier.verify(token)
    assert keycloak_kit.requests.jwks_fetches == 1
    keycloak_kit.clock.advance(1)
    # A new token: a token verified once is remembered until it expires and needs no key at all.
    await keycloak_kit.verifier.verify(await keycloak.token("order-service"))
    assert keycloak_kit.requests.jwks_fetches == 2


async def test_issuer_down_at_warm_up_does_not_raise_and_later_tokens_verify_once_it_is_up(
    issuer_socket: socket.socket,
    signing_issuer_factory: Callable[..., SigningIssuer],
    make_verifier: Callable[..., VerifierKit],
) -> None:
    kit = make_verifier(f"{url_of(issuer_socket)}{REALM_PATH}")
    error_fetches_before = jwks_fetches("error")

    await kit.verifier.warm_up()

    assert jwks_fetches("error") == error_fetches_before + 1
    issuer = signing_issuer_factory(issuer_socket)
    assert issuer.issuer_url == kit.settings.issuer_url
    token = issuer.sign(issuer.access_token_claims("order-service"))
    with pytest.raises(JwksUnavailableError):  # the failed warm-up is too recent to try again
        await kit.verifier.verify(token)
    kit.clock.advance(kit.settings.jwks_min_refresh_interval_seconds)
    assert (await kit.verifier.verify(token)).client_id == "order-service"


async def test_valid_token_while_the_issuer_is_unreachable_is_unavailable_not_unauthenticated(
    signing_issuer: SigningIssuer, issuer_socket: socket.socket, make_verifier: Callable[..., VerifierKit]
) -> None:
    down_issuer_url = f"{url_of(issuer_socket)}{REALM_PATH}"
    kit = make_verifier(down_issuer_url)
    token = signing_issuer.sign(signing_issuer.access_token_claims("order-service") | {"iss": down_issuer_url})
    unavailable_before = REGISTRY.get_sample_value("auth_token_verifications_total", {"result": "unavailable"})

    with pytest.raises(JwksUnavailableError):
        await kit.verifier.verify(token)

    assert kit.requests.paths == [f"{REALM_PATH}/.well-known/openid-configuration"]
    unavailable_after = REGISTRY.get_sample_value("auth_token_verifications_total", {"result": "unavailable"})
    assert (unavailable_after or 0) == (unavailable_before or 0) + 1


async def test_cached_keys_keep_serving_when_the_issuer_goes_down(
    signing_issuer_factory: Callable[..., SigningIssuer], make_verifier: Callable[..., VerifierKit]
) -> None:
    issuer = signing_issuer_factory()
    kit = make_verifier(issuer.issuer_url)
    token = issuer.sign(issuer.access_token_claims("payment-reader"))
    await kit.verifier.warm_up()
    issuer.stop()
    kit.clock.advance(kit.settings.jwks_cache_ttl_seconds)
    error_fetches_before = jwks_fetches("error")

    principal = await kit.verifier.verify(token)  # the refresh fails; the stale key still verifies

    assert principal.client_id == "payment-reader"
    assert jwks_fetches("error") == error_fetches_before + 1
    kit.clock.advance(kit.settings.jwks_min_refresh_interval_seconds)
    with pytest.raises(JwksUnavailableError):  # a key it never saw cannot be judged while the issuer is down
        await kit.verifier.verify(issuer.sign(issuer.access_token_claims("order-service"), kid="new"))


async def test_refresh_survives_a_cancelled_caller(tokens: dict[str, str], keycloak_kit: VerifierKit) -> None:
    token = tokens["order-service"]
    first = asyncio.create_task(keycloak_kit.verifier.verify(token))
    second = asyncio.create_task(keycloak_kit.verifier.verify(token))
    await asyncio.sleep(0)  # a yield, not a wait: lets both tasks start waiting on the one fetch

    first.cancel()

    assert (await second).client_id == "order-service"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert keycloak_kit.requests.jwks_fetches == 1
