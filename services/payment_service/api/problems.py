"""RFC 9457 problem responses, one mapping from every failure a caller can cause to its status code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from payment_application.errors import (
    DependencyTimeout,
    DependencyUnavailable,
    IdempotencyKeyInFlight,
    IdempotencyKeyMismatch,
    OrderAlreadyHasPayment,
    WriteOutcomeUnknown,
)
from payment_domain.errors import FieldViolation, InvalidPayment
from payment_domain.refund import RefundExceedsCharge, RefundRefused
from payment_infrastructure.auth.errors import AuthenticationError, AuthorizationError, JwksUnavailableError
from services.payment_service.api.security import www_authenticate

PROBLEM_JSON = "application/problem+json"
log = structlog.get_logger(__name__)


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """The body of every 4xx and 5xx answer (published in OpenAPI; `problem()` writes it)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    traceId: str
    errors: list[FieldError] | None = None  # validation problems: one per bad field
    paymentId: str | None = None  # order-already-has-payment: the payment the order has
    orderId: str | None = None


def problem_responses(descriptions: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these statuses, each a problem+json document."""
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {status: {"description": text, "content": content} for status, text in descriptions.items()}


UNAUTHENTICATED = "No bearer token, or one that is invalid, expired or not signed by the trusted issuer"
UNAVAILABLE = "The token issuer's keys or a database cannot be reached; nothing was written. Retry after Retry-After"


def read_problems(*, role: str, missing: str) -> dict[int | str, dict[str, Any]]:
    """The problems of a GET of one resource: `missing` describes its 404."""
    return problem_responses(
        {
            401: UNAUTHENTICATED,
            403: f"The token's client lacks the role {role}",
            404: missing,
            503: UNAVAILABLE,
            504: "The database did not answer in time",
        }
    )


class BadRequest(Exception):
    """A malformed request the schema cannot even describe (bad header, unreadable JSON)."""

    status = 400
    title = "Bad request"
    kind = "bad-request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class PayloadTooLarge(BadRequest):
    status = 413
    title = "Payload too large"
    kind = "payload-too-large"


class UnsupportedMediaType(BadRequest):
    status = 415
    title = "Unsupported media type"
    kind = "unsupported-media-type"


def trace_id_of(request: Request) -> str:
    return str(getattr(request.state, "trace_id", ""))


def problem_document(
    status: int, title: str, detail: str, *, kind: str, instance: str, trace_id: str
) -> dict[str, Any]:
    return {
        "type": f"https://payments.example/problems/{kind}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "traceId": trace_id,
    }


def problem(
    request: Request,
    status: int,
    title: str,
    detail: str,
    *,
    kind: str,
    errors: Sequence[FieldViolation] = (),
    headers: dict[str, str] | None = None,
    extensions: dict[str, Any] | None = None,
) -> Response:
    body = problem_document(status, title, detail, kind=kind, instance=request.url.path, trace_id=trace_id_of(request))
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    body.update(extensions or {})
    all_headers = {"X-Trace-Id": body["traceId"], **(headers or {})}
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=all_headers)


def _location(loc: Sequence[Any]) -> str:
    parts = [p for p in loc if p != "body"]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def install_problem_handlers(app: FastAPI, *, retry_after_seconds: int) -> None:
    retry_after = {"Retry-After": str(retry_after_seconds)}

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return problem(request, 400, "Malformed JSON", "the request body is not valid JSON", kind="malformed-json")
        if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors):
            return problem(request, 400, "Missing body", "a JSON request body is required", kind="missing-body")
        violations = [FieldViolation(_location(e.get("loc", ())), str(e.get("msg", "invalid"))) for e in errors]
        return problem(
            request,
            422,
            "Invalid payment request",
            f"{len(violations)} field(s) are invalid",
            kind="validation",
            errors=violations,
        )

    @app.exception_handler(InvalidPayment)
    async def _invalid(request: Request, exc: InvalidPayment) -> Response:
        return problem(
            request,
            422,
            "Invalid payment request",
            f"{len(exc.violations)} field(s) are invalid",
            kind="validation",
            errors=exc.violations,
        )

    @app.exception_handler(RefundRefused)
    async def _refund_refused(request: Request, exc: RefundRefused) -> Response:
        extensions = {"remaining": exc.remaining} if isinstance(exc, RefundExceedsCharge) else None
        return problem(request, exc.status, exc.title, str(exc), kind=exc.code, extensions=extensions)

    @app.exception_handler(BadRequest)
    async def _bad_request(request: Request, exc: BadRequest) -> Response:
        return problem(request, exc.status, exc.title, exc.detail, kind=exc.kind)

    @app.exception_handler(AuthenticationError)
    async def _unauthenticated(request: Request, exc: AuthenticationError) -> Response:
        return problem(
            request,
            401,
            "Unauthorized",
            exc.description,
            kind="unauthorized",
            headers={"WWW-Authenticate": www_authenticate(exc)},
        )

    @app.exception_handler(AuthorizationError)
    async def _forbidden(request: Request, exc: AuthorizationError) -> Response:
        return problem(
            request, 403, "Forbidden", f"this operation needs the role {exc.required_role}", kind="forbidden"
        )

    @app.exception_handler(JwksUnavailableError)
    async def _jwks_down(request: Request, exc: JwksUnavailableError) -> Response:
        log.warning("jwks_unavailable", detail=exc.description)
        return problem(
            request,
            503,
            "Service unavailable",
            "cannot verify tokens right now",
            kind="unavailable",
            headers=retry_after,
        )

    @app.exception_handler(IdempotencyKeyMismatch)
    async def _mismatch(request: Request, exc: IdempotencyKeyMismatch) -> Response:
        return problem(request, 422, "Idempotency-Key reused", str(exc), kind="idempotency-key-mismatch")

    @app.exception_handler(IdempotencyKeyInFlight)
    async def _in_flight(request: Request, exc: IdempotencyKeyInFlight) -> Response:
        return problem(
            request, 409, "Request in progress", str(exc), kind="idempotency-key-in-use", headers=retry_after
        )

    @app.exception_handler(DependencyUnavailable)
    async def _unavailable(request: Request, exc: DependencyUnavailable) -> Response:
        log.warning("dependency_unavailable", dependency=exc.dependency, detail=exc.detail)
        return problem(
            request,
            503,
            "Service unavailable",
            f"{exc.dependency} is unavailable; nothing was written, retry later",
            kind="unavailable",
            headers=retry_after,
        )

    @app.exception_handler(WriteOutcomeUnknown)
    async def _outcome_unknown(request: Request, exc: WriteOutcomeUnknown) -> Response:
        # Retryable like a 503, but never "nothing was written": the retry is safe only because the first
        # attempt's payment, if it exists, is recognised by its key or its order.
        log.warning("write_outcome_unknown", dependency=exc.dependency, detail=exc.detail)
        return problem(
            request,
            504,
            "Outcome unknown",
            f"{exc.dependency} stopped answering after the payment was sent: it may have been created. Send the same "
            "request again (with the same Idempotency-Key, or the same orderId if it had no key): a payment it "
            "created is answered, never made twice (its response replayed, or 409 with its Location)",
            kind="outcome-unknown",
            headers=retry_after,
        )

    @app.exception_handler(OrderAlreadyHasPayment)
    async def _order_paid(request: Request, exc: OrderAlreadyHasPayment) -> Response:
        payment_id = exc.payment_id.public
        return problem(
            request,
            409,
            "Order already has a payment",
            f"order {exc.order_id} already has payment {payment_id}; no second payment was created",
            kind="order-already-has-payment",
            headers={"Location": f"/payments/{payment_id}"},
            extensions={"paymentId": payment_id, "orderId": exc.order_id},
        )

    @app.exception_handler(DependencyTimeout)
    async def _timeout(request: Request, exc: DependencyTimeout) -> Response:
        log.warning("dependency_timeout", dependency=exc.dependency, detail=exc.detail)
        return problem(request, 504, "Timed out", f"{exc.dependency} timed out; nothing was written", kind="timeout")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        titles = {404: "Not found", 405: "Method not allowed"}
        return problem(
            request,
            exc.status_code,
            titles.get(exc.status_code, "Error"),
            str(exc.detail),
            kind=f"http-{exc.status_code}",
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled_error", error_class=type(exc).__name__)
        return problem(request, 500, "Internal error", "an unexpected error occurred", kind="internal")
