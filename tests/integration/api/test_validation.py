"""Every validation rule answers 422 (or 400 for unreadable input) as a problem listing the bad fields, and
writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.payment_api import RunningApi
from tests.integration.api.helpers import bearer, row_counts, valid_payment

LINE = {"sellerId": "SELLER-1", "amount": {"value": 100, "currency": "EUR"}}


def one_line(value: int = 100, currency: str = "EUR", seller: str = "SELLER-1") -> list[dict[str, Any]]:
    return [{"sellerId": seller, "amount": {"value": value, "currency": currency}}]


CASES: list[tuple[str, dict[str, Any], str]] = [
    ("blank buyer", valid_payment(buyerId="  "), "buyerId"),
    ("missing buyer", {k: v for k, v in valid_payment().items() if k != "buyerId"}, "buyerId"),
    ("empty order id", valid_payment(orderId=""), "orderId"),
    ("order id too long", valid_payment(orderId="x" * 256), "orderId"),
    ("missing total", {k: v for k, v in valid_payment().items() if k != "totalAmount"}, "totalAmount"),
    ("zero total", valid_payment(totalAmount={"value": 0, "currency": "EUR"}, paymentOrders=one_line(0)), "value"),
    ("negative total", valid_payment(totalAmount={"value": -5, "currency": "EUR"}), "totalAmount.value"),
    ("fractional amount", valid_payment(totalAmount={"value": 1.5, "currency": "EUR"}), "totalAmount.value"),
    ("amount as string", valid_payment(totalAmount={"value": "100", "currency": "EUR"}), "totalAmount.value"),
    ("unsupported currency", valid_payment(totalAmount={"value": 100, "currency": "JPY"}), "totalAmount.currency"),
    ("no lines", valid_payment(paymentOrders=[]), "paymentOrders"),
    (
        "blank seller",
        valid_payment(totalAmount={"value": 100, "currency": "EUR"}, paymentOrders=one_line(seller=" ")),
        "paymentOrders[0].sellerId",
    ),
    (
        "zero line",
        valid_payment(totalAmount={"value": 100, "currency": "EUR"}, paymentOrders=[LINE, *one_line(0)]),
        "paymentOrders[1].amount.value",
    ),
    (
        "mixed currencies",
        valid_payment(totalAmount={"value": 200, "currency": "EUR"}, paymentOrders=[LINE, *one_line(100, "USD")]),
        "paymentOrders[1].amount.currency",
    ),
    (
        "sum mismatch",
        valid_payment(totalAmount={"value": 101, "currency": "EUR"}, paymentOrders=one_line(100)),
        "totalAmount.value",
    ),
    (
        "sum too small",
        valid_payment(totalAmount={"value": 100, "currency": "EUR"}, paymentOrders=[LINE, LINE]),
        "totalAmount.value",
    ),
    ("unknown field", valid_payment(note="hi"), "note"),
    (
        "too many lines",
        valid_payment(totalAmount={"value": 101, "currency": "EUR"}, paymentOrders=[LINE] * 101),
        "paymentOrders",
    ),
    ("amount beyond range", valid_payment(totalAmount={"value": 10**16, "currency": "EUR"}), "totalAmount.value"),
]


@pytest.mark.parametrize(("case", "body", "field"), CASES, ids=[c[0] for c in CASES])
async def test_invalid_payment_is_rejected_with_422_naming_the_field(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str, case: str, body: dict[str, Any], field: str
) -> None:
    before = await row_counts(database_url)
    async with payment_api.client() as client:
        response = await client.post("/payments", json=body, headers=bearer(tokens["order-service"]))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422 and problem["traceId"]
    assert any(field in error["field"] for error in problem["errors"]), problem["errors"]
    assert await row_counts(database_url) == before


async def test_every_bad_field_is_listed_in_one_response(payment_api: RunningApi, tokens: dict[str, str]) -> None:
    body = {
        "buyerId": "",
        "orderId": "",
        "totalAmount": {"value": -1, "currency": "XXX"},
        "paymentOrders": [{"sellerId": "", "amount": {"value": 0, "currency": "EUR"}}],
    }
    async with payment_api.client() as client:
        response = await client.post("/payments", json=body, headers=bearer(tokens["order-service"]))
    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["errors"]}
    assert {
        "buyerId",
        "orderId",
        "totalAmount.value",
        "totalAmount.currency",
        "paymentOrders[0].sellerId",
        "paymentOrders[0].amount.value",
    } <= fields


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2", b"\xff\xfe"])
async def test_malformed_json_is_400(
    payment_api: RunningApi, tokens: dict[str, str], database_url: str, raw: bytes
) -> None:
    before = await row_counts(database_url)
    async with payment_api.client() as client:
        response = await client.post(
            "/payments", content=raw, headers={**bearer(tokens["order-service"]), "Content-Type": "application/json"}
        )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert await row_counts(database_url) == before


async def test_body_that_is_not_an_object_is_422(payment_api: RunningApi, tokens: dict[str, str]) -> None:
    async with payment_api.client() as client:
        response = await client.post("/payments", json=[1, 2], headers=bearer(tokens["order-service"]))
    assert response.status_code == 422
