"""Fixtures for the auth tests: a hand-driven monotonic clock and verifiers wired to an issuer over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from devstack.keycloak import Keycloak
from payment_infrastructure.auth import AuthSettings
from payment_infrastructure.auth.verifier import JwtVerifier
from tests.fixtures.signing_issuer import SigningIssuer


class ManualClock:
    """A monotonic clock that only moves when told, so JWKS refresh pacing is deterministic."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RecordedRequests:
    """Every request an httpx client sent (URL paths), counted by an event hook."""

    paths: list[str] = field(default_factory=list)

    async def hook(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)

    @property
    def jwks_fetches(self) -> int:
        return sum(path.endswith("/protocol/openid-connect/certs") for path in self.paths)


@dataclass
class VerifierKit:
    verifier: JwtVerifier
    clock: ManualClock
    requests: RecordedRequests
    settings: AuthSettings


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def recorded_requests() -> RecordedRequests:
    return RecordedRequests()


@pytest.fixture
async def http_client(recorded_requests: RecordedRequests) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(event_hooks={"request": [recorded_requests.hook]}) as client:
        yield client


@pytest.fixture
def make_verifier(
    http_client: httpx.AsyncClient, clock: ManualClock, recorded_requests: RecordedRequests
) -> Callable[..., VerifierKit]:
    """``make_verifier(issuer_url, **settings)``: a JwtVerifier on the test's recorded client and clock."""

    def make(issuer_url: str, **overrides: Any) -> VerifierKit:
        settings = AuthSettings(issuer_url=issuer_url, **overrides)
        verifier = JwtVerifier(settings, http_client, monotonic=clock)
        return VerifierKit(verifier=verifier, clock=clock, requests=recorded_requests, settings=settings)

    return make


@pytest.fixture
def verifier_kit(signing_issuer: SigningIssuer, make_verifier: Callable[..., VerifierKit]) -> VerifierKit:
    """A verifier trusting the session's signing issuer: for forged and negative tokens."""
    return make_verifier(signing_issuer.issuer_url)


@pytest.fixture
def keycloak_kit(keycloak: Keycloak, make_verifier: Callable[..., VerifierKit]) -> VerifierKit:
    """A verifier trusting the real Keycloak: for the tokens its realm clients get."""
    return make_verifier(keycloak.issuer_url)
