"""The load: a bounded stream of payments (2-3 orders each, EUR, USD or GBP) through the real API, sent by a careful
client. Each payment has its own Idempotency-Key; on a transport error, a timeout, a 5xx or a 409 "in progress" the
client sends the same request again with the same key, after the answer's Retry-After (or a short backoff), until it
is accepted or its deadline passes. A payment is accepted on 202, or on 409 "order already has a payment" (the first
attempt's create committed but its answer was lost), which names the payment."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

CURRENCIES = ("EUR", "USD", "GBP")
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
GIVE_UP_AFTER_S = 180.0
TokenSource = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class PaymentRequest:
    number: int
    idempotency_key: str
    body: dict[str, Any]

    @property
    def orders(self) -> int:
        return len(self.body["paymentOrders"])


def payment_requests(run: str, count: int, rng: random.Random) -> list[PaymentRequest]:
    requests = []
    for number in range(count):
        currency = rng.choice(CURRENCIES)
        lines: list[dict[str, Any]] = [
            {
                "sellerId": f"SELLER-{rng.randrange(40)}",
                "amount": {"value": rng.randrange(100, 50_000), "currency": currency},
            }
            for _ in range(rng.choice((2, 3)))
        ]
        body: dict[str, Any] = {
            "buyerId": f"BUYER-{rng.randrange(1_000)}",
            "orderId": f"{run}-{number}",
            "totalAmount": {"value": sum(line["amount"]["value"] for line in lines), "currency": currency},
            "paymentOrders": lines,
        }
        requests.append(PaymentRequest(number, str(uuid.UUID(int=rng.getrandbits(128), version=4)), body))
    return requests


@dataclass
class LoadResult:
    accepted: dict[str, str] = field(default_factory=dict)  # orderId -> paymentId
    given_up: dict[str, str] = field(default_factory=dict)  # orderId -> the last answer
    refused: dict[str, str] = field(default_factory=dict)  # orderId -> a 4xx no retry can change
    attempts: int = 0
    retries: int = 0
    answers: dict[str, int] = field(default_factory=dict)  # status (or error type) -> count

    def note(self, answer: str) -> None:
        self.answers[answer] = self.answers.get(answer, 0) + 1


def _retry_after(response: httpx.Response | None, attempt: int) -> float:
    if response is not None:
        try:
            return min(float(response.headers.get("Retry-After", "")), 10.0)
        except ValueError:
            pass
    return float(min(0.1 * 2**attempt, 3.0))


async def send_one(
    client: httpx.AsyncClient, token: TokenSource, request: PaymentRequest, result: LoadResult, *, until: float
) -> None:
    deadline = min(time.monotonic() + GIVE_UP_AFTER_S, until)
    attempt = 0
    order_id = request.body["orderId"]
    while True:
        response: httpx.Response | None = None
        result.attempts += 1
        try:
            headers = {"Authorization": f"Bearer {await token()}", "Idempotency-Key": request.idempotency_key}
            response = await client.post("/payments", json=request.body, headers=headers)
            answer = str(response.status_code)
        except httpx.HTTPError as error:
            answer = type(error).__name__
        result.note(answer)
        if response is not None:
            if response.status_code == 202:
                result.accepted[order_id] = response.json()["paymentId"]
                return
            problem = _json(response)
            if response.status_code == 409 and problem.get("paymentId"):
                result.accepted[order_id] = str(problem["paymentId"])
                return
            if response.status_code not in RETRYABLE_STATUS and response.status_code != 401:
                result.refused[order_id] = f"{response.status_code} {response.text[:200]}"
                return
        if time.monotonic() > deadline:
            result.given_up[order_id] = answer if response is None else f"{answer} {response.text[:200]}"
            return
        result.retries += 1
        await asyncio.sleep(_retry_after(response, attempt))
        attempt += 1


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def run_load(
    base_url: str,
    token: TokenSource,
    requests: list[PaymentRequest],
    *,
    rate: float,
    concurrency: int,
    result: LoadResult,
) -> None:
    """Start payments at `rate` per second (at most `concurrency` in flight); return once each is settled. The whole
    load ends GIVE_UP_AFTER_S after its last payment was due: what is not accepted by then is given up."""
    limit = asyncio.Semaphore(concurrency)
    started = time.monotonic()
    until = started + len(requests) / rate + GIVE_UP_AFTER_S
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=5.0, limits=limits) as client:

        async def one(request: PaymentRequest) -> None:
            try:
                await send_one(client, token, request, result, until=until)
            finally:
                limit.release()

        tasks = []
        for request in requests:
            due = started + request.number / rate
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            await limit.acquire()
            if time.monotonic() > until:
                limit.release()
                result.given_up[request.body["orderId"]] = "never sent: the load's deadline passed"
                continue
            tasks.append(asyncio.create_task(one(request)))
        await asyncio.gather(*tasks)


class Tokens:
    """One access token from Keycloak, fetched again before it could expire."""

    REUSE_S = 120.0

    def __init__(self, fetch: Callable[[], Awaitable[str]]) -> None:
        self._fetch = fetch
        self._token = ""
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def __call__(self) -> str:
        async with self._lock:
            if time.monotonic() - self._at > self.REUSE_S:
                self._token = await self._fetch()
                self._at = time.monotonic()
        return self._token
