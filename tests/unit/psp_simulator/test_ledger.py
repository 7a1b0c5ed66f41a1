"""The ledger keeps every charge (as a PSP does) in as little memory as the counts it must answer allow."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from services.psp_simulator.ledger import DECIDED, Charge, ChargeRequest, Ledger
from services.psp_simulator.profiles import build_profile
from services.psp_simulator.simulator import PspSimulator

AT = datetime(2026, 11, 29, tzinfo=UTC)


def charge(reference: str, key: str) -> Charge:
    return Charge(f"ch-{key}", key, ChargeRequest(reference, 100, "EUR", "seller-1"), AT, AT)


def test_an_order_charged_under_a_second_key_is_charged_more_than_once_and_a_replay_is_not() -> None:
    ledger = Ledger()
    ledger.record_success(charge("po-1", "po-1-0"))
    ledger.record_success(charge("po-1", "po-1-0"))  # the same key again: one charge
    ledger.record_success(charge("po-2", "po-2-0"))
    ledger.record_success(charge("po-2", "po-2-1"))
    ledger.record_success(charge("po-2", "po-2-2"))

    summary = ledger.summary("TEST")

    assert (summary["orders_charged"], summary["orders_charged_more_than_once"]) == (2, 1)
    assert summary["orders_charged_more_than_once_sample"] == ["po-2"]
    assert ledger.charged_again == {"po-2": {"po-2-0", "po-2-1", "po-2-2"}}
    assert summary["charged_minor_by_currency"] == {"EUR": 500}


async def test_a_decided_charge_keeps_no_event_of_its_own_and_a_replay_answers_at_once() -> None:
    simulator = PspSimulator(build_profile("BEST_PSP_EVER"), random.Random(7))
    request = ChargeRequest("po-9", 100, "EUR", "seller-1")
    first, replayed = await simulator.charge("po-9-0", request)
    assert not replayed
    assert first.decided is DECIDED

    again, replayed = await simulator.charge("po-9-0", request)
    assert replayed and again is first
    await simulator.aclose()


async def test_charged_lists_each_order_once_with_its_first_successful_charge() -> None:
    simulator = PspSimulator(build_profile("BEST_PSP_EVER"), random.Random(7))
    await simulator.charge("po-1-0", ChargeRequest("po-1", 250, "GBP", "seller-1"))
    await simulator.charge("po-1-0", ChargeRequest("po-1", 250, "GBP", "seller-1"))  # a replay
    await simulator.charge("po-2-1", ChargeRequest("po-2", 900, "USD", "seller-2"))

    assert simulator.charged() == {
        "po-1": {"idempotencyKey": "po-1-0", "amount": 250, "currency": "GBP"},
        "po-2": {"idempotencyKey": "po-2-1", "amount": 900, "currency": "USD"},
    }
    await simulator.aclose()
