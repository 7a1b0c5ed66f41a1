"""JwtVerifier over real HTTP: real Keycloak tokens get in; the precise reason forged ones (signed by the test's
signing issuer) do not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from prometheus_client import REGISTRY

from devstack.keycloak import Keycloak
from payment_infrastructure.auth import AuthenticationError, AuthorizationError, AuthSettings, Principal
from payment_infrastructure.auth.verifier import JwtVerifier
from tests.fixtures.signing_issuer import RsaSigningKey, SigningIssuer
from tests.integration.auth.conftest import VerifierKit

ORDER_SERVICE_SUBJECT = "fbfddff6-ba88-54a3-9910-6082cf1d57b1"  # the service-account user id in the realm export


def verifications(result: str) -> float:
    return REGISTRY.get_sample_value("auth_token_verifications_total", {"result": result}) or 0.0


def claims_for(issuer: SigningIssuer, client: str = "order-service", /, **changes: object) -> dict[str, object]:
    """Keycloak 26's claims for ``client`` with ``changes`` applied (a None value removes the claim)."""
    claims = issuer.access_token_claims(client)
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hand_made_token(header: Mapping[str, object], claims: Mapping[str, object], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{b64url(orjson.dumps(header))}.{b64url(orjson.dumps(claims))}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


async def rejection(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await verifier.verify(token)
    return caught.value.description


# Real tokens from Keycloak.


async def test_order_service_token_is_accepted_with_write_and_read_roles(
    keycloak: Keycloak, keycloak_kit: VerifierKit
) -> None:
    oks_before = verifications("ok")

    principal = await keycloak_kit.verifier.verify(await keycloak.token("order-service"))

    assert principal == Principal(
        client_id="order-service",
        subject=ORDER_SERVICE_SUBJECT,
        roles=frozenset({"payment:write", "payment:read"}),
    )
    keycloak_kit.verifier.require(principal, "payment:write")
    keycloak_kit.verifier.require(principal, "payment:read")
    assert verifications("ok") == oks_before + 1


async def test_payment_reader_may_read_but_not_write(tokens: dict[str, str], keycloak_kit: VerifierKit) -> None:
    verifier = keycloak_kit.verifier
    principal = await verifier.verify(tokens["payment-reader"])
    forbidden_before = verifications("forbidden")

    verifier.require(principal, keycloak_kit.settings.read_role)
    with pytest.raises(AuthorizationError) as caught:
        verifier.require(principal, keycloak_kit.settings.write_role)

    assert principal.roles == frozenset({"payment:read"})
    assert caught.value.required_role == "payment:write"
    assert verifications("forbidden") == forbidden_before + 1


async def test_client_without_roles_authenticates_but_is_refused_both_roles(
    tokens: dict[str, str], keycloak_kit: VerifierKit
) -> None:
    verifier = keycloak_kit.verifier
    principal = await verifier.verify(tokens["no-role-client"])

    assert principal.client_id == "no-role-client"
    assert principal.roles == frozenset()
    for role in ("payment:write", "payment:read"):
        with pytest.raises(AuthorizationError):
            verifier.require(principal, role)


async def test_keycloak_token_is_refused_by_a_verifier_trusting_another_issuer(
    tokens: dict[str, str], verifier_kit: VerifierKit
) -> None:
    # verifier_kit trusts the signing issuer: Keycloak's kid is unknown there, whatever the token says.
    assert await rejection(verifier_kit.verifier, tokens["order-service"]) == "unknown signing key"


# Forged tokens, signed by the test's own issuer.


async def test_expired_token_is_rejected_as_expired(signing_issuer: SigningIssuer, verifier_kit: VerifierKit) -> None:
    now = int(time.time())
    token = signing_issuer.sign(claims_for(signing_issuer, iat=now - 400, exp=now - 60))
    expired_before = verifications("expired")

    assert await rejection(verifier_kit.verifier, token) == "token expired"
    assert verifications("expired") == expired_before + 1


async def test_token_expired_within_the_leeway_is_still_accepted(
    signing_issuer: SigningIssuer, verifier_kit: VerifierKit
) -> None:
    now = int(time.time())
    token = signing_issuer.sign(claims_for(signing_issuer, iat=now - 300, exp=now - 2))

    principal = await verifier_kit.verifier.verify(token)

    assert principal.client_id == "order-service"


async def test_token_not_yet_valid_is_rejected(signing_issuer: SigningIssuer, verifier_kit: VerifierKit) -> None:
    now = int(time.time())
    token = signing_issuer.sign(claims_for(signing_issuer, nbf=now + 120))

    assert await rejection(verifier_kit.verifier, token) == "token not yet valid"


async def test_token_issued_in_the_future_is_rejected(signing_issuer: SigningIssuer, verifier_kit: VerifierKit) -> None:
    now = int(time.time())
    token = signing_issuer.sign(claims_for(signing_issuer, iat=now + 120, exp=now + 420))

    assert await rejection(verifier_kit.verifier, token) == "token not yet valid"


async def test_token_from_another_issuer_is_rejected_as_wrong_issuer(
    signing_issuer: SigningIssuer, verifier_kit: VerifierKit
) -> None:
    token = signing_issuer.sign(claims_for(signing_issuer, iss=f"{signing_issuer.base_url}/realms/master"))

    assert await rejection(verifier_kit.verifier, token) == "wrong issuer"


async def test_token_without_expiry_is_rejected(signing_issuer: SigningIssuer, verifier_kit: VerifierKit) -> None:
    token = signing_issuer.sign(claims_for(signing_issuer, exp=None))

    assert await rejection(verifier_kit.verifier, token) == "missing claim: exp"


async def test_token_signed_by_another_key_under_the_same_kid_fails_signature_check(
    signing_issuer: SigningIssuer, verifier_kit: VerifierKit, foreign_signing_key: RsaSigningKey
) -> None:
    token = foreign_signing_key.sign(claims_for(signing_issuer))

    assert jwt.get_unverified_header(token)["kid"] == signing_issuer.kid
    assert await rejection(verifier_kit.verifier, token) == "signature verification failed"


async def test_tampered_claims_fail_signature_check(signing_issuer: SigningIssuer, verifier_kit: VerifierKit) -> None:
    header, _, signature = signing_issuer.sign(claims_for(signing_issuer, "payment-reader")).split(".")
    forged_claims = claims_for(signing_issuer, "payment-reader", realm_access={"roles": ["payment:write"]})
    forged = f"{header}.{b64url(orjson.dumps(forged_claims))}.{signature}"

    assert await rejection(verifier_kit.verifier, forged) == "signature verification failed"


async def test_unsigned_alg_none_token_is_refused_without_fetching_keys(
    signing_issuer: SigningIssuer, verifier_kit: VerifierKit
) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": signing_issuer.kid}
    token = hand_made_token(header, claims_for(signing_issuer), lambda _: b"")

    assert await rejection(verifier_kit.verifier, token) == "unsupported algorithm"
    assert verifier_kit.requests.paths == []


async def test_hs256_token_keyed_with_the_public_key_is_refused(
    signing_issuer: SigningIssuer, verifier_kit: VerifierKit
) -> None:
    public_pem = signing_issuer.signing_key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": signing_issuer.kid}
    token = hand_made_token(
        header, claims_for(signing_issuer), lambda data: hmac.digest(public_pem, data, hashlib.sha256)
    )

    assert await rejection(verifier_kit.verifier, token) == "unsupported algorithm"


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30", "Bearer x.y.z"])
async def test_garbage_is_rejected_as_malformed(verifier_kit: VerifierKit, garbage: str) -> None:
    invalid_before = verifications("invalid")

    assert await rejection(verifier_kit.verifier, garbage) == "malformed token"
    assert verifications("invalid") == invalid_before + 1


async def test_token_without_kid_is_rejected(signing_issuer: SigningIssuer, verifier_kit: VerifierKit) -> None:
    token = jwt.encode(claims_for(signing_issuer), signing_issuer.signing_key.private_key, algorithm="RS256")

    assert await rejection(verifier_kit.verifier, token) == "missing key id"


async def test_id_token_is_not_accepted_as_an_access_token(
    signing_issuer: SigningIssuer, verifier_kit: VerifierKit
) -> None:
    token = signing_issuer.sign(claims_for(signing_issuer, typ="ID"))

    assert await rejection(verifier_kit.verifier, token) == "not an access token"


async def test_token_without_azp_names_no_client_and_is_rejected(
    signing_issuer: SigningIssuer, verifier_kit: VerifierKit
) -> None:
    # Keycloak 26 names the client in `azp` only (no `clientId` claim any more): without it, nobody is calling.
    token = signing_issuer.sign(claims_for(signing_issuer, azp=None))

    assert await rejection(verifier_kit.verifier, token) == "token names no client"


async def test_client_id_falls_back_to_the_client_id_claim_when_azp_is_absent(
    signing_issuer: SigningIssuer, verifier_kit: VerifierKit
) -> None:
    # Lightweight or older Keycloak tokens carry `client_id` instead of `azp`.
    token = signing_issuer.sign(claims_for(signing_issuer, "payment-reader", azp=None, client_id="payment-reader"))

    principal = await verifier_kit.verifier.verify(token)

    assert principal.client_id == "payment-reader"


async def test_audience_is_enforced_when_configured(
    signing_issuer: SigningIssuer, make_verifier: Callable[..., VerifierKit]
) -> None:
    verifier = make_verifier(signing_issuer.issuer_url, audience="payment-service").verifier
    keycloak_shaped = signing_issuer.sign(claims_for(signing_issuer))  # Keycloak 26's default: no `aud` at all
    for_account = signing_issuer.sign(claims_for(signing_issuer, aud="account"))
    addressed = signing_issuer.sign(claims_for(signing_issuer, aud=["account", "payment-service"]))

    assert await rejection(verifier, keycloak_shaped) == "missing claim: aud"
    assert await rejection(verifier, for_account) == "wrong audience"
    assert (await verifier.verify(addressed)).client_id == "order-service"


async def test_audience_is_not_checked_when_not_configured(
    signing_issuer: SigningIssuer, verifier_kit: VerifierKit
) -> None:
    token = signing_issuer.sign(claims_for(signing_issuer, aud="some-other-service"))

    assert (await verifier_kit.verifier.verify(token)).client_id == "order-service"


async def test_a_verified_token_is_remembered_until_it_expires(
    signing_issuer: SigningIssuer, http_client: httpx.AsyncClient
) -> None:
    now = [1_000.0]
    verifier = JwtVerifier(
        AuthSettings(issuer_url=signing_issuer.issuer_url, leeway_seconds=0), http_client, wall_clock=lambda: now[0]
    )
    expires_at = int(time.time()) + 60
    token = signing_issuer.sign(claims_for(signing_issuer, exp=expires_at))
    now[0] = expires_at - 30
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first  # the same object: served from the cache, no RSA check
    now[0] = expires_at + 1  # past exp by the cache's clock: it no longer vouches, a full check runs
    again = await verifier.verify(token)
    assert again is not first and again == first
