"""The PSP simulator over real HTTP: idempotency by key, status queries, the ledger's double-charge count."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.fixtures.psp import PspSimulatorHandle
from tests.integration.psp.polling import eventually


@pytest.fixture
async def http(clean_psp_simulator: PspSimulatorHandle) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=clean_psp_simulator.base_url, timeout=10) as client:
        yield client


def charge_body(reference: str = "po-1", amount: int = 1999) -> dict[str, Any]:
    return {"merchantReference": reference, "amount": amount, "currency": "EUR", "sellerId": "seller-1"}


def new_key() -> str:
    return f"key-{uuid.uuid4()}"


async def post_charge(http: httpx.AsyncClient, key: str, body: dict[str, Any]) -> httpx.Response:
    return await http.post("/v1/charges", json=body, headers={"Idempotency-Key": key})


async def test_same_key_twice_executes_once_and_replays_the_same_outcome(
    http: httpx.AsyncClient, clean_psp_simulator: PspSimulatorHandle
) -> None:
    key = new_key()

    first = await post_charge(http, key, charge_body())
    second = await post_charge(http, key, charge_body())

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert first.json()["status"] == "SUCCESSFUL_FINAL"
    assert first.json()["idempotencyKey"] == key
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    summary = await clean_psp_simulator.summary()
    assert (summary["calls"], summary["executions"], summary["replays"]) == (2, 1, 1)
    assert summary["orders_charged"] == 1


async def test_ten_concurrent_requests_with_one_key_execute_once(
    http: httpx.AsyncClient, clean_psp_simulator: PspSimulatorHandle
) -> None:
    await clean_psp_simulator.set_scenario(
        "BEST_PSP_EVER", latency=[{"name": "fast", "percent": 100, "minMs": 200, "maxMs": 200}]
    )
    key = new_key()

    responses = await asyncio.gather(*(post_charge(http, key, charge_body()) for _ in range(10)))

    assert {r.status_code for r in responses} == {200}
    assert len({(r.json()["id"], r.json()["status"]) for r in responses}) == 1
    summary = await clean_psp_simulator.summary()
    assert (summary["calls"], summary["executions"], summary["replays"]) == (10, 1, 9)
    assert summary["orders_charged"] == 1
    assert summary["orders_charged_more_than_once"] == 0


async def test_same_key_with_a_different_body_is_rejected_with_422(
    http: httpx.AsyncClient, clean_psp_simulator: PspSimulatorHandle
) -> None:
    key = new_key()
    await post_charge(http, key, charge_body(amount=1000))

    response = await post_charge(http, key, charge_body(amount=2000))

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "idempotency_key_mismatch"
    summary = await clean_psp_simulator.summary()
    assert (summary["executions"], summary["idempotency_mismatches"]) == (1, 1)


async def test_charge_without_an_idempotency_key_is_rejected_with_400(
    http: httpx.AsyncClient, clean_psp_simulator: PspSimulatorHandle
) -> None:
    response = await http.post("/v1/charges", json=charge_body())

    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_required"
    assert (await clean_psp_simulator.summary())["executions"] == 0


async def test_malformed_charge_body_is_rejected_with_400(http: httpx.AsyncClient) -> None:
    response = await post_charge(http, new_key(), {**charge_body(), "amount": "12.5"})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


async def test_status_of_a_key_the_psp_never_saw_is_404(http: httpx.AsyncClient) -> None:
    response = await http.get(f"/v1/charges/{new_key()}")

    assert response.status_code == 404
    assert response.json()["code"] == "charge_not_found"


async def test_pending_charge_resolves_on_a_later_status_query(
    http: httpx.AsyncClient, clean_psp_simulator: PspSimulatorHandle
) -> None:
    await clean_psp_simulator.set_scenario(
        "BEST_PSP_EVER",
        success_percent=0,
        pending_percent=100,
        pending_resolve_min_ms=200,
        pending_resolve_max_ms=300,
        pending_success_percent=100,
    )
    key = new_key()

    created = await post_charge(http, key, charge_body())
    right_after = await http.get(f"/v1/charges/{key}")

    assert created.json()["status"] == "PENDING"
    assert right_after.json()["status"] == "PENDING"
    assert (await clean_psp_simulator.summary())["orders_charged"] == 0

    async def status() -> str:
        return str((await http.get(f"/v1/charges/{key}")).json()["status"])

    assert await eventually(status, lambda s: s != "PENDING") == "SUCCESSFUL_FINAL"
    summary = await clean_psp_simulator.summary()
    assert (summary["pending_resolved"], summary["orders_charged"]) == (1, 1)


async def test_transient_failure_records_no_charge_and_replays_as_transient(
    http: httpx.AsyncClient, clean_psp_simulator: PspSimulatorHandle
) -> None:
    await clean_psp_simulator.set_scenario("BEST_PSP_EVER", success_percent=0, retryable_percent=100)
    key = new_key()

    first = await post_charge(http, key, charge_body())
    replay = await post_charge(http, key, charge_body())

    assert first.json()["status"] == replay.json()["status"] == "FAILED_TRANSIENT_ERROR"
    summary = await clean_psp_simulator.summary()
    assert summary["executions"] == 1
    assert summary["by_outcome"]["FAILED_TRANSIENT_ERROR"] == 1
    assert summary["orders_charged"] == 0
    assert summary["charged_minor_by_currency"] == {}
    assert summary["charged_minor_by_seller"] == {}


async def test_one_reference_charged_under_two_keys_counts_as_charged_more_than_once(
    http: httpx.AsyncClient, clean_psp_simulator: PspSimulatorHandle
) -> None:
    await post_charge(http, new_key(), charge_body("po-double", 500))
    await post_charge(http, new_key(), charge_body("po-double", 500))
    single_key = new_key()
    await post_charge(http, single_key, charge_body("po-single", 700))
    await post_charge(http, single_key, charge_body("po-single", 700))

    summary = await clean_psp_simulator.summary()

    assert summary["orders_charged"] == 2
    assert summary["orders_charged_more_than_once"] == 1
    assert summary["orders_charged_more_than_once_sample"] == ["po-double"]
    assert summary["charged_minor_by_currency"] == {"EUR": 1700}
    seller = charge_body("x", 1)["sellerId"]
    assert summary["charged_minor_by_seller"] == {seller: {"EUR": 1700}}


async def test_scenario_switch_at_runtime_is_reported_and_applied(
    http: httpx.AsyncClient, clean_psp_simulator: PspSimulatorHandle
) -> None:
    await clean_psp_simulator.set_scenario("PEAK")

    profile = (await http.get("/admin/scenario")).json()

    assert profile["name"] == "PEAK"
    assert profile["timeoutPercent"] == 25
    assert [b["percent"] for b in profile["latency"]] == [30, 50, 20]
    assert (profile["successPercent"], profile["retryablePercent"], profile["declinedPercent"]) == (50, 45, 5)


async def test_invalid_profile_is_rejected_and_the_active_one_kept(
    http: httpx.AsyncClient, clean_psp_simulator: PspSimulatorHandle
) -> None:
    response = await http.put("/admin/scenario", json={"scenario": "NORMAL", "successPercent": 20})
    unknown = await http.put("/admin/scenario", json={"scenario": "FASTEST"})

    assert (response.status_code, response.json()["code"]) == (400, "invalid_profile")
    assert (unknown.status_code, unknown.json()["code"]) == (400, "unknown_scenario")
    assert (await http.get("/admin/scenario")).json()["name"] == "BEST_PSP_EVER"


async def test_reset_empties_the_ledger(http: httpx.AsyncClient, clean_psp_simulator: PspSimulatorHandle) -> None:
    key = new_key()
    await post_charge(http, key, charge_body())

    await clean_psp_simulator.reset()

    assert (await http.get(f"/v1/charges/{key}")).status_code == 404
    summary = await clean_psp_simulator.summary()
    assert (summary["calls"], summary["orders_charged"]) == (0, 0)


async def test_forced_http_error_is_answered_without_executing_the_charge(
    http: httpx.AsyncClient, clean_psp_simulator: PspSimulatorHandle
) -> None:
    await clean_psp_simulator.force("po-forced", http_status=503)
    key = new_key()

    refused = await post_charge(http, key, charge_body("po-forced"))
    retried = await post_charge(http, key, charge_body("po-forced"))

    assert refused.status_code == 503
    assert retried.status_code == 200  # the force was used up; the key was never recorded
    summary = await clean_psp_simulator.summary()
    assert (summary["forced_http_errors"], summary["executions"], summary["orders_charged"]) == (1, 1, 1)
