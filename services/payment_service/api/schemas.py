"""Request schema of POST /payments and the payment document it answers with (the original's field names).
Per-field rules live here, so one response lists every bad field; cross-field rules (sum, one currency) are the
domain's."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from payment_domain.status import PaymentOrderStatus, PaymentStatus

MAX_MINOR_UNITS = 10**15

# Ids are printable text: no control characters (NUL cannot be stored; CR/LF forge log lines and headers) and no
# invisible format characters (bidi overrides, zero-width spaces make two ids look alike). In a syntax that
# pydantic-core, Python's re and JSON Schema read alike.
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff]*$"
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255, pattern=PRINTABLE)]


class AmountIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    value: Annotated[int, Field(ge=1, le=MAX_MINOR_UNITS, description="minor units (cents), > 0")]
    currency: Literal["EUR", "USD", "GBP"]


class PaymentOrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    sellerId: Text
    amount: AmountIn


class CreatePaymentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    buyerId: Text
    orderId: Text
    totalAmount: AmountIn
    paymentOrders: Annotated[list[PaymentOrderIn], Field(min_length=1, max_length=100)]


class RefundRequest(BaseModel):
    """POST .../refunds: the amount to give back, in the order's currency (the create API's money shape)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    amount: AmountIn


# Response documents (published in OpenAPI; the presenter writes the same shape).


class AmountOut(BaseModel):
    value: int
    currency: str


class PaymentOrderDocument(BaseModel):
    paymentOrderId: str
    sellerId: str
    amount: AmountOut
    status: PaymentOrderStatus
    retryCount: int
    updatedAt: str


class PaymentDocument(BaseModel):
    id: str
    paymentId: str
    buyerId: str
    orderId: str
    totalAmount: AmountOut
    status: PaymentStatus
    createdAt: str
    paymentOrders: list[PaymentOrderDocument]


class RefundDocument(BaseModel):
    refundId: str
    paymentId: str
    paymentOrderId: str
    sellerId: str
    amount: AmountOut
    status: str
    paymentOrderRefunded: AmountOut  # every refund of the order so far, this one included
    createdAt: str
    updatedAt: str
