"""POST /payments and GET /payments/{paymentId}: decode, call the use case, encode."""

from __future__ import annotations

import hashlib

import orjson
import structlog
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import Response

from payment_application.create_payment import CreatePaymentCommand, PaymentCreated
from payment_domain.ids import PaymentId
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentLine
from services.payment_service.api.presenter import payment_document
from services.payment_service.api.problems import (
    UNAUTHENTICATED,
    BadRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    problem_responses,
    read_problems,
    trace_id_of,
)
from services.payment_service.api.schemas import CreatePaymentRequest, PaymentDocument
from services.payment_service.api.security import require_read, require_write
from services.payment_service.api.strict_query import refuse_unknown_query
from services.payment_service.metrics import IDEMPOTENT_REPLAYS, PAYMENT_ORDERS_CREATED, PAYMENTS_CREATED

router = APIRouter()
log = structlog.get_logger(__name__)
MAX_IDEMPOTENCY_KEY = 255
# The largest valid body (100 orders, every id 255 characters, amounts at their maximum) is about 35 KiB.
MAX_BODY_BYTES = 64 * 1024


def idempotency_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not 1 <= len(raw) <= MAX_IDEMPOTENCY_KEY:
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    if not all(0x21 <= ord(c) <= 0x7E for c in raw):
        raise BadRequest("Idempotency-Key must be visible ASCII characters without spaces")
    return raw


def _request_hash(body: CreatePaymentRequest) -> str:
    canonical = orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def _command(body: CreatePaymentRequest, *, client_id: str, trace_id: str, key: str | None) -> CreatePaymentCommand:
    return CreatePaymentCommand(
        client_id=client_id,
        buyer_id=body.buyerId,
        order_id=body.orderId,
        total=Amount(body.totalAmount.value, Currency(body.totalAmount.currency)),
        lines=tuple(
            PaymentLine(seller_id=line.sellerId, amount=Amount(line.amount.value, Currency(line.amount.currency)))
            for line in body.paymentOrders
        ),
        trace_id=trace_id,
        idempotency_key=key,
        request_hash=_request_hash(body) if key is not None else "",
    )


async def read_json_body(request: Request) -> bytes:
    """The JSON body, refused unread when its type is not JSON or it is larger than any valid request can be."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType("the request body must be application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body must be at most {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"the request body must be at most {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse_body(request: Request) -> CreatePaymentRequest:
    """pydantic-core parses and validates the raw bytes in one pass (FastAPI's body parameter would decode with
    the stdlib json module first, then validate Python objects: about a tenth of this endpoint's CPU)."""
    raw = await read_json_body(request)
    try:
        return CreatePaymentRequest.model_validate_json(raw)
    except ValidationError as error:
        raise RequestValidationError(error.errors(include_url=False)) from None


@router.post(
    "/payments",
    status_code=202,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreatePaymentRequest"}}},
        },
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Retries with the same key and body replay the first response (kept 24 h); a new "
                "key does not make a new payment for an order that has one",
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
            }
        ],
        "security": [{"bearerAuth": ["payment:write"]}],
    },
    responses={
        202: {
            "model": PaymentDocument,
            "description": "Accepted: the payment and its orders are recorded; charging happens asynchronously",
        },
        **problem_responses(
            {
                400: "Unreadable JSON, no body, or a malformed Idempotency-Key; nothing was written",
                401: UNAUTHENTICATED,
                403: "The token's client lacks the role payment:write",
                409: "The order already has a payment from this client (Location names it; nothing was written), "
                "or a request with this Idempotency-Key is still in flight",
                413: f"The body is larger than {MAX_BODY_BYTES} bytes (no valid request is); nothing was written",
                415: "The body is not application/json; nothing was written",
                422: "Invalid request (every bad field listed in `errors`), or Idempotency-Key reused with a "
                "different body; nothing was written",
                503: "A dependency is unavailable, the service is at capacity (type `overloaded`), or the payments "
                "accepted earlier still wait for the PSP (type `pipeline-behind`); the last two are answered before "
                "the token is checked. Nothing was written: send the same request again after Retry-After",
                504: "A statement timed out (nothing was written), or the database stopped answering after the "
                "payment was sent (outcome unknown: send the same request again)",
            }
        ),
    },
)
async def create_payment(request: Request) -> Response:
    """The hot path: the caller and the Idempotency-Key are read here rather than through FastAPI's dependency
    injection (about a tenth of this endpoint's CPU); the OpenAPI document still declares both."""
    principal = await require_write(request)
    refuse_unknown_query(request)
    body = await _parse_body(request)
    key = idempotency_key(request.headers.get("idempotency-key"))
    command = _command(body, client_id=principal.client_id, trace_id=trace_id_of(request), key=key)
    container = request.app.state.container
    outcome = await container.create_payment(command)
    if isinstance(outcome, PaymentCreated):
        orders = len(outcome.payment.payment_orders)
        if container.pipeline is not None:
            container.pipeline.accepted(orders)
        PAYMENTS_CREATED.inc()
        PAYMENT_ORDERS_CREATED.inc(orders)
        payment_id = outcome.payment.public_id
        log.info(
            "payment_created",
            payment_id=payment_id,
            payment_order_ids=[o.public_id for o in outcome.payment.payment_orders],
            client_id=principal.client_id,
        )
        headers = {"Location": f"/payments/{payment_id}"}
    else:
        IDEMPOTENT_REPLAYS.inc()
        payment_id = PaymentId(outcome.payment_id).public
        log.info("payment_replayed", payment_id=payment_id, client_id=principal.client_id)
        headers = {"Location": f"/payments/{payment_id}", "Idempotent-Replayed": "true"}
    return Response(outcome.body, status_code=outcome.status_code, media_type="application/json", headers=headers)


@router.get(
    "/payments/{payment_id}",
    response_model=PaymentDocument,
    responses=read_problems(role="payment:read", missing="No such payment"),
    dependencies=[Depends(refuse_unknown_query), Depends(require_read)],
)
async def get_payment(payment_id: str, request: Request) -> Response:
    try:
        parsed = PaymentId.from_public(payment_id)
    except ValueError:
        raise HTTPException(404, f"payment {payment_id} not found") from None
    container = request.app.state.container
    payment = await container.get_payment(parsed)
    if payment is None:
        raise HTTPException(404, f"payment {payment_id} not found")
    refunded = await container.refunded_by_order(parsed)
    return Response(orjson.dumps(payment_document(payment, refunded)), media_type="application/json")
