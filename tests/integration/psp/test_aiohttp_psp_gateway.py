"""AiohttpPspGateway against the real simulator: outcome mapping, unknown outcomes, the bounded pool.

A few cases need a peer the simulator cannot play (a connection that is never completed, a request read and
never answered, a redirect); they run against real sockets of their own, served by asyncio streams.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY

from payment_application.ports.psp import PspChargeRequest, PspRefundRequest, PspStatusResult
from payment_domain.psp_answer import AnswerKind, PspAnswer
from payment_domain.status import PaymentOrderStatus as S
from payment_infrastructure.psp.gateway import AiohttpPspGateway
from payment_infrastructure.psp.settings import PspSettings
from tests.fixtures.psp import PspSimulatorHandle
from tests.integration.psp.polling import eventually, wait_until


@asynccontextmanager
async def running_gateway(base_url: str, **settings: Any) -> AsyncIterator[AiohttpPspGateway]:
    gateway = AiohttpPspGateway(PspSettings(base_url=base_url, **settings))
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.close()


@pytest.fixture
async def gateway(clean_psp_simulator: PspSimulatorHandle) -> AsyncIterator[AiohttpPspGateway]:
    async with running_gateway(clean_psp_simulator.base_url) as gw:
        yield gw


def charge_request(reference: str | None = None, key: str | None = None, amount: int = 2500) -> PspChargeRequest:
    return PspChargeRequest(
        idempotency_key=key or f"key-{uuid.uuid4()}",
        merchant_reference=reference or f"po-{uuid.uuid4()}",
        amount_minor=amount,
        currency="EUR",
        seller_id="seller-1",
    )


def psp_calls(result: str) -> float:
    return REGISTRY.get_sample_value("psp_calls_total", {"result": result}) or 0.0


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def never_completing_port() -> Iterator[int]:
    """A port whose connections are never completed: its accept queue is full, so Linux drops new SYNs."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        filler.connect(("127.0.0.1", port))  # takes the one place in the queue; nobody accepts it
        yield port


@dataclass
class RawHttpPeer:
    """What a hand-written HTTP peer saw: one request line per request it read."""

    base_url: str
    requests: list[str] = field(default_factory=list)


@asynccontextmanager
async def raw_http_peer(answer: bytes | None) -> AsyncIterator[RawHttpPeer]:
    """Serves `answer` to every request on loopback; with None it reads requests and never answers."""
    peer = RawHttpPeer("")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode().split("\r\n")
                peer.requests.append(lines[0])
                length = next((int(h.split(":")[1]) for h in lines if h.lower().startswith("content-length:")), 0)
                await reader.readexactly(length)
                if answer is None:
                    await reader.read()  # until the client hangs up
                    return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    peer.base_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield peer
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("psp_outcome", "expected"),
    [
        ("SUCCESSFUL_FINAL", S.SUCCESSFUL_FINAL),
        ("DECLINED_FINAL", S.DECLINED_FINAL),
        ("FAILED_TRANSIENT_ERROR", S.FAILED_TRANSIENT_ERROR),
        ("PENDING", S.PENDING_STATUS_CHECK_LATER),
    ],
)
async def test_psp_answer_is_mapped_to_the_order_status(
    gateway: AiohttpPspGateway, clean_psp_simulator: PspSimulatorHandle, psp_outcome: str, expected: S
) -> None:
    request = charge_request()
    await clean_psp_simulator.force(request.merchant_reference, psp_outcome)
    before = psp_calls(expected.value)

    result = await gateway.charge(request)

    assert result.status is expected
    assert result.error_code is None
    assert 0 <= result.latency_ms < 500
    assert psp_calls(expected.value) == before + 1
    status = await gateway.charge_status(request.idempotency_key)
    assert (status.found, status.status) == (True, expected)


async def test_call_outliving_the_wait_times_out_and_is_later_found_successful(
    clean_psp_simulator: PspSimulatorHandle,
) -> None:
    await clean_psp_simulator.set_scenario("BEST_PSP_EVER", timeout_percent=100, timeout_duration_ms=800)
    request = charge_request()
    timeouts_before = psp_calls("TIMEOUT")

    async with running_gateway(clean_psp_simulator.base_url, call_timeout_ms=200) as gateway:
        result = await gateway.charge(request)
        still_running = await gateway.charge_status(request.idempotency_key)
        settled = await eventually(
            lambda: gateway.charge_status(request.idempotency_key),
            lambda r: r.status is not S.PENDING_STATUS_CHECK_LATER,
        )

    assert result.status is S.TIMEOUT_EXCEEDED_1S_TRANSIENT
    assert result.error_code == "TIMEOUT"
    assert 200 <= result.latency_ms < 800
    assert psp_calls("TIMEOUT") == timeouts_before + 1
    assert (still_running.found, still_running.status) == (True, S.PENDING_STATUS_CHECK_LATER)
    assert (settled.found, settled.status) == (True, S.SUCCESSFUL_FINAL)
    summary = await clean_psp_simulator.summary()
    assert (summary["executions"], summary["slow_calls"], summary["orders_charged"]) == (1, 1, 1)


async def test_recharging_with_the_same_key_after_a_timeout_returns_the_one_charge(
    clean_psp_simulator: PspSimulatorHandle,
) -> None:
    request = charge_request()
    await clean_psp_simulator.force(request.merchant_reference, "SUCCESSFUL_FINAL", delay_ms=600)

    async with running_gateway(clean_psp_simulator.base_url, call_timeout_ms=200) as impatient:
        first = await impatient.charge(request)
    async with running_gateway(clean_psp_simulator.base_url, call_timeout_ms=2000) as patient:
        second = await patient.charge(request)

    assert first.status is S.TIMEOUT_EXCEEDED_1S_TRANSIENT
    assert second.status is S.SUCCESSFUL_FINAL
    summary = await clean_psp_simulator.summary()
    assert (summary["calls"], summary["executions"], summary["orders_charged_more_than_once"]) == (2, 1, 0)


async def test_full_pool_rejects_at_once_without_calling_the_psp(clean_psp_simulator: PspSimulatorHandle) -> None:
    await clean_psp_simulator.set_scenario(
        "BEST_PSP_EVER", latency=[{"name": "fast", "percent": 100, "minMs": 300, "maxMs": 300}]
    )
    rejected_before = psp_calls("REJECTED")

    async with running_gateway(
        clean_psp_simulator.base_url, workers=1, queue_size=1, max_connections=1, call_timeout_ms=3000
    ) as gateway:
        running = asyncio.create_task(gateway.charge(charge_request()))
        await wait_until(lambda: gateway.pool.busy_workers == 1)
        queued = asyncio.create_task(gateway.charge(charge_request()))
        await wait_until(lambda: gateway.pool.queue_depth == 1)
        rejected = await gateway.charge(charge_request())
        completed = await asyncio.gather(running, queued)

    assert rejected.status is S.PSP_UNAVAILABLE_TRANSIENT
    assert rejected.error_code == "REJECTED"
    assert rejected.latency_ms < 100
    assert psp_calls("REJECTED") == rejected_before + 1
    assert [r.status for r in completed] == [S.SUCCESSFUL_FINAL, S.SUCCESSFUL_FINAL]
    assert (await clean_psp_simulator.summary())["executions"] == 2


async def test_unreachable_psp_is_unavailable_and_status_cannot_be_asked() -> None:
    async with running_gateway(f"http://127.0.0.1:{closed_port()}") as gateway:
        result = await gateway.charge(charge_request())
        status = await gateway.charge_status("key-anything")

    assert result.status is S.PSP_UNAVAILABLE_TRANSIENT
    assert result.error_code == "CONNECT_FAILED"
    assert status == PspStatusResult(
        PspAnswer(AnswerKind.OUTCOME_UNKNOWN), latency_ms=status.latency_ms, error_code="UNAVAILABLE"
    )
    assert status.could_not_ask and not status.psp_has_no_such_charge


async def test_psp_that_never_completes_the_connection_is_unavailable_within_the_connect_timeout() -> None:
    with never_completing_port() as port:
        async with running_gateway(f"http://127.0.0.1:{port}", connect_timeout_ms=200, call_timeout_ms=1000) as gateway:
            result = await gateway.charge(charge_request())
            status = await gateway.charge_status("key-anything")

    # Not connected, so never sent: a new attempt is safe, and it is known at the connect timeout, well before the
    # call's wait ends.
    assert (result.status, result.error_code) == (S.PSP_UNAVAILABLE_TRANSIENT, "CONNECT_FAILED")
    assert 200 <= result.latency_ms < 900
    assert (status.could_not_ask, status.error_code) == (True, "UNAVAILABLE")


async def test_request_read_and_never_answered_is_an_unknown_outcome_not_an_unavailable_psp() -> None:
    async with (
        raw_http_peer(answer=None) as silent,
        running_gateway(silent.base_url, call_timeout_ms=300, status_timeout_ms=300) as gateway,
    ):
        result = await gateway.charge(charge_request())
        status = await gateway.charge_status("key-1")

    assert silent.requests[0].startswith("POST /v1/charges ")
    assert (result.status, result.error_code) == (S.TIMEOUT_EXCEEDED_1S_TRANSIENT, "TIMEOUT")
    # The status query was sent and went unanswered: "could not ask" because of a timeout, not an outage.
    assert (status.could_not_ask, status.error_code) == (True, "TIMEOUT")
    assert status.latency_ms >= 300


async def test_a_redirect_is_not_followed_and_leaves_the_outcome_unknown() -> None:
    redirect = b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere/v1/charges\r\nContent-Length: 0\r\n\r\n"
    async with raw_http_peer(redirect) as redirecting, running_gateway(redirecting.base_url) as gateway:
        result = await gateway.charge(charge_request())

    assert (result.status, result.error_code) == (S.TIMEOUT_EXCEEDED_1S_TRANSIENT, "HTTP_307")
    assert [line.split()[:2] for line in redirecting.requests] == [["POST", "/v1/charges"]]


async def test_psp_503_is_unavailable_unconfirmed_429_not_executed_and_500_an_unknown_outcome(
    gateway: AiohttpPspGateway, clean_psp_simulator: PspSimulatorHandle
) -> None:
    busy, throttled, broken = charge_request(), charge_request(), charge_request()
    await clean_psp_simulator.force(busy.merchant_reference, http_status=503)
    await clean_psp_simulator.force(throttled.merchant_reference, http_status=429)
    await clean_psp_simulator.force(broken.merchant_reference, http_status=500)

    busy_result = await gateway.charge(busy)
    throttled_result = await gateway.charge(throttled)
    broken_result = await gateway.charge(broken)

    # A 503 may come from a proxy after the PSP charged: not charged for the order, but a new key needs a check.
    assert (busy_result.status, busy_result.error_code) == (S.PSP_UNAVAILABLE_TRANSIENT, "HTTP_503")
    assert busy_result.answer.kind is AnswerKind.UNAVAILABLE
    assert (throttled_result.status, throttled_result.error_code) == (S.PSP_UNAVAILABLE_TRANSIENT, "HTTP_429")
    assert throttled_result.answer.kind is AnswerKind.NOT_CHARGED
    assert (broken_result.status, broken_result.error_code) == (S.TIMEOUT_EXCEEDED_1S_TRANSIENT, "HTTP_500")
    assert (await clean_psp_simulator.summary())["executions"] == 0


@pytest.mark.parametrize("http_status", [401, 403, 404, 408])
async def test_a_4xx_the_psp_does_not_document_is_an_unknown_outcome_counted_never_a_final_failure(
    gateway: AiohttpPspGateway, clean_psp_simulator: PspSimulatorHandle, http_status: int
) -> None:
    request = charge_request()
    await clean_psp_simulator.force(request.merchant_reference, http_status=http_status)
    before = REGISTRY.get_sample_value("psp_unexpected_responses_total", {"http_status": str(http_status)}) or 0.0

    result = await gateway.charge(request)

    # Credentials rotating, a misrouted proxy or a timeout in between: nothing says the charge failed, so the
    # order goes to a status query (which answers "no such charge" once the PSP is reachable), never to FAILED.
    assert (result.status, result.error_code) == (S.TIMEOUT_EXCEEDED_1S_TRANSIENT, f"HTTP_{http_status}")
    expected = AnswerKind.OUTCOME_UNKNOWN if http_status == 408 else AnswerKind.MISCONFIGURED
    assert result.answer.kind is expected
    after = REGISTRY.get_sample_value("psp_unexpected_responses_total", {"http_status": str(http_status)})
    assert after == before + 1
    status = await gateway.charge_status(request.idempotency_key)
    assert status.psp_has_no_such_charge


async def test_a_malformed_request_refused_with_400_fails_final(
    gateway: AiohttpPspGateway, clean_psp_simulator: PspSimulatorHandle
) -> None:
    request = charge_request()
    await clean_psp_simulator.force(request.merchant_reference, http_status=400)

    result = await gateway.charge(request)

    assert result.status is S.FAILED_FINAL
    assert (await clean_psp_simulator.summary())["executions"] == 0


async def test_key_reused_with_another_body_is_an_unknown_outcome_never_a_final_failure(
    gateway: AiohttpPspGateway,
) -> None:
    first = charge_request(amount=1000)
    assert (await gateway.charge(first)).status is S.SUCCESSFUL_FINAL

    result = await gateway.charge(charge_request(first.merchant_reference, first.idempotency_key, amount=2000))

    # A charge exists under the key: the order must go to a status query, which finds it, never to FAILED_FINAL.
    assert result.answer.kind is AnswerKind.OUTCOME_UNKNOWN
    assert result.status is S.TIMEOUT_EXCEEDED_1S_TRANSIENT
    assert result.error_code == "idempotency_key_mismatch"
    assert result.error_detail
    status = await gateway.charge_status(first.idempotency_key)
    assert (status.found, status.status) == (True, S.SUCCESSFUL_FINAL)


async def test_status_of_a_key_the_psp_never_saw_is_not_found(gateway: AiohttpPspGateway) -> None:
    status = await gateway.charge_status("key/with odd?chars")

    assert (status.found, status.status, status.error_code) == (False, None, None)
    assert status.psp_has_no_such_charge and not status.could_not_ask


async def test_a_404_without_the_psp_marker_is_not_taken_for_no_such_charge(
    clean_psp_simulator: PspSimulatorHandle,
) -> None:
    async with running_gateway(f"{clean_psp_simulator.base_url}/wrong-prefix") as misconfigured:
        status = await misconfigured.charge_status("key-1")

    assert status.could_not_ask
    assert status.error_code == "ERROR"


async def test_close_lets_queued_charges_finish(clean_psp_simulator: PspSimulatorHandle) -> None:
    await clean_psp_simulator.set_scenario(
        "BEST_PSP_EVER", latency=[{"name": "fast", "percent": 100, "minMs": 100, "maxMs": 100}]
    )
    gateway = AiohttpPspGateway(
        PspSettings(base_url=clean_psp_simulator.base_url, workers=1, max_connections=1, call_timeout_ms=2000)
    )
    await gateway.start()
    charges = [asyncio.create_task(gateway.charge(charge_request())) for _ in range(3)]
    await wait_until(lambda: gateway.pool.queue_depth == 2)

    await gateway.close()

    assert [c.result().status for c in charges] == [S.SUCCESSFUL_FINAL] * 3
    with pytest.raises(RuntimeError, match="start"):
        await gateway.charge(charge_request())


async def test_charge_before_start_is_a_programming_error() -> None:
    gateway = AiohttpPspGateway(PspSettings())

    with pytest.raises(RuntimeError, match="start"):
        await gateway.charge(charge_request())


def refund_request(reference: str, refund: str, amount: int = 500) -> PspRefundRequest:
    return PspRefundRequest(
        idempotency_key=refund,
        merchant_reference=reference,
        refund_reference=refund,
        amount_minor=amount,
        currency="EUR",
        seller_id="seller-1",
    )


async def test_a_refund_is_answered_like_a_charge_and_paid_back_once_under_its_key(
    gateway: AiohttpPspGateway, clean_psp_simulator: PspSimulatorHandle
) -> None:
    charge = charge_request()
    await clean_psp_simulator.force(charge.merchant_reference, "SUCCESSFUL_FINAL")
    assert (await gateway.charge(charge)).status is S.SUCCESSFUL_FINAL
    refund = refund_request(charge.merchant_reference, f"refund-{uuid.uuid4().int % 10**9}")
    await clean_psp_simulator.force(refund.refund_reference, "SUCCESSFUL_FINAL", times=2)

    first = await gateway.refund(refund)
    again = await gateway.refund(refund)
    status = await gateway.refund_status(refund.idempotency_key)
    unseen = await gateway.refund_status("refund-never-sent")
    declined = refund_request(charge.merchant_reference, "refund-declined")
    await clean_psp_simulator.force(declined.refund_reference, "DECLINED_FINAL")
    refused = await gateway.refund(declined)

    assert (first.answer.kind, again.answer.kind) == (AnswerKind.CHARGED, AnswerKind.CHARGED)
    assert status.answer.kind is AnswerKind.CHARGED and status.found
    assert unseen.psp_has_no_such_charge
    assert refused.answer.kind is AnswerKind.DECLINED
    summary = await clean_psp_simulator.summary()
    assert (summary["refund_executions"], summary["refunds_paid"]) == (2, 1)
    assert summary["refunded_minor_by_seller"] == {"seller-1": {"EUR": 500}}
    assert summary["orders_refunded_more_than_once"] == 0
    assert summary["executions"] == 1  # refunds are kept apart from charges


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_refund_calls_and_status_queries_have_meters_of_their_own(
    gateway: AiohttpPspGateway, clean_psp_simulator: PspSimulatorHandle
) -> None:
    refund = refund_request("paymentorder-77", f"refund-{uuid.uuid4().int % 10**9}")
    await clean_psp_simulator.force(refund.refund_reference, "SUCCESSFUL_FINAL")
    charges_before = _sample("psp_call_latency_seconds_count")
    checks_before = _sample("psp_status_checks_total", {"result": "SUCCESSFUL_FINAL"})
    refunds_before = _sample("psp_refund_call_latency_seconds_count")
    refund_checks_before = _sample("psp_refund_status_checks_total", {"result": "SUCCESSFUL_FINAL"})

    await gateway.refund(refund)
    await gateway.refund_status(refund.idempotency_key)

    assert _sample("psp_refund_call_latency_seconds_count") == refunds_before + 1
    assert _sample("psp_refund_status_checks_total", {"result": "SUCCESSFUL_FINAL"}) == refund_checks_before + 1
    assert _sample("psp_call_latency_seconds_count") == charges_before  # the charges' meters are the charges'
    assert _sample("psp_status_checks_total", {"result": "SUCCESSFUL_FINAL"}) == checks_before
