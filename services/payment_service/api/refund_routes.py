"""POST /payments/{paymentId}/orders/{paymentOrderId}/refunds and GET .../refunds/{refundId}: decode, call the
use case, encode. Refunds need an Idempotency-Key: a refund is money leaving, and a retry must never be a second
one. The same key and body answer the refund already made (same id, same status code); another body is refused."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import Response

from payment_application.errors import IdempotencyKeyMismatch
from payment_application.ports.refunds import RefundKey
from payment_application.refund_payment_order import PaymentOrderNotFound, RefundCommand
from payment_domain.events import iso_utc
from payment_domain.ids import PaymentId, PaymentOrderId, RefundId
from payment_domain.money import Amount, Currency
from payment_domain.refund import Refund, RefundRefused
from services.payment_service.api.problems import (
    UNAUTHENTICATED,
    UNAVAILABLE,
    BadRequest,
    problem_responses,
    read_problems,
    trace_id_of,
)
from services.payment_service.api.routes import MAX_BODY_BYTES, idempotency_key, read_json_body
from services.payment_service.api.schemas import RefundDocument, RefundRequest
from services.payment_service.api.security import require_read, require_write
from services.payment_service.api.strict_query import refuse_unknown_query
from services.payment_service.metrics import REFUND_REQUESTS

router = APIRouter(dependencies=[Depends(refuse_unknown_query)])
log = structlog.get_logger(__name__)
ACCEPTED = 202


def refund_document(refund: Refund, *, refunded_so_far: int) -> dict[str, Any]:
    currency = refund.amount.currency.value
    return {
        "refundId": refund.public_id,
        "paymentId": refund.payment_id.public,
        "paymentOrderId": refund.payment_order_id.public,
        "sellerId": refund.seller_id,
        "amount": {"value": refund.amount.value, "currency": currency},
        "status": refund.status.value,
        "paymentOrderRefunded": {"value": refunded_so_far, "currency": currency},
        "createdAt": iso_utc(refund.created_at),
        "updatedAt": iso_utc(refund.updated_at),
    }


def _ids(payment_id: str, payment_order_id: str) -> tuple[PaymentId, PaymentOrderId]:
    try:
        return PaymentId.from_public(payment_id), PaymentOrderId.from_public(payment_order_id)
    except ValueError:
        raise HTTPException(404, f"payment order {payment_order_id} of {payment_id} not found") from None


def _request_hash(payment_id: str, payment_order_id: str, body: RefundRequest) -> str:
    canonical = orjson.dumps(
        {"paymentId": payment_id, "paymentOrderId": payment_order_id, **body.model_dump(mode="json")},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()


async def _parse_body(request: Request) -> RefundRequest:
    try:
        return RefundRequest.model_validate_json(await read_json_body(request))
    except ValidationError as error:
        raise RequestValidationError(error.errors(include_url=False)) from None


@router.post(
    "/payments/{payment_id}/orders/{payment_order_id}/refunds",
    status_code=ACCEPTED,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RefundRequest"}}},
        },
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": True,
                "description": "A retry with the same key and body answers the refund already made",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        ],
        "security": [{"bearerAuth": ["payment:write"]}],
    },
    responses={
        202: {
            "model": RefundDocument,
            "description": "Accepted: the refund is recorded; the PSP pays it back asynchronously",
        },
        **problem_responses(
            {
                400: "No Idempotency-Key, a malformed one, or unreadable JSON; nothing was written",
                401: UNAUTHENTICATED,
                403: "The token's client lacks the role payment:write",
                404: "No such payment order under that payment",
                409: "The order is not SUCCESSFUL_FINAL, or the refund exceeds what is left to refund",
                413: f"The body is larger than {MAX_BODY_BYTES} bytes; nothing was written",
                415: "The body is not application/json; nothing was written",
                422: "Invalid amount or currency, or Idempotency-Key reused with a different body",
                503: UNAVAILABLE,
                504: "The database did not answer in time",
            }
        ),
    },
)
async def create_refund(payment_id: str, payment_order_id: str, request: Request) -> Response:
    principal = await require_write(request)
    body = await _parse_body(request)
    key = idempotency_key(request.headers.get("idempotency-key"))
    if key is None:
        raise BadRequest("a refund needs an Idempotency-Key")
    parsed_payment, parsed_order = _ids(payment_id, payment_order_id)
    container = request.app.state.container
    try:
        outcome = await container.refund_payment_order(
            RefundCommand(
                payment_id=parsed_payment,
                payment_order_id=parsed_order,
                amount=Amount(body.amount.value, Currency(body.amount.currency)),
                key=RefundKey(principal.client_id, key, _request_hash(payment_id, payment_order_id, body)),
                trace_id=trace_id_of(request),
            )
        )
    except PaymentOrderNotFound:
        raise HTTPException(404, f"payment order {payment_order_id} of {payment_id} not found") from None
    except RefundRefused as refused:
        REFUND_REQUESTS.labels(refused.code).inc()
        raise
    except IdempotencyKeyMismatch:
        REFUND_REQUESTS.labels("idempotency-key-mismatch").inc()
        raise
    refund = outcome.refund
    headers = {"Location": f"/payments/{payment_id}/orders/{payment_order_id}/refunds/{refund.public_id}"}
    REFUND_REQUESTS.labels("replayed" if outcome.replayed else "accepted").inc()
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    else:
        log.info("refund_requested", refund_id=refund.public_id, payment_order_id=payment_order_id)
    refunded = (await container.refunded_by_order(parsed_payment)).get(parsed_order, 0)
    document = refund_document(refund, refunded_so_far=refunded)
    return Response(orjson.dumps(document), status_code=ACCEPTED, media_type="application/json", headers=headers)


@router.get(
    "/payments/{payment_id}/orders/{payment_order_id}/refunds/{refund_id}",
    response_model=RefundDocument,
    responses=read_problems(role="payment:read", missing="No such refund of that payment order"),
    dependencies=[Depends(require_read)],
)
async def get_refund(payment_id: str, payment_order_id: str, refund_id: str, request: Request) -> Response:
    parsed_payment, parsed_order = _ids(payment_id, payment_order_id)
    try:
        parsed_refund = RefundId.from_public(refund_id)
    except ValueError:
        raise HTTPException(404, f"refund {refund_id} not found") from None
    container = request.app.state.container
    refund = await container.get_refund(parsed_order, parsed_refund)
    if refund is None or refund.payment_id != parsed_payment:
        raise HTTPException(404, f"refund {refund_id} not found")
    refunded = (await container.refunded_by_order(parsed_payment)).get(parsed_order, 0)
    return Response(orjson.dumps(refund_document(refund, refunded_so_far=refunded)), media_type="application/json")
