"""Prometheus counters of the JWT verifier (default registry)."""

from __future__ import annotations

from prometheus_client import Counter

TOKEN_VERIFICATIONS = Counter(
    "auth_token_verifications_total",
    "Bearer-token checks by outcome: ok, expired, invalid, unavailable (keys could not be fetched), forbidden "
    "(valid token without the required role; counted by the role check, after its 'ok').",
    ["result"],
)
JWKS_FETCHES = Counter(
    "auth_jwks_fetches_total",
    "Fetches of the issuer's signing keys (discovery + JWKS) by outcome: ok, error.",
    ["result"],
)

# Created at 0 at import (start-up), so the first "unavailable" or fetch "error" of a process is an increase.
for _result in ("ok", "expired", "invalid", "unavailable", "forbidden"):
    TOKEN_VERIFICATIONS.labels(result=_result)
for _result in ("ok", "error"):
    JWKS_FETCHES.labels(result=_result)
