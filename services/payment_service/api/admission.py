"""Admission control for POST /payments: a bound on the creates one process holds at once.

Past what the writers can settle, every extra create a process takes on only lengthens the wait of all of them,
until each waits longer than its client does and goodput collapses. So a create beyond the bound is refused at
once with 503 `overloaded` and Retry-After: nothing was allocated or written, and the same request may simply be
sent again.

The bound counts every create from admission to answer (reading, id allocation, waiting for a writer, being
written), not only the writer's queue: when the CPU is short, creates pile up before the queue too. The refusal
happens in plain ASGI middleware, before routing, token verification or body parsing: under overload most
requests are refused, so a refusal must cost a small fraction of a create (no dependency solving, no exception
handling, no logging). That puts it before authentication: a request without a valid token is refused too, which
tells it nothing. The same middleware refuses a create while the pipeline behind the API is past its budget of
orders in flight (`pipeline_budget.py`), with 503 `pipeline-behind`.
"""

from __future__ import annotations

from types import TracebackType

import orjson
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from services.payment_service.api.pipeline_budget import PipelineBudget
from services.payment_service.api.problems import PROBLEM_JSON, problem_document
from services.payment_service.metrics import CREATE_QUEUE_DEPTH, CREATES_SHED_PIPELINE_BEHIND, CREATES_SHED_QUEUE_FULL


class Overloaded(Exception):
    """The process holds as many creates as it may; nothing was done for this one."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} creates in progress: at capacity")
        self.limit = limit


class CreateAdmission:
    """`with admission:` around a create: a place is taken at once or `Overloaded` is raised; never waits."""

    __slots__ = ("_held", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the admission limit must be at least 1")
        self.limit = limit
        self._held = 0

    @property
    def held(self) -> int:
        """Creates admitted and not yet answered."""
        return self._held

    def __enter__(self) -> None:
        if self._held >= self.limit:
            CREATES_SHED_QUEUE_FULL.inc()
            raise Overloaded(self.limit)
        self._held += 1
        CREATE_QUEUE_DEPTH.inc()

    def __exit__(
        self, _type: type[BaseException] | None, _error: BaseException | None, _traceback: TracebackType | None
    ) -> None:
        self._held -= 1
        CREATE_QUEUE_DEPTH.dec()


_AT_CAPACITY = (
    "Overloaded",
    "overloaded",
    "payment-service is at capacity: nothing was written. Send the same request again after Retry-After (with the "
    "same Idempotency-Key, or the same orderId if it had none)",
)
_PIPELINE_BEHIND = (
    "Payment pipeline behind",
    "pipeline-behind",
    "payments accepted earlier are still waiting for the payment provider: nothing was written. Send the same "
    "request again after Retry-After (with the same Idempotency-Key, or the same orderId if it had none)",
)


class AdmissionMiddleware:
    """Holds a place in `admission` for each request to `route` (method `method`) while the app answers it, or
    refuses the request at once: when the process holds too many creates, or when `pipeline` is past its budget.
    Sits inside the request context middleware, so a refusal still carries its trace id and is measured under its
    route."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        admission: CreateAdmission,
        pipeline: PipelineBudget | None,
        route: APIRoute,
        method: str,
        retry_after_seconds: int,
    ) -> None:
        self.app = app
        self.admission = admission
        self.pipeline = pipeline
        self.route = route
        self.path = route.path
        self.method = method
        self.retry_after = str(retry_after_seconds).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != self.method:
            await self.app(scope, receive, send)
            return
        if self.pipeline is not None and not self.pipeline.admits():
            CREATES_SHED_PIPELINE_BEHIND.inc()
            await self._refuse(scope, send, _PIPELINE_BEHIND)
            return
        try:
            self.admission.__enter__()
        except Overloaded:
            await self._refuse(scope, send, _AT_CAPACITY)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.__exit__(None, None, None)

    async def _refuse(self, scope: Scope, send: Send, why: tuple[str, str, str]) -> None:
        scope["route"] = self.route  # measured as the route it was meant for, though never routed
        state = scope.setdefault("state", {})
        state["shed"] = True  # counted by http_requests_shed_total; a log line each would flood the logs
        title, kind, detail = why
        body = orjson.dumps(
            problem_document(
                503,
                title,
                detail,
                kind=kind,
                instance=self.path,
                trace_id=str(state.get("trace_id", "")),
            )
        )
        headers = [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", self.retry_after),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
