"""Every move to SUCCESSFUL_FINAL posts its charge entry in the same transaction, once: one result, a batch, a late
answer for a parked order, an operator's settlement. No other move posts anything."""

from __future__ import annotations

import pytest

from payment_domain.ledger import Account, CommissionSchedule, EntryKind, Posting, Side, charge_entry
from payment_domain.money import Currency
from payment_domain.status import PaymentOrderStatus
from tests.fakes_consumers import COMMISSION, an_order
from tests.unit.application.test_apply_many import World
from tests.unit.application.test_consumer_use_cases import T0, charge_result, check_result
from tests.unit.application.test_reconciliation import Parked, late

S = PaymentOrderStatus


async def test_a_success_posts_its_charge_with_the_commission_in_the_same_commit() -> None:
    world = World()
    seven = world.tables.add_order(an_order(7))  # 2,507 cents, seller-7, 10 % commission

    await world.apply(charge_result(seven, S.SUCCESSFUL_FINAL))

    [posted] = world.tables.journal
    assert posted.posted_at == T0
    assert posted.entry.kind is EntryKind.CHARGE and posted.entry.payment_order_id == 7
    assert posted.entry.postings == (
        Posting(Account.psp_receivable(Currency.EUR), Side.DEBIT, 2_507),
        Posting(Account.seller_payable("seller-7", Currency.EUR), Side.CREDIT, 2_257),
        Posting(Account.commission_revenue(Currency.EUR), Side.CREDIT, 250),
    )
    assert world.store.commits == 1


async def test_a_redelivered_success_posts_nothing_more() -> None:
    world = World()
    seven = world.tables.add_order(an_order(7))
    result = charge_result(seven, S.SUCCESSFUL_FINAL)

    await world.apply(result)
    await world.apply(result)
    await world.apply.apply_many([result, charge_result(world.tables.add_order(an_order(8)), S.DECLINED_FINAL)])

    assert [p.entry.payment_order_id for p in world.tables.journal] == [7]


async def test_a_second_success_answer_for_a_successful_order_posts_nothing() -> None:
    world = World()
    seven = world.tables.add_order(an_order(7, status=S.SUCCESSFUL_FINAL))

    await world.apply(check_result(seven, check_number=1, status=S.SUCCESSFUL_FINAL))

    assert world.tables.journal == []


@pytest.mark.parametrize(
    "status", [S.DECLINED_FINAL, S.FAILED_FINAL, S.PSP_UNAVAILABLE_TRANSIENT, S.TIMEOUT_EXCEEDED_1S_TRANSIENT]
)
async def test_no_other_outcome_posts_anything(status: PaymentOrderStatus) -> None:
    world = World()
    await world.apply(charge_result(world.tables.add_order(an_order(7)), status))
    assert world.tables.journal == []


async def test_a_batch_posts_the_charges_of_exactly_the_orders_that_became_successful() -> None:
    world = World()
    results = world.add_mixed_orders()  # 7 charged, 12 parked and then charged late; the others not

    await world.apply.apply_many(results)

    assert [p.entry for p in world.tables.journal] == [
        charge_entry(world.tables.order(7), COMMISSION),
        charge_entry(world.tables.order(12), COMMISSION),
    ]
    assert (world.store.commits, world.store.rollbacks) == (1, 0)


async def test_when_the_entry_cannot_be_written_the_order_does_not_become_successful() -> None:
    world = World()
    seven = world.tables.add_order(an_order(7))
    world.store.failures["post_entries"] = ConnectionResetError("lost the database mid-transaction")

    with pytest.raises(ConnectionResetError):
        await world.apply(charge_result(seven, S.SUCCESSFUL_FINAL))
    outcomes = await world.apply.apply_many([charge_result(seven, S.SUCCESSFUL_FINAL)])

    assert isinstance(outcomes[0], ConnectionResetError)
    assert world.tables.order(7).status is S.INITIATED_PENDING
    assert world.tables.outbox == [] and world.tables.journal == [] and world.tables.inbox == set()


async def test_a_seller_with_its_own_rate_is_charged_that_rate() -> None:
    world = World()
    world.apply._commission = CommissionSchedule(default_bps=1_000, seller_bps={"seller-7": 0})
    await world.apply(charge_result(world.tables.add_order(an_order(7)), S.SUCCESSFUL_FINAL))
    assert [p.amount for p in world.tables.journal[0].entry.postings] == [2_507, 2_507]


async def test_a_late_success_of_a_parked_order_posts_its_charge() -> None:
    world = Parked()
    order = world.park()
    await world.apply(late(order, S.SUCCESSFUL_FINAL))
    assert [p.entry for p in world.tables.journal] == [charge_entry(world.tables.order(7), COMMISSION)]


async def test_an_operator_settling_a_parked_order_as_successful_posts_its_charge_once() -> None:
    world = Parked()
    order = world.park()

    await world.settle(7, outcome=S.SUCCESSFUL_FINAL, operator="ops", evidence="PSP dashboard: ch_1 captured")
    await world.apply(late(order, S.SUCCESSFUL_FINAL))  # the PSP's own answer arrives after the settlement

    assert [p.entry for p in world.tables.journal] == [charge_entry(world.tables.order(7), COMMISSION)]


@pytest.mark.parametrize("outcome", [S.FAILED_FINAL, S.DECLINED_FINAL])
async def test_an_operator_settling_a_parked_order_as_not_charged_posts_nothing(outcome: PaymentOrderStatus) -> None:
    world = Parked()
    world.park()
    await world.settle(7, outcome=outcome, operator="ops", evidence="PSP: no charge under the key")
    assert world.tables.journal == []
