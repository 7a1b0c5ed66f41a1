"""Payment invariants, the aggregate factory, money and identifiers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payment_domain.errors import InvalidPayment, UnsupportedCurrency
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.money import Amount, Currency
from payment_domain.payment import MAX_LINES, MAX_TEXT, PaymentLine, create_payment, validate_request
from payment_domain.status import PaymentOrderStatus, PaymentStatus

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
EUR = Currency.EUR


def eur(value: int) -> Amount:
    return Amount(value, EUR)


def line(seller: str = "seller-1", value: int = 1000, currency: Currency = EUR) -> PaymentLine:
    return PaymentLine(seller_id=seller, amount=Amount(value, currency))


def violations_of(
    lines: Sequence[PaymentLine],
    *,
    total: Amount | None = None,
    buyer_id: str = "buyer-1",
    order_id: str = "order-1",
) -> list[str]:
    """The fields validate_request rejects, in the order it reports them (empty when it accepts)."""
    if total is None:
        total = eur(sum(ln.amount.value for ln in lines))
    try:
        validate_request(buyer_id, order_id, total, lines)
    except InvalidPayment as error:
        assert error.violations, "InvalidPayment must never be raised without a violation"
        return [v.field for v in error.violations]
    return []


# --- validate_request -----------------------------------------------------------------------------


def test_a_well_formed_two_seller_request_is_valid() -> None:
    assert violations_of([line("s1", 1500), line("s2", 2500)], total=eur(4000)) == []


@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
@pytest.mark.parametrize("field", ["buyerId", "orderId"])
def test_a_blank_buyer_or_order_id_is_rejected(field: str, blank: str) -> None:
    buyer_id, order_id = (blank, "order-1") if field == "buyerId" else ("buyer-1", blank)
    assert violations_of([line()], buyer_id=buyer_id, order_id=order_id) == [field]


@pytest.mark.parametrize("field", ["buyerId", "orderId"])
def test_a_buyer_or_order_id_longer_than_255_characters_is_rejected(field: str) -> None:
    too_long = "x" * (MAX_TEXT + 1)
    buyer_id, order_id = (too_long, "order-1") if field == "buyerId" else ("buyer-1", too_long)
    assert violations_of([line()], buyer_id=buyer_id, order_id=order_id) == [field]


def test_ids_of_exactly_255_characters_are_accepted() -> None:
    longest = "x" * MAX_TEXT
    assert violations_of([line(seller=longest)], buyer_id=longest, order_id=longest) == []


def test_a_zero_total_is_rejected() -> None:
    assert "totalAmount.value" in violations_of([line(value=1)], total=eur(0))


def test_a_request_without_lines_is_rejected() -> None:
    assert violations_of([], total=eur(1000)) == ["paymentOrders"]


def test_more_than_the_maximum_number_of_lines_is_rejected() -> None:
    assert violations_of([line(f"s{i}", 1) for i in range(MAX_LINES + 1)]) == ["paymentOrders"]


def test_exactly_the_maximum_number_of_lines_is_accepted() -> None:
    assert violations_of([line(f"s{i}", 1) for i in range(MAX_LINES)]) == []


@pytest.mark.parametrize("seller", ["", "   ", "x" * (MAX_TEXT + 1)])
def test_a_blank_or_overlong_seller_id_is_rejected_at_its_line(seller: str) -> None:
    assert violations_of([line("s0"), line(seller), line("s2")]) == ["paymentOrders[1].sellerId"]


def test_a_zero_line_amount_is_rejected_at_its_line() -> None:
    fields = violations_of([line("s0", 1000), line("s1", 0)], total=eur(1000))
    assert fields == ["paymentOrders[1].amount.value"]


def test_a_line_in_another_currency_than_the_total_is_rejected() -> None:
    fields = violations_of([line("s0", 500), line("s1", 500, Currency.USD)], total=eur(1000))
    assert fields == ["paymentOrders[1].amount.currency"]


def test_the_currency_violation_names_both_currencies() -> None:
    with pytest.raises(InvalidPayment) as raised:
        validate_request("b", "o", eur(1000), [line("s0", 1000, Currency.GBP)])
    (violation,) = raised.value.violations
    assert "EUR" in violation.message
    assert "GBP" in violation.message


def test_a_total_above_the_sum_of_the_lines_is_rejected() -> None:
    assert violations_of([line("s0", 600), line("s1", 400)], total=eur(1001)) == ["totalAmount.value"]


def test_a_total_below_the_sum_of_the_lines_is_rejected() -> None:
    assert violations_of([line("s0", 600), line("s1", 400)], total=eur(999)) == ["totalAmount.value"]


def test_the_sum_violation_reports_the_expected_and_the_given_amount() -> None:
    with pytest.raises(InvalidPayment) as raised:
        validate_request("b", "o", eur(999), [line("s0", 600), line("s1", 400)])
    (violation,) = raised.value.violations
    assert "1000" in violation.message
    assert "999" in violation.message


def test_every_violation_is_reported_at_once() -> None:
    lines = [line("", 0), line("s1", 100, Currency.USD), line("s2", 100)]
    fields = violations_of(lines, total=eur(0), buyer_id=" ", order_id="o" * 300)
    assert fields == [
        "buyerId",
        "orderId",
        "totalAmount.value",
        "paymentOrders[0].sellerId",
        "paymentOrders[0].amount.value",
        "paymentOrders[1].amount.currency",
    ]


def test_invalid_payment_carries_a_stable_code_and_a_readable_message() -> None:
    with pytest.raises(InvalidPayment) as raised:
        validate_request("", "o", eur(1), [line(value=1)])
    assert raised.value.code == "invalid_payment"
    assert str(raised.value) == "buyerId: must not be blank"


_positive_amounts = st.lists(st.integers(min_value=1, max_value=10**12), min_size=1, max_size=MAX_LINES)


@given(amounts=_positive_amounts, currency=st.sampled_from(Currency))
def test_positive_lines_in_one_currency_summing_to_the_total_are_valid(
    amounts: list[int],
    currency: Currency,
) -> None:
    lines = [PaymentLine(f"seller-{i}", Amount(v, currency)) for i, v in enumerate(amounts)]
    validate_request("buyer", "order", Amount(sum(amounts), currency), lines)


@given(amounts=_positive_amounts, total=st.integers(min_value=0, max_value=10**14))
def test_a_total_that_differs_from_the_sum_of_the_lines_is_rejected(amounts: list[int], total: int) -> None:
    if total == sum(amounts):
        total += 1
    lines = [PaymentLine(f"seller-{i}", eur(v)) for i, v in enumerate(amounts)]
    assert "totalAmount.value" in violations_of(lines, total=eur(total))


# --- create_payment -------------------------------------------------------------------------------


def test_create_payment_builds_one_initiated_pending_order_per_line_in_line_order() -> None:
    lines = [line("seller-a", 100), line("seller-b", 250), line("seller-c", 650)]
    order_ids = [PaymentOrderId(7), PaymentOrderId(3), PaymentOrderId(9)]
    payment = create_payment(
        payment_id=PaymentId(42),
        payment_order_ids=order_ids,
        buyer_id="buyer-1",
        order_id="order-1",
        total=eur(1000),
        lines=lines,
        now=NOW,
    )
    assert payment.payment_id == PaymentId(42)
    assert payment.public_id == "payment-42"
    assert (payment.buyer_id, payment.order_id, payment.total_amount) == ("buyer-1", "order-1", eur(1000))
    assert payment.status is PaymentStatus.INITIATED
    assert payment.created_at == NOW
    assert [o.payment_order_id for o in payment.payment_orders] == order_ids
    assert [o.seller_id for o in payment.payment_orders] == ["seller-a", "seller-b", "seller-c"]
    assert [o.amount for o in payment.payment_orders] == [eur(100), eur(250), eur(650)]
    for order in payment.payment_orders:
        assert order.payment_id == PaymentId(42)
        assert order.status is PaymentOrderStatus.INITIATED_PENDING
        assert (order.created_at, order.updated_at) == (NOW, NOW)
        assert (order.retry_count, order.retry_reason, order.last_error_message) == (0, None, None)
    assert payment.rolled_up() is PaymentStatus.INITIATED


def test_create_payment_validates_before_building() -> None:
    with pytest.raises(InvalidPayment):
        create_payment(
            payment_id=PaymentId(1),
            payment_order_ids=[PaymentOrderId(1)],
            buyer_id="",
            order_id="o",
            total=eur(100),
            lines=[line(value=100)],
            now=NOW,
        )


def test_create_payment_needs_exactly_one_order_id_per_line() -> None:
    with pytest.raises(ValueError, match="one payment order id per line"):
        create_payment(
            payment_id=PaymentId(1),
            payment_order_ids=[PaymentOrderId(1)],
            buyer_id="b",
            order_id="o",
            total=eur(200),
            lines=[line("s1", 100), line("s2", 100)],
            now=NOW,
        )


# --- money ----------------------------------------------------------------------------------------


def test_an_amount_may_be_zero() -> None:
    assert Amount(0, EUR).value == 0


def test_an_amount_rejects_negative_values() -> None:
    with pytest.raises(ValueError, match="negative"):
        Amount(-1, EUR)


@pytest.mark.parametrize("value", [10.0, 0.5, True, False, "100", None])
def test_an_amount_rejects_anything_but_an_int(value: object) -> None:
    with pytest.raises(TypeError, match="minor units"):
        Amount(value, EUR)  # type: ignore[arg-type]


@pytest.mark.parametrize("code", ["EUR", "USD", "GBP"])
def test_a_supported_currency_parses_to_itself(code: str) -> None:
    assert Currency.parse(code).value == code


@pytest.mark.parametrize("code", ["JPY", "eur", "", "EURO"])
def test_an_unsupported_currency_is_rejected_naming_the_allowed_set(code: str) -> None:
    with pytest.raises(UnsupportedCurrency) as raised:
        Currency.parse(code)
    assert raised.value.code == "unsupported_currency"
    message = str(raised.value)
    assert repr(code) in message
    assert "EUR, USD, GBP" in message


# --- identifiers ----------------------------------------------------------------------------------


def test_public_ids_carry_the_original_prefixes() -> None:
    assert PaymentId(12).public == "payment-12"
    assert PaymentOrderId(34).public == "paymentorder-34"
    assert str(PaymentId(12)) == "12"


@given(value=st.integers(min_value=1, max_value=2**63 - 1))
def test_public_ids_round_trip(value: int) -> None:
    assert PaymentId.from_public(PaymentId(value).public) == PaymentId(value)
    assert PaymentOrderId.from_public(PaymentOrderId(value).public) == PaymentOrderId(value)


@pytest.mark.parametrize(
    "text",
    [
        "payment-0",
        "payment-01",
        "paymentorder-1",
        "payment-",
        "x-1",
        "payment--1",
        "payment-1 ",
        "1",
        "payment-+1",
    ],
)
def test_from_public_rejects_malformed_payment_ids(text: str) -> None:
    with pytest.raises(ValueError):
        PaymentId.from_public(text)


@pytest.mark.parametrize("text", ["payment-1", "paymentorder-0", "paymentorder-", "paymentorder--1"])
def test_from_public_rejects_malformed_payment_order_ids(text: str) -> None:
    with pytest.raises(ValueError):
        PaymentOrderId.from_public(text)


@pytest.mark.parametrize("digits", ["\u0661", "\uff11", "\u0967\u0968"])
def test_from_public_rejects_non_ascii_digits(digits: str) -> None:
    """Arabic-Indic, full-width and Devanagari digits pass isdigit() and int() but are not our wire form."""
    with pytest.raises(ValueError):
        PaymentId.from_public(f"payment-{digits}")


BIGINT_MAX = 2**63 - 1
IdClass = type[PaymentId] | type[PaymentOrderId]


@pytest.mark.parametrize("cls", [PaymentId, PaymentOrderId])
def test_the_largest_id_the_database_can_hold_is_accepted(cls: IdClass) -> None:
    assert cls.from_public(f"{cls.prefix}-{BIGINT_MAX}").value == BIGINT_MAX


@pytest.mark.parametrize("cls", [PaymentId, PaymentOrderId])
def test_an_id_beyond_the_database_bigint_range_is_rejected(cls: IdClass) -> None:
    """A GET for such an id must be a 404; unbounded, it reached Postgres and came back as a 500."""
    with pytest.raises(ValueError):
        cls(BIGINT_MAX + 1)
    with pytest.raises(ValueError):
        cls.from_public(f"{cls.prefix}-{BIGINT_MAX + 1}")
    with pytest.raises(ValueError):
        cls.from_public(f"{cls.prefix}-{10**30}")


@pytest.mark.parametrize("value", [0, -1, True, 1.0])
def test_an_id_must_be_a_positive_int(value: object) -> None:
    with pytest.raises(ValueError):
        PaymentId(value)  # type: ignore[arg-type]
