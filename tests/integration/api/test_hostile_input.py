"""Hostile input at the edge, over real HTTP: malformed, oversized and deeply nested bodies, wrong content types,
huge and negative numbers, control characters in ids, header injection, tampered and `alg: none` tokens, and
hypothesis-generated bodies. Each is refused with a clear 4xx problem and writes nothing.

Expired tokens and foreign signatures are in test_auth.py; field-by-field validation in test_validation.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from tests.fixtures.payment_api import RunningApi
from tests.integration.api.helpers import bearer, bounded, row_counts, valid_payment

JSON = {"Content-Type": "application/json"}


def _dumps(body: Any) -> bytes:
    return json.dumps(body).encode()


def _nested(depth: int) -> bytes:
    return b'{"buyerId": ' + b"[" * depth + b"]" * depth + b"}"


# (case, raw body, content type, expected status)
BODIES: list[tuple[str, bytes, str | None, int]] = [
    ("one MiB id", _dumps(valid_payment(buyerId="B" * 2**20)), "application/json", 413),
    ("deeply nested array", _nested(30_000), "application/json", 400),
    ("nested within the limit", _nested(200), "application/json", 422),
    ("text/plain", _dumps(valid_payment()), "text/plain", 415),
    ("form encoded", b"buyerId=B&orderId=O", "application/x-www-form-urlencoded", 415),
    ("multipart", b"--x\r\n\r\n{}\r\n--x--", "multipart/form-data; boundary=x", 415),
    ("no content type", _dumps(valid_payment()), None, 415),
    ("json-like type", _dumps(valid_payment()), "application/json-patch+json", 415),
    ("huge integer", _dumps(valid_payment(totalAmount={"value": 10**400, "currency": "EUR"})), "application/json", 422),
    (
        "negative amount",
        _dumps(valid_payment(totalAmount={"value": -19949, "currency": "EUR"})),
        "application/json",
        422,
    ),
    ("float amount", b'{"totalAmount": {"value": 1e308, "currency": "EUR"}}', "application/json", 422),
    ("NaN amount", b'{"totalAmount": {"value": NaN, "currency": "EUR"}}', "application/json", 422),
    ("boolean amount", _dumps(valid_payment(totalAmount={"value": True, "currency": "EUR"})), "application/json", 422),
    ("NUL in an id", _dumps(valid_payment(buyerId="BUYER\u0000")), "application/json", 422),
    ("newline in an id", _dumps(valid_payment(orderId="ORDER\r\nX-Evil: 1")), "application/json", 422),
    ("bidi override in an id", _dumps(valid_payment(buyerId="BUYER\u202e321")), "application/json", 422),
    ("lone surrogate in an id", b'{"buyerId": "\\ud800"}', "application/json", 400),
    ("invalid UTF-8", b'{"buyerId": "\xc3\x28"}', "application/json", 400),
    ("duplicate keys", b'{"buyerId": "A", "buyerId": "B"}', "application/json", 422),
]


@pytest.mark.parametrize(("case", "raw", "content_type", "status"), BODIES, ids=[c[0] for c in BODIES])
async def test_hostile_body_is_refused_with_a_problem_and_writes_nothing(
    payment_api: RunningApi,
    tokens: dict[str, str],
    database_url: str,
    case: str,
    raw: bytes,
    content_type: str | None,
    status: int,
) -> None:
    headers = bearer(tokens["order-service"]) | ({"Content-Type": content_type} if content_type else {})
    before = await row_counts(database_url)
    async with payment_api.client() as client:
        response = await client.post("/payments", content=raw, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status
    assert await row_counts(database_url) == before


async def test_oversized_chunked_body_is_refused_before_it_is_read(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"buyerId": "'
        for _ in range(64):  # 4 MiB, no Content-Length
            sent += 1
            yield b"B" * 65536
        yield b'"}'

    before = await row_counts(database_url)
    async with payment_api.client() as client:
        response = await client.post("/payments", content=chunks(), headers={**bearer(tokens["order-service"]), **JSON})
    assert response.status_code == 413, response.text
    assert await row_counts(database_url) == before


# Path segments as sent (percent-encoded).
IDS = ["%00", "a%0Ab", "%F0%9F%92%A9", "..%2F..%2Fetc%2Fpasswd", "%2500", "payment-1%0d%0aX-Evil:%201", "x" * 5000]


@pytest.mark.parametrize("payment_id", IDS)
async def test_odd_payment_ids_are_404(payment_api: RunningApi, tokens: dict[str, str], payment_id: str) -> None:
    async with payment_api.client() as client:
        response = await client.get(f"/payments/{payment_id}", headers=bearer(tokens["order-service"]))
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "x-evil" not in response.headers


@pytest.mark.parametrize(
    ("seller_id", "status"),
    [("%00", 422), ("a%0Ab", 422), ("a%E2%80%AEb", 422), ("x" * 256, 422), ("%F0%9F%92%A9", 200), ("%2500", 200)],
)
async def test_odd_seller_ids_are_refused_or_have_no_balance(
    payment_api: RunningApi, tokens: dict[str, str], seller_id: str, status: int
) -> None:
    async with payment_api.client() as client:
        for path in (f"/sellers/{seller_id}/balance", f"/sellers/{seller_id}/entries"):
            response = await client.get(path, headers=bearer(tokens["finance-reader"]))
            assert response.status_code == status, response.text
            if status == 200:
                assert response.json().get("balances", response.json().get("entries")) == []


async def _raw_request(base_url: str, request: bytes) -> bytes:
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), timeout=10)
    finally:
        writer.close()


async def test_header_injection_in_the_idempotency_key_is_refused(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    # httpx refuses to send a CR/LF inside a header, so this request is written by hand.
    body = _dumps(valid_payment())
    request = (
        b"POST /payments HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {tokens['order-service']}\r\n".encode()
        + b"Idempotency-Key: abc\rSet-Cookie: evil=1\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    before = await row_counts(database_url)
    answer = await _raw_request(payment_api.base_url, request)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"evil" not in answer.lower()
    assert await row_counts(database_url) == before


@pytest.mark.parametrize(
    ("name", "value"),
    [("Idempotency-Key", "caf\u00e9".encode("latin-1")), ("Idempotency-Key", b"a b"), ("Idempotency-Key", b"k" * 256)],
)
async def test_malformed_idempotency_key_is_400(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str, name: str, value: bytes
) -> None:
    before = await row_counts(database_url)
    async with payment_api.client() as client:
        response = await client.post(
            "/payments",
            json=valid_payment(),
            headers=[*bearer(tokens["order-service"]).items(), (name.encode(), value)],
        )
    assert response.status_code == 400, response.text
    assert await row_counts(database_url) == before


async def test_a_hostile_trace_id_is_not_echoed(payment_api: RunningApi, tokens: dict[str, str]) -> None:
    async with payment_api.client() as client:
        response = await client.get(
            "/payments/payment-0",
            headers={**bearer(tokens["order-service"]), "X-Trace-Id": "<script>", "traceparent": "00-zz-zz-01"},
        )
    assert response.status_code == 404
    assert response.headers["x-trace-id"] != "<script>"
    assert "<script>" not in response.text


def _b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    signature = token.rsplit(".", 1)[1]
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False}), signature


def _hostile_tokens(valid: str, jwks: dict[str, Any]) -> dict[str, str]:
    header, claims, signature = _parts(valid)
    escalated = {**claims, "azp": "admin", "realm_access": {"roles": ["payment:write", "payment:read", "admin"]}}
    signing_jwk = next(key for key in jwks["keys"] if key["kid"] == header["kid"])  # not the encryption key
    public_key = jwt.PyJWK(signing_jwk).key
    public_pem = public_key.public_bytes(encoding=Encoding.PEM, format=PublicFormat.SubjectPublicKeyInfo)
    return {
        "tampered claims": f"{_b64(header)}.{_b64(escalated)}.{signature}",
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "alg None, kid kept": f"{_b64({**header, 'alg': 'None'})}.{_b64(claims)}.",
        "alg none with the signature": f"{_b64({**header, 'alg': 'none'})}.{_b64(claims)}.{signature}",
        "HS256 keyed with the public key": _hmac(header, claims, public_pem),
        "kid path traversal": f"{_b64({**header, 'kid': '../../../../dev/null'})}.{_b64(claims)}.{signature}",
        "embedded jwk": f"{_b64({**header, 'jwk': signing_jwk})}.{_b64(escalated)}.{signature}",
        "jku elsewhere": f"{_b64({**header, 'jku': 'http://127.0.0.1:1/certs'})}.{_b64(escalated)}.{signature}",
        "signature stripped": f"{_b64(header)}.{_b64(claims)}.",
        "two dots only": "..",
        "not base64": "e30.!!!.e30",
        "header not JSON": f"{base64.urlsafe_b64encode(b'nope').decode()}.{_b64(claims)}.{signature}",
    }


def _hmac(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{_b64({**header, 'alg': 'HS256'})}.{_b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


async def test_tampered_and_unsigned_tokens_are_401_and_write_nothing(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str, keycloak: Any
) -> None:
    async with httpx.AsyncClient() as client:
        jwks = (await client.get(keycloak.jwks_url)).json()
    hostile = _hostile_tokens(tokens["order-service"], jwks)
    before = await row_counts(database_url)
    answers: dict[str, tuple[int, str]] = {}
    async with payment_api.client() as client:
        for case, token in hostile.items():
            response = await client.post("/payments", json=valid_payment(), headers=bearer(token))
            answers[case] = (response.status_code, response.headers.get("content-type", ""))
    assert {case: answer for case, answer in answers.items() if answer != (401, "application/problem+json")} == {}
    assert await row_counts(database_url) == before


# Hypothesis on the bodies: arbitrary JSON, and valid bodies with one member replaced by arbitrary JSON.
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
_JSON = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)
_FIELDS = ["buyerId", "orderId", "totalAmount", "paymentOrders"]
_MUTATED = st.builds(lambda field, value: valid_payment(**{field: value}), st.sampled_from(_FIELDS), _JSON)
_AMOUNT = st.builds(
    lambda part, value: valid_payment(totalAmount={"value": 19949, "currency": "EUR", part: value}),
    st.sampled_from(["value", "currency"]),
    _JSON,
)
BODY_EXAMPLES = 150


def _post_bodies(base_url: str, token: str, seen: Counter[int]) -> None:
    """Blocking; run in a thread while the API serves from the test's event loop."""
    with httpx.Client(base_url=base_url, timeout=10, headers=bearer(token)) as client:

        @bounded(BODY_EXAMPLES)
        @given(body=_JSON | _MUTATED | _AMOUNT)
        def post(body: Any) -> None:
            response = client.post("/payments", content=_dumps(body), headers=JSON)
            seen[response.status_code] += 1
            # A mutation can leave the body valid (a text id replaced by another): then it is created, once.
            assert response.status_code in (202, 400, 409, 422), (body, response.status_code, response.text)
            if response.status_code != 202:
                assert response.headers["content-type"] == "application/problem+json"

        post()


async def test_generated_bodies_are_refused_with_a_4xx_and_write_nothing(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str
) -> None:
    seen: Counter[int] = Counter()
    before = await row_counts(database_url)
    await asyncio.to_thread(_post_bodies, payment_api.base_url, tokens["order-service"], seen)
    after = await row_counts(database_url)
    assert sum(seen.values()) >= BODY_EXAMPLES
    assert after["payments"] - before["payments"] == seen[202], (seen, before, after)
    assert seen[400] + seen[422] > BODY_EXAMPLES // 2, seen
    print(f"\ngenerated bodies: {sum(seen.values())}, statuses {dict(seen)}")  # noqa: T201


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/metrics"])
async def test_management_endpoints_refuse_other_methods_and_ignore_junk(payment_api: RunningApi, path: str) -> None:
    async with httpx.AsyncClient(base_url=payment_api.management_url, timeout=10) as client:
        junk = await client.get(path, params={"x": "\u202e", "limit": "-1"}, headers={"X-Trace-Id": "<x>"})
        posted = await client.post(path, content=_nested(1000), headers=JSON)
        deleted = await client.delete(path)
    assert junk.status_code == 200, junk.text
    assert posted.status_code == 405 and deleted.status_code == 405
