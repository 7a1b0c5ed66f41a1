"""AiohttpPspGateway: the PSP port over HTTP, every charge run in the bounded worker pool.

Answer mapping (to a PspAnswer; payment_domain.psp_answer turns it into order states), decided by one question:
could the request have reached the PSP?
- 200: the PSP's status word through answer_for_psp_status ("PENDING" -> an unknown outcome, still pending).
- Never sent (connection refused, connect timeout, no free connection, our worker pool full or the call
  timeout spent in its queue, PSP answered 429 "too many requests"): NOT_CHARGED; a new attempt is safe.
- 503 "not now": UNAVAILABLE. Most likely nothing was executed, but a proxy or load balancer in front of the PSP
  answers 503 after an upstream reset too (Envoy's "reset before headers"), when the PSP may have charged: the
  same key may be sent again; a new attempt (a new key) only after a status query finds no charge under it.
- Maybe sent and outcome not known (our wait or the read timed out, the connection broke after sending, an
  unreadable answer, a 500/502/504, a 408 or another undocumented 4xx): OUTCOME_UNKNOWN. The caller resolves it
  with a status query for the same key and never charges blindly. Only 429 counts as "not executed".
- 409 (the PSP is still processing this key): OUTCOME_UNKNOWN, pending.
- 422 (the key was first used with another body): a call exists under the key, so OUTCOME_UNKNOWN (the status
  query finds what became of it), never a failure.
- 400 (the PSP refused the request itself as malformed: nothing was executed, and it can never succeed):
  DECLINED, the PSP's word FAILED_FINAL.
- 401/403/404 (credentials rotating, a misrouted proxy): MISCONFIGURED, our own configuration is wrong; it says
  nothing about the charge, so a status query settles it. Undocumented 4xx are counted in
  psp_unexpected_responses_total{http_status} and alerted on (an order is never failed for our own outage).
- A redirect is not followed (a 3xx is an answer we do not understand: outcome unknown).

Status queries go straight to the shared session (not the pool: they are few, and must not queue behind
charges); their answer keeps "no such charge" (a 404 the PSP marks `charge_not_found`) apart from "could not
ask" (see PspStatusResult).

Why aiohttp and not httpx: at 32 calls in flight httpx's AsyncClient spent several times the CPU per call that
aiohttp's ClientSession does (figures in docs/differences.md), and the pipeline's budget on two cores is 0.4 ms.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import structlog
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Histogram
from yarl import URL

from payment_application.ports.psp import PspCallResult, PspChargeRequest, PspRefundRequest, PspStatusResult
from payment_domain.psp_answer import AnswerKind, PspAnswer, answer_for_psp_status, order_status_for
from payment_infrastructure.observability import tracing
from payment_infrastructure.psp.concurrency_limit import GradientLimit
from payment_infrastructure.psp.metrics import (
    PSP_CALL_LATENCY,
    PSP_CALLS,
    PSP_REFUND_CALL_LATENCY,
    PSP_REFUND_CALLS,
    PSP_REFUND_STATUS_CHECKS,
    PSP_STATUS_CHECK_LATENCY,
    PSP_STATUS_CHECKS,
    PSP_UNEXPECTED_RESPONSES,
)
from payment_infrastructure.psp.settings import PspSettings
from payment_infrastructure.psp.worker_pool import PoolRejected, PspWorkerPool

log = structlog.get_logger(__name__)

K = AnswerKind
CHARGES_PATH = "/v1/charges"
REFUNDS_PATH = "/v1/refunds"
_NOT_NOW = frozenset({429, 503})
_TOO_MANY_REQUESTS = 429  # a rate limiter refuses before anything runs; a 503 may come after
_OUR_CONFIGURATION = frozenset({401, 403, 404})
_NO_ANSWER = frozenset({K.OUTCOME_UNKNOWN, K.NOT_CHARGED, K.UNAVAILABLE, K.MISCONFIGURED})
NOT_EXECUTED = PspAnswer(K.NOT_CHARGED)
UNAVAILABLE = PspAnswer(K.UNAVAILABLE)
UNKNOWN = PspAnswer(K.OUTCOME_UNKNOWN)
PENDING = answer_for_psp_status("PENDING")
_MALFORMED = answer_for_psp_status("FAILED_FINAL")
_UNAVAILABLE = "PSP_UNAVAILABLE_TRANSIENT"  # the psp_calls_total label of a call never executed
_MAX_DETAIL = 500
# aiohttp rounds timeouts above a threshold (5 s by default) up to whole seconds; ours stay as configured.
_EXACT_TIMEOUTS = math.inf


@dataclass(frozen=True)
class _Answer:
    """One charge call's outcome before latency is known; `metric` is the psp_calls_total result label."""

    answer: PspAnswer
    metric: str
    error_code: str | None = None
    error_detail: str | None = None


def _timeout(seconds: float, connect_s: float) -> aiohttp.ClientTimeout:
    """One request's bounds, phase by phase, so the exception says how far the request got.

    `connect` bounds waiting for a free connection plus setting one up and `sock_connect` the TCP connect alone:
    either ending raises ConnectionTimeoutError, and nothing was sent. `sock_read` runs from the moment the
    request is written, so its SocketTimeoutError means sent and unanswered. No `total`: its plain TimeoutError
    would race the two above at the same deadline and blur exactly that line; the worker pool bounds the whole
    call (deadline, then a cancelling backstop).
    """
    return aiohttp.ClientTimeout(
        connect=seconds,
        sock_connect=min(connect_s, seconds),
        sock_read=seconds,
        ceil_threshold=_EXACT_TIMEOUTS,
    )


class AiohttpPspGateway:
    def __init__(self, settings: PspSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        limit = settings.concurrency_limit()
        self._pool: PspWorkerPool[_Answer] = PspWorkerPool(
            settings.workers,
            settings.queue_size,
            grace_s=settings.call_grace_ms / 1000,
            limit=None if limit is None else GradientLimit(limit),
        )
        self._connect_s = settings.connect_timeout_ms / 1000
        self._status_timeout = _timeout(settings.status_timeout_ms / 1000, self._connect_s)
        # Parsed once, not on every call.
        self._charges_url = URL(f"{settings.base_url}{CHARGES_PATH}")
        self._status_prefix = f"{settings.base_url}{CHARGES_PATH}/"
        self._refunds_url = URL(f"{settings.base_url}{REFUNDS_PATH}")
        self._refund_status_prefix = f"{settings.base_url}{REFUNDS_PATH}/"
        # Requests holding or waiting for a connection. A request started at the connector's limit queues for
        # one, so its connect timeout is reported as a pool timeout (aiohttp raises the same error for both).
        self._in_flight = 0

    @property
    def pool(self) -> PspWorkerPool[_Answer]:
        return self._pool

    async def start(self) -> None:
        if self._session is not None:
            return
        s = self._settings
        connector = aiohttp.TCPConnector(
            limit=s.max_connections,
            limit_per_host=s.max_connections,
            keepalive_timeout=s.keepalive_expiry_s,
            timeout_ceil_threshold=_EXACT_TIMEOUTS,
        )
        # No cookie jar: the PSP API is stateless, and matching cookies costs CPU on every call.
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"accept": "application/json"},
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        await self._pool.start()
        log.info(
            "psp_gateway_started",
            base_url=s.base_url,
            workers=s.workers,
            allowed_workers=self._pool.allowed_workers,
            adaptive_workers=s.adaptive_workers,
            queue_size=s.queue_size,
        )

    async def close(self) -> None:
        """Let queued and running charges finish (each within its timeout), then close the session."""
        await self._pool.close(self._settings.drain_timeout_ms / 1000)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AiohttpPspGateway:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def charge(self, request: PspChargeRequest) -> PspCallResult:
        body = orjson.dumps(
            {
                "merchantReference": request.merchant_reference,
                "amount": request.amount_minor,
                "currency": request.currency,
                "sellerId": request.seller_id,
            }
        )
        return await self._traced_call(
            "psp charge",
            self._charges_url,
            body,
            request.idempotency_key,
            request.merchant_reference,
            (PSP_CALLS, PSP_CALL_LATENCY),
        )

    async def refund(self, request: PspRefundRequest) -> PspCallResult:
        """A refund under its own key, through the same pool, timeouts and answer mapping as a charge."""
        body = orjson.dumps(
            {
                "merchantReference": request.merchant_reference,
                "refundReference": request.refund_reference,
                "amount": request.amount_minor,
                "currency": request.currency,
                "sellerId": request.seller_id,
            }
        )
        return await self._traced_call(
            "psp refund",
            self._refunds_url,
            body,
            request.idempotency_key,
            request.merchant_reference,
            (PSP_REFUND_CALLS, PSP_REFUND_CALL_LATENCY),
        )

    async def _traced_call(
        self, name: str, url: URL, body: bytes, key: str, reference: str, meters: tuple[Counter, Histogram]
    ) -> PspCallResult:
        with tracing.span(name, kind=SpanKind.CLIENT, attributes={"psp.idempotency_key": key}) as span:
            result = await self._call(url, body, key, reference, meters, tracing.traceparent_of(span))
            if span is not None:
                span.set_attribute("psp.answer", result.answer.kind.value)
                if result.error_code is not None:
                    span.set_attribute("psp.error_code", result.error_code)
            return result

    async def _call(
        self,
        url: URL,
        body: bytes,
        key: str,
        reference: str,
        meters: tuple[Counter, Histogram],
        traceparent: str | None,
    ) -> PspCallResult:
        calls, latency = meters
        session = self._require_session()
        started = time.perf_counter()
        try:
            answer = await self._pool.run(
                lambda seconds_left: self._post(session, url, body, key, seconds_left, traceparent),
                self._settings.call_timeout_ms / 1000,
            )
        except PoolRejected as exc:  # never sent: a new attempt is safe
            metric = "QUEUE_TIMEOUT" if exc.code == PoolRejected.QUEUE_TIMEOUT else "REJECTED"
            answer = _Answer(NOT_EXECUTED, metric, exc.code, str(exc))
        except TimeoutError:
            answer = _Answer(
                UNKNOWN,
                "TIMEOUT",
                "TIMEOUT",
                f"no answer within {self._settings.call_timeout_ms} ms; the call may still complete",
            )
        except asyncio.CancelledError:
            calls.labels("CANCELLED").inc()
            raise
        except Exception as exc:  # a bug below us: the request may have gone out, so the outcome is unknown
            log.exception("psp_call_failed", idempotency_key=key)
            answer = _Answer(UNKNOWN, "EXCEPTION", "EXCEPTION", repr(exc)[:_MAX_DETAIL])
        elapsed = time.perf_counter() - started
        latency.observe(elapsed)
        calls.labels(answer.metric).inc()
        if answer.error_code is not None:
            log.warning(
                "psp_call_without_answer" if answer.answer.kind in _NO_ANSWER else "psp_call_refused",
                idempotency_key=key,
                merchant_reference=reference,
                path=url.path,
                answer=answer.answer.kind.value,
                error_code=answer.error_code,
            )
        return PspCallResult(answer.answer, round(elapsed * 1000), answer.error_code, answer.error_detail)

    async def charge_status(self, idempotency_key: str) -> PspStatusResult:
        return await self._status(self._status_prefix, idempotency_key, "charge_not_found", PSP_STATUS_CHECKS)

    async def refund_status(self, idempotency_key: str) -> PspStatusResult:
        return await self._status(
            self._refund_status_prefix, idempotency_key, "refund_not_found", PSP_REFUND_STATUS_CHECKS
        )

    async def _status(self, prefix: str, idempotency_key: str, not_found: str, checks: Counter) -> PspStatusResult:
        session = self._require_session()
        started = time.perf_counter()
        with tracing.span(
            "psp status check", kind=SpanKind.CLIENT, attributes={"psp.idempotency_key": idempotency_key}
        ) as span:
            answer, code = await self._get_status(
                session, prefix, idempotency_key, not_found, tracing.traceparent_of(span)
            )
            if span is not None:
                span.set_attribute("psp.answer", answer.kind.value)
                if code is not None:
                    span.set_attribute("psp.error_code", code)
        elapsed = time.perf_counter() - started
        PSP_STATUS_CHECK_LATENCY.observe(elapsed)
        result = PspStatusResult(answer, latency_ms=round(elapsed * 1000), error_code=code)
        status = result.status
        metric = status.value if status is not None else ("NOT_FOUND" if not result.found else code or "ERROR")
        checks.labels(metric).inc()
        return result

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("AiohttpPspGateway.start() must be awaited before use")
        return self._session

    async def _post(
        self,
        session: aiohttp.ClientSession,
        url: URL,
        body: bytes,
        key: str,
        seconds_left: float,
        traceparent: str | None,
    ) -> _Answer:
        must_queue = self._in_flight >= self._settings.max_connections
        self._in_flight += 1
        headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
        if traceparent is not None:
            headers["traceparent"] = traceparent
        try:
            async with session.post(
                url,
                data=body,
                headers=headers,
                timeout=_timeout(seconds_left, self._connect_s),
                allow_redirects=False,
            ) as response:
                code, payload = response.status, await response.read()
        except aiohttp.ConnectionTimeoutError as exc:
            why = "CONNECTION_POOL_TIMEOUT" if must_queue else "CONNECT_FAILED"
            return _Answer(NOT_EXECUTED, _UNAVAILABLE, why, str(exc))
        except aiohttp.ClientConnectorError as exc:
            return _Answer(NOT_EXECUTED, _UNAVAILABLE, "CONNECT_FAILED", str(exc))
        except TimeoutError as exc:  # sock_read: sent, and no whole answer in time
            return _Answer(UNKNOWN, "TIMEOUT", "READ_TIMEOUT", type(exc).__name__)
        except aiohttp.ClientError as exc:
            return _Answer(UNKNOWN, "EXCEPTION", "TRANSPORT_ERROR", repr(exc)[:_MAX_DETAIL])
        finally:
            self._in_flight -= 1
        return _answer_from_response(code, payload)

    async def _get_status(
        self, session: aiohttp.ClientSession, prefix: str, key: str, not_found: str, traceparent: str | None
    ) -> tuple[PspAnswer, str | None]:
        """(answer, error code) as PspStatusResult reads them."""
        self._in_flight += 1
        try:
            async with session.get(
                URL(prefix + quote(key, safe=""), encoded=True),
                headers=None if traceparent is None else {"traceparent": traceparent},
                timeout=self._status_timeout,
                allow_redirects=False,
            ) as response:
                code, body = response.status, await response.read()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
            return UNKNOWN, "UNAVAILABLE"
        except TimeoutError:
            return UNKNOWN, "TIMEOUT"
        except aiohttp.ClientError:
            return UNKNOWN, "ERROR"
        finally:
            self._in_flight -= 1
        payload = _json(body)
        if code == 404 and payload.get("code") == not_found:
            return NOT_EXECUTED, None
        raw = payload.get("status")
        if code == 200 and isinstance(raw, str):
            return answer_for_psp_status(raw), None
        log.warning("psp_status_query_unanswered", idempotency_key=key, http_status=code)
        if code in _OUR_CONFIGURATION:
            return PspAnswer(K.MISCONFIGURED), "ERROR"
        return UNKNOWN, "UNAVAILABLE" if code in _NOT_NOW else "ERROR"


def _json(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _text(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")


def _answer_from_response(code: int, body: bytes) -> _Answer:
    payload = _json(body)
    if code == 200:
        raw = payload.get("status")
        if not isinstance(raw, str):
            return _Answer(UNKNOWN, "EXCEPTION", "BAD_RESPONSE", _text(body)[:_MAX_DETAIL])
        answer = answer_for_psp_status(raw)
        return _Answer(answer, order_status_for(answer).value)
    detail = str(payload.get("detail") or _text(body))[:_MAX_DETAIL]
    error_code = str(payload.get("code") or f"HTTP_{code}")
    if code in _NOT_NOW:
        answer = NOT_EXECUTED if code == _TOO_MANY_REQUESTS else UNAVAILABLE
        return _Answer(answer, _UNAVAILABLE, f"HTTP_{code}", detail)
    if code == 409:
        return _Answer(PENDING, order_status_for(PENDING).value, error_code, detail)
    if code == 400:
        return _Answer(_MALFORMED, "FAILED_FINAL", error_code, detail)
    if code == 422:  # the key was first used with another body: a call exists under it, whatever became of it
        return _Answer(UNKNOWN, "KEY_REUSED", error_code, detail)
    if 400 <= code < 500:
        PSP_UNEXPECTED_RESPONSES.labels(str(code)).inc()
        answer = PspAnswer(K.MISCONFIGURED) if code in _OUR_CONFIGURATION else UNKNOWN
        return _Answer(answer, "UNEXPECTED_RESPONSE", f"HTTP_{code}", detail)
    # 5xx other than "not now", or anything unexpected: the charge may have happened.
    return _Answer(UNKNOWN, "TIMEOUT_EXCEEDED_1S_TRANSIENT", f"HTTP_{code}", detail)
