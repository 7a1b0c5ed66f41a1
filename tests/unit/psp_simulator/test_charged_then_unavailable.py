"""chargedThenUnavailablePercent: a new charge or refund is executed and recorded, then answered 503; its key
replays it normally; with the knob at 0 the seeded draws are the ones they always were."""

from __future__ import annotations

import random

import httpx
import pytest

from services.psp_simulator.__main__ import parse_args
from services.psp_simulator.app import create_app
from services.psp_simulator.ledger import ChargeRequest, ChargeStatus
from services.psp_simulator.profiles import build_profile
from services.psp_simulator.sampling import plan_charge
from services.psp_simulator.simulator import ChargedThenUnavailable, PspSimulator

ALWAYS = {"chargedThenUnavailablePercent": 100}
CHARGE = {"merchantReference": "po-1", "amount": 500, "currency": "EUR", "sellerId": "seller-1"}


async def test_the_charge_and_the_refund_are_executed_and_recorded_but_answered_unavailable() -> None:
    simulator = PspSimulator(build_profile("BEST_PSP_EVER", ALWAYS), random.Random(3))
    charge = ChargeRequest("po-1", 500, "EUR", "seller-1")
    refund = ChargeRequest("po-1", 200, "EUR", "seller-1", refund_reference="rf-1")

    with pytest.raises(ChargedThenUnavailable) as charged:
        await simulator.charge("po-1-0", charge)
    with pytest.raises(ChargedThenUnavailable):
        await simulator.refund("rf-1-0", refund)

    assert charged.value.charge.status is ChargeStatus.SUCCESSFUL_FINAL
    summary = simulator.summary()
    assert (summary["executions"], summary["refund_executions"]) == (1, 1)
    assert summary["answered_unavailable_after_execution"] == 2
    assert summary["charged_minor_by_currency"] == {"EUR": 500}
    assert summary["refunded_minor_by_currency"] == {"EUR": 200}
    await simulator.aclose()


async def test_a_later_call_under_the_same_key_replays_the_stored_charge() -> None:
    simulator = PspSimulator(build_profile("BEST_PSP_EVER", ALWAYS), random.Random(3))
    request = ChargeRequest("po-1", 500, "EUR", "seller-1")
    with pytest.raises(ChargedThenUnavailable) as first:
        await simulator.charge("po-1-0", request)

    again, replayed = await simulator.charge("po-1-0", request)

    assert replayed and again is first.value.charge
    summary = simulator.summary()
    assert (summary["executions"], summary["replays"], summary["answered_unavailable_after_execution"]) == (1, 1, 1)
    assert summary["orders_charged_more_than_once"] == 0
    await simulator.aclose()


async def test_at_zero_percent_no_extra_number_is_drawn() -> None:
    profile = build_profile("NORMAL", {"chargedThenUnavailablePercent": 0, "timeoutPercent": 0})
    rng = random.Random(11)
    simulator = PspSimulator(profile, rng)
    await simulator.charge("po-1-0", ChargeRequest("po-1", 500, "EUR", "seller-1"))

    expected = random.Random(11)
    plan_charge(profile, expected)  # the plan, then the charge id: the draws a charge always made
    expected.getrandbits(64)
    assert rng.getstate() == expected.getstate()
    await simulator.aclose()


async def test_the_share_answered_unavailable_follows_the_percentage() -> None:
    simulator = PspSimulator(build_profile("BEST_PSP_EVER", {"chargedThenUnavailablePercent": 30}), random.Random(5))
    unavailable = 0
    for n in range(1_000):
        try:
            await simulator.charge(f"po-{n}-0", ChargeRequest(f"po-{n}", 100, "EUR", "seller-1"))
        except ChargedThenUnavailable:
            unavailable += 1

    assert 250 <= unavailable <= 350
    summary = simulator.summary()
    assert (summary["answered_unavailable_after_execution"], summary["orders_charged"]) == (unavailable, 1_000)
    await simulator.aclose()


async def test_http_answers_a_503_problem_then_replays_200() -> None:
    app = create_app(build_profile("BEST_PSP_EVER"), random.Random(1))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://psp") as client:
        put = await client.put("/admin/scenario", json={"scenario": "BEST_PSP_EVER", **ALWAYS})
        assert put.status_code == 200 and put.json()["chargedThenUnavailablePercent"] == 100

        first = await client.post("/v1/charges", json=CHARGE, headers={"Idempotency-Key": "po-1-0"})
        again = await client.post("/v1/charges", json=CHARGE, headers={"Idempotency-Key": "po-1-0"})
        status = await client.get("/v1/charges/po-1-0")
        summary = (await client.get("/admin/summary")).json()

    assert first.status_code == 503 and first.headers["content-type"] == "application/problem+json"
    assert first.json()["code"] == "service_unavailable"
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["status"] == status.json()["status"] == "SUCCESSFUL_FINAL"
    assert (summary["executions"], summary["answered_unavailable_after_execution"]) == (1, 1)


def test_the_command_line_flag_and_the_environment_set_the_knob() -> None:
    assert parse_args(["--charged-then-unavailable-percent", "30"], env={}).charged_then_unavailable_percent == 30
    env = {"PAYMENTS_PSP_SIM__CHARGED_THEN_UNAVAILABLE_PERCENT": "12.5"}
    assert parse_args([], env=env).charged_then_unavailable_percent == 12.5
    assert parse_args([], env={}).charged_then_unavailable_percent is None
