"""The money book's domain: accounts, balanced entries, the commission rule and the charge posting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.ledger import (
    BPS_PER_UNIT,
    PLATFORM,
    Account,
    AccountKind,
    CommissionSchedule,
    EntryKind,
    InvalidCommission,
    JournalEntry,
    Posting,
    Side,
    UnbalancedEntry,
    charge_entry,
    commission_of,
    net_by_currency,
    posts_charge,
)
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.status import PaymentOrderStatus

EUR, USD = Currency.EUR, Currency.USD
AT = datetime(2026, 3, 1, tzinfo=UTC)


def an_order(amount: int, *, seller: str = "seller-1", currency: Currency = EUR, order_id: int = 41) -> PaymentOrder:
    return PaymentOrder(
        payment_order_id=PaymentOrderId(order_id),
        payment_id=PaymentId(7),
        seller_id=seller,
        amount=Amount(amount, currency),
        status=PaymentOrderStatus.SUCCESSFUL_FINAL,
        created_at=AT,
        updated_at=AT,
    )


def entry(*postings: Posting) -> JournalEntry:
    return JournalEntry(EntryKind.CHARGE, 41, "seller-1", postings)


# --- commission: floor(amount * bps / 10_000) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "bps", "commission"),
    [
        (0, 1_000, 0),
        (1, 1_000, 0),  # 0.1 cent rounds down to nothing
        (9, 1_000, 0),  # 0.9 cent still down
        (10, 1_000, 1),  # exact
        (15, 1_000, 1),  # 1.5 down (not half-up, not half-even's 2)
        (25, 1_000, 2),  # 2.5 down (half-even would also give 2)
        (19_999, 1_000, 1_999),  # 1999.9 down
        (10_000, 1, 1),  # one basis point of 100.00
        (9_999, 1, 0),
        (12_345, 0, 0),  # no commission
        (12_345, BPS_PER_UNIT, 12_345),  # all of it
        (12_345, 250, 308),  # 308.625 down
        (10**15, 1_234, 123_400_000_000_000),  # large amounts stay exact (integers, no floats)
        (10**15 + 1, 1_234, 123_400_000_000_000),
    ],
)
def test_commission_rounds_down_to_whole_minor_units(amount: int, bps: int, commission: int) -> None:
    assert commission_of(amount, bps) == commission


def test_commission_of_a_negative_amount_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        commission_of(-1, 100)


@given(amount=st.integers(min_value=0, max_value=10**18), bps=st.integers(min_value=0, max_value=BPS_PER_UNIT))
def test_seller_part_and_commission_always_sum_to_the_amount(amount: int, bps: int) -> None:
    split = CommissionSchedule(default_bps=bps).split(Amount(amount, EUR), "s")
    assert split.seller + split.commission == amount
    assert 0 <= split.commission <= amount
    # never more than the exact share, and less than one minor unit below it
    assert split.commission * BPS_PER_UNIT <= amount * bps < (split.commission + 1) * BPS_PER_UNIT


def test_a_seller_listed_in_the_schedule_pays_its_own_rate_others_the_default() -> None:
    schedule = CommissionSchedule(default_bps=1_000, seller_bps={"big-seller": 250})
    assert schedule.bps_for("big-seller") == 250
    assert schedule.bps_for("anyone") == 1_000


@pytest.mark.parametrize("bps", [-1, BPS_PER_UNIT + 1, True])
def test_a_commission_outside_0_to_10000_basis_points_is_refused(bps: int) -> None:
    with pytest.raises(InvalidCommission):
        CommissionSchedule(default_bps=bps)
    with pytest.raises(InvalidCommission, match="seller 'x'"):
        CommissionSchedule(default_bps=0, seller_bps={"x": bps})


# --- entries balance by construction ----------------------------------------------------------------------------


def test_an_unbalanced_entry_cannot_be_built() -> None:
    with pytest.raises(UnbalancedEntry, match="does not balance"):
        entry(
            Posting(Account.psp_receivable(EUR), Side.DEBIT, 100),
            Posting(Account.seller_payable("seller-1", EUR), Side.CREDIT, 99),
        )


def test_an_entry_balances_per_currency_not_in_total() -> None:
    with pytest.raises(UnbalancedEntry, match="EUR"):
        entry(
            Posting(Account.psp_receivable(EUR), Side.DEBIT, 100),
            Posting(Account.seller_payable("seller-1", USD), Side.CREDIT, 100),
        )


def test_an_entry_has_at_least_two_postings() -> None:
    with pytest.raises(UnbalancedEntry, match="two postings"):
        entry(Posting(Account.psp_receivable(EUR), Side.DEBIT, 100))


@pytest.mark.parametrize("amount", [0, -5])
def test_a_posting_moves_a_positive_amount(amount: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        Posting(Account.psp_receivable(EUR), Side.DEBIT, amount)


def test_a_posting_amount_is_an_integer_of_minor_units() -> None:
    with pytest.raises(TypeError):
        Posting(Account.psp_receivable(EUR), Side.DEBIT, 1.5)  # type: ignore[arg-type]


def test_platform_accounts_belong_to_the_platform_and_seller_accounts_to_a_seller() -> None:
    with pytest.raises(ValueError):
        Account(AccountKind.PSP_RECEIVABLE, "seller-1", EUR)
    with pytest.raises(ValueError):
        Account.seller_payable("  ", EUR)
    assert Account.refunds_in_flight(EUR).owner == PLATFORM
    assert Account.refunds_in_flight(EUR).normal_side is Side.CREDIT
    assert Account.psp_receivable(EUR).normal_side is Side.DEBIT


# --- the charge posting -------------------------------------------------------------------------------------------


def test_a_charge_debits_the_psp_and_credits_the_seller_less_commission_and_the_platform_the_commission() -> None:
    posted = charge_entry(an_order(2_000, seller="seller-9"), CommissionSchedule(default_bps=1_250))
    assert posted.kind is EntryKind.CHARGE
    assert posted.payment_order_id == 41
    assert posted.seller_id == "seller-9"
    assert posted.postings == (
        Posting(Account.psp_receivable(EUR), Side.DEBIT, 2_000),
        Posting(Account.seller_payable("seller-9", EUR), Side.CREDIT, 1_750),
        Posting(Account.commission_revenue(EUR), Side.CREDIT, 250),
    )


def test_a_charge_without_commission_has_no_commission_posting() -> None:
    posted = charge_entry(an_order(999), CommissionSchedule(default_bps=1_000, seller_bps={"seller-1": 0}))
    assert [p.account.kind for p in posted.postings] == [AccountKind.PSP_RECEIVABLE, AccountKind.SELLER_PAYABLE]


def test_a_charge_whose_commission_rounds_to_zero_has_no_commission_posting() -> None:
    posted = charge_entry(an_order(9), CommissionSchedule(default_bps=1_000))
    assert [p.amount for p in posted.postings] == [9, 9]


def test_a_charge_taken_whole_as_commission_has_no_seller_posting() -> None:
    posted = charge_entry(an_order(500), CommissionSchedule(default_bps=BPS_PER_UNIT))
    assert [p.account.kind for p in posted.postings] == [AccountKind.PSP_RECEIVABLE, AccountKind.COMMISSION_REVENUE]


@given(
    amount=st.integers(min_value=1, max_value=10**12),
    bps=st.integers(min_value=0, max_value=BPS_PER_UNIT),
    currency=st.sampled_from(list(Currency)),
)
def test_every_charge_entry_balances_and_its_credits_sum_to_the_amount(
    amount: int, bps: int, currency: Currency
) -> None:
    posted = charge_entry(an_order(amount, currency=currency), CommissionSchedule(default_bps=bps))
    assert net_by_currency(posted.postings) == {currency: 0}
    assert sum(p.amount for p in posted.postings if p.side is Side.CREDIT) == amount


@pytest.mark.parametrize("before", list(PaymentOrderStatus))
@pytest.mark.parametrize("after", list(PaymentOrderStatus))
def test_only_the_move_into_successful_final_posts_a_charge(
    before: PaymentOrderStatus, after: PaymentOrderStatus
) -> None:
    success = PaymentOrderStatus.SUCCESSFUL_FINAL
    assert posts_charge(before, after) is (after is success and before is not success)
