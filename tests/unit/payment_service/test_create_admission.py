"""The admission bound on creates, composed as POST /payments composes it (admit, then the create use case), with
fakes whose writer blocks: a create past the bound is refused at once, before an id is allocated or anything is
written, and admission resumes as soon as the writer frees a place. (Over real HTTP and Postgres:
tests/integration/api/test_overload.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from fastapi.routing import APIRoute
from prometheus_client import REGISTRY
from starlette.types import Message, Receive, Scope, Send

from payment_application.create_payment import CreatePayment, CreatePaymentCommand, PaymentCreated, PaymentReplayed
from payment_application.ports.payments import IdempotencyRecord
from payment_domain.events import EventEnvelope
from payment_domain.money import Amount, Currency
from payment_domain.payment import Payment, PaymentLine
from services.payment_service.api.admission import AdmissionMiddleware, CreateAdmission, Overloaded
from tests.fakes import FakeClock, FakeIdGenerator, FakePaymentRepository, FakePresenter
from tests.fixtures.ports import wait_until

BOUND = 3


class BlockedWriter(FakePaymentRepository):
    """Writes only while `open` is set: the writers are busy, creates wait for them."""

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()
        self.waiting = 0

    async def create(
        self,
        payment: Payment,
        outbox: Sequence[EventEnvelope],
        *,
        client_id: str,
        trace_id: str,
        idempotency: IdempotencyRecord | None,
    ) -> IdempotencyRecord | None:
        self.waiting += 1
        try:
            await self.open.wait()
        finally:
            self.waiting -= 1
        return await super().create(payment, outbox, client_id=client_id, trace_id=trace_id, idempotency=idempotency)


def command(n: int) -> CreatePaymentCommand:
    return CreatePaymentCommand(
        client_id="shop",
        buyer_id="buyer-1",
        order_id=f"order-{n}",
        total=Amount(1000, Currency.EUR),
        lines=(PaymentLine("seller-a", Amount(1000, Currency.EUR)),),
        trace_id=f"trace-{n}",
    )


def depth() -> float:
    return REGISTRY.get_sample_value("payment_create_queue_depth") or 0.0


def shed() -> float:
    return REGISTRY.get_sample_value("http_requests_shed_total", {"reason": "queue_full"}) or 0.0


async def test_a_create_past_the_bound_is_refused_at_once_and_admission_resumes_when_the_writer_frees_up() -> None:
    writer, ids = BlockedWriter(), FakeIdGenerator()
    create = CreatePayment(
        payments=writer,
        ids=ids,
        clock=FakeClock(datetime(2025, 3, 1, tzinfo=UTC)),
        presenter=FakePresenter(),
        idempotency_ttl=timedelta(hours=1),
    )
    admission = CreateAdmission(limit=BOUND)

    async def post(n: int) -> PaymentCreated | PaymentReplayed:
        with admission:
            return await create(command(n))

    depth_before, shed_before = depth(), shed()
    held = [asyncio.create_task(post(n)) for n in range(BOUND)]

    async def queue_full() -> bool:
        return writer.waiting == BOUND

    await wait_until(queue_full, timeout=5, interval=0.001, what="the bounded queue full")
    assert admission.held == BOUND
    assert depth() - depth_before == BOUND
    allocated = ids.issued_count

    with pytest.raises(Overloaded):
        admission.__enter__()  # refused synchronously: nothing to wait for, nothing to undo
    refused = asyncio.create_task(post(BOUND))
    with pytest.raises(Overloaded):
        await refused
    assert ids.issued_count == allocated  # no id allocated for the refused ones
    assert writer.payments == {}
    assert admission.held == BOUND
    assert shed() - shed_before == 2

    writer.open.set()
    written = await asyncio.gather(*held)
    assert {type(outcome) for outcome in written} == {PaymentCreated}
    assert admission.held == 0
    assert depth() == depth_before

    assert isinstance(await post(BOUND), PaymentCreated)
    assert len(writer.payments) == BOUND + 1
    assert shed() - shed_before == 2


async def test_a_place_is_given_back_when_the_create_fails() -> None:
    admission = CreateAdmission(limit=1)
    with pytest.raises(RuntimeError), admission:
        raise RuntimeError("the create failed")
    assert admission.held == 0
    with admission:
        assert admission.held == 1


def test_the_bound_must_admit_at_least_one_create() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CreateAdmission(limit=0)


class App:
    """An ASGI app that answers 202 once `release` is set (or raises, if told to)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0
        self.fail = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await self.release.wait()
        if self.fail:
            raise RuntimeError("the handler failed")
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def call(middleware: AdmissionMiddleware, method: str, path: str) -> list[Message]:
    scope: Scope = {"type": "http", "method": method, "path": path, "headers": [], "state": {"trace_id": "t-1"}}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    return sent


def payments_route() -> APIRoute:
    return APIRoute("/payments", lambda: None, methods=["POST"])


async def test_the_middleware_refuses_creates_past_the_bound_without_calling_the_app_and_lets_other_requests_by() -> (
    None
):
    app, admission = App(), CreateAdmission(limit=1)
    middleware = AdmissionMiddleware(
        app, admission=admission, pipeline=None, route=payments_route(), method="POST", retry_after_seconds=2
    )
    held = asyncio.create_task(call(middleware, "POST", "/payments"))

    async def admitted() -> bool:
        return app.calls == 1

    await wait_until(admitted, timeout=5, interval=0.001, what="the first create admitted")
    start, body = await call(middleware, "POST", "/payments")
    assert app.calls == 1
    assert start["status"] == 503
    assert (b"retry-after", b"2") in start["headers"]
    problem = orjson.loads(body["body"])
    assert problem["type"].endswith("/overloaded") and problem["traceId"] == "t-1"

    app.release.set()
    assert [m.get("status") for m in await call(middleware, "GET", "/payments/pay-1")] == [202, None]  # not gated
    assert (await held)[0]["status"] == 202
    assert admission.held == 0
    app.fail = True
    with pytest.raises(RuntimeError):
        await call(middleware, "POST", "/payments")
    assert admission.held == 0  # a failed create gives its place back
