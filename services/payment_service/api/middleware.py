"""Request context as plain ASGI middleware (no BaseHTTPMiddleware overhead on the hot path): trace ids in and
out, the request's server span (when tracing is on), log context, and the request latency histogram."""

from __future__ import annotations

import time

import structlog
from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payment_infrastructure.observability import tracing
from payment_infrastructure.observability.logging import log_context
from payment_infrastructure.observability.tracing import trace_from_headers
from services.payment_service.metrics import HTTP_REQUESTS

log = structlog.get_logger(__name__)
SLOW_REQUEST_SECONDS = 1.0


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        x_trace_id = traceparent = tracestate = None
        for name, value in scope["headers"]:
            if name == b"x-trace-id":
                x_trace_id = value.decode("latin-1")
            elif name == b"traceparent":
                traceparent = value.decode("latin-1")
            elif name == b"tracestate":
                tracestate = value.decode("latin-1")
        if tracing.tracing_enabled():
            with tracing.span(
                scope["method"],
                kind=SpanKind.SERVER,
                parent=tracing.parent_context(traceparent, tracestate),
                attributes={"http.request.method": scope["method"], "url.path": scope["path"]},
            ) as server:
                await self._serve(scope, receive, send, x_trace_id, tracing.traceparent_of(server) or traceparent)
        else:
            await self._serve(scope, receive, send, x_trace_id, traceparent)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, x_trace_id: str | None, traceparent: str | None
    ) -> None:
        """`traceparent`: the server span's when tracing is on, so the envelope's traceId is the span's trace id."""
        trace = trace_from_headers(x_trace_id, traceparent)
        scope.setdefault("state", {})["trace_id"] = trace.trace_id
        answer = tracing.traceparent_of() or trace.traceparent
        extra_headers = [(b"x-trace-id", trace.trace_id.encode()), (b"traceparent", answer.encode())]
        status = 500
        started = time.perf_counter()

        async def send_with_trace(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *(h for h in extra_headers if h[0] not in present),
                ]
            await send(message)

        with log_context(trace_id=trace.trace_id):
            try:
                await self.app(scope, receive, send_with_trace)
            finally:
                elapsed = time.perf_counter() - started
                route = _route_of(scope)
                _end_server_span(scope["method"], route, status)
                HTTP_REQUESTS.labels(scope["method"], route, str(status)).observe(elapsed)
                # A refusal at capacity is counted (http_requests_shed_total), not logged: thousands a second then.
                if not scope["state"].get("shed"):
                    self._log(scope["method"], route, status, elapsed)

    def _log(self, method: str, route: str, status: int, elapsed: float) -> None:
        if status >= 500 or elapsed > SLOW_REQUEST_SECONDS:
            log.warning("http_request", method=method, route=route, status=status, seconds=elapsed)
        elif self.access_log or status >= 400:
            log.info("http_request", method=method, route=route, status=status, seconds=elapsed)


def _end_server_span(method: str, route: str, status: int) -> None:
    """Name the server span after its route (known only once routed) and record the answer."""
    server = tracing.current_span()
    if server is None:
        return
    server.update_name(f"{method} {route}")
    server.set_attribute("http.route", route)
    server.set_attribute("http.response.status_code", status)
    if status >= 500:
        tracing.mark_failed(server, f"HTTP {status}")
