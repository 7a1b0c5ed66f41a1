"""End to end over the real broker, Postgres, Redis, PSP simulator and HTTP: every order reaches a final state
(or is parked for reconciliation, counted) and no order is ever charged twice."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from payment_domain.topics import Topic
from tests.e2e.helpers import create_payments, order_statuses, outbox_events, wait_until_final
from tests.fixtures.broker import TopicReader
from tests.fixtures.pipeline import Pipeline

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_best_psp_ever_settles_every_order_within_seconds(pipeline: Pipeline, tokens: dict[str, str]) -> None:
    await pipeline.psp.reset()
    await pipeline.psp.set_scenario("BEST_PSP_EVER")
    payment_ids = await create_payments(pipeline, tokens["order-service"], 10)

    payments = await wait_until_final(pipeline, tokens["order-service"], payment_ids, within=20)

    assert {p["status"] for p in payments.values()} == {"SUCCESS"}
    assert {o["status"] for p in payments.values() for o in p["paymentOrders"]} == {"SUCCESSFUL_FINAL"}
    summary = await pipeline.psp.summary()
    assert summary["orders_charged"] == 20
    assert summary["orders_charged_more_than_once"] == 0
    succeeded = await outbox_events(pipeline, "payment_order_success")
    ours = {o["paymentOrderId"].removeprefix("paymentorder-") for p in payments.values() for o in p["paymentOrders"]}
    assert Counter(r["aggregate_id"] for r in succeeded if r["aggregate_id"] in ours) == Counter(dict.fromkeys(ours, 1))


SCENARIOS: list[tuple[str, dict[str, Any]]] = [
    (
        "NORMAL",
        {
            "timeout_duration_ms": 900,
            "pending_percent": 10,
            "pending_resolve_min_ms": 200,
            "pending_resolve_max_ms": 600,
        },
    ),
    ("PEAK", {"timeout_duration_ms": 900}),
    ("DEGRADED", {"timeout_duration_ms": 900}),
]


@pytest.mark.parametrize(("scenario", "overrides"), SCENARIOS, ids=[s for s, _ in SCENARIOS])
async def test_every_order_ends_final_and_is_charged_at_most_once(
    pipeline: Pipeline, tokens: dict[str, str], scenario: str, overrides: dict[str, Any]
) -> None:
    await pipeline.psp.reset()
    await pipeline.psp.set_scenario(scenario, **overrides)
    payment_ids = await create_payments(pipeline, tokens["order-service"], 8)

    payments = await wait_until_final(pipeline, tokens["order-service"], payment_ids, within=60)

    statuses = Counter(o["status"] for p in payments.values() for o in p["paymentOrders"])
    summary = await pipeline.psp.summary()
    assert summary["orders_charged_more_than_once"] == 0
    # Money moved exactly for the orders we call successful, give or take the ones parked for a human.
    assert statuses["SUCCESSFUL_FINAL"] <= summary["orders_charged"]
    assert summary["orders_charged"] <= statuses["SUCCESSFUL_FINAL"] + statuses["NEEDS_RECONCILIATION"]
    for payment in payments.values():
        order_states = {o["status"] for o in payment["paymentOrders"]}
        if order_states <= {"SUCCESSFUL_FINAL"}:
            assert payment["status"] == "SUCCESS"
        elif "NEEDS_RECONCILIATION" not in order_states and "SUCCESSFUL_FINAL" not in order_states:
            assert payment["status"] == "FAILED"


async def test_a_charge_completing_after_the_timeout_is_found_by_a_status_check_not_charged_again(
    pipeline: Pipeline, tokens: dict[str, str]
) -> None:
    await pipeline.psp.reset()
    # Every call outlives the 500 ms wait, then succeeds at the PSP: the outcome is unknown to us at first.
    await pipeline.psp.set_scenario("BEST_PSP_EVER", timeout_percent=100, timeout_duration_ms=700)
    payment_ids = await create_payments(pipeline, tokens["order-service"], 3)

    payments = await wait_until_final(pipeline, tokens["order-service"], payment_ids, within=30)

    assert {o["status"] for p in payments.values() for o in p["paymentOrders"]} == {"SUCCESSFUL_FINAL"}
    summary = await pipeline.psp.summary()
    assert summary["orders_charged"] == 6
    assert summary["executions"] == 6, "each order was charged by exactly one attempt"
    assert summary["orders_charged_more_than_once"] == 0
    assert summary["status_queries"] >= 6


async def test_a_psp_that_charges_then_answers_503_is_asked_about_the_key_and_never_charged_again(
    pipeline: Pipeline, tokens: dict[str, str]
) -> None:
    """Half the charges are executed and then answered 503 (a proxy whose upstream reset after the PSP charged).
    Trusting the 503 as "not executed" would open attempt 1 under a new key and charge the buyer a second time."""
    await pipeline.psp.reset()
    await pipeline.psp.set_scenario("BEST_PSP_EVER", charged_then_unavailable_percent=50)
    payment_ids = await create_payments(pipeline, tokens["order-service"], 6)

    payments = await wait_until_final(pipeline, tokens["order-service"], payment_ids, within=60)

    orders = [o for p in payments.values() for o in p["paymentOrders"]]
    assert {o["status"] for o in orders} == {"SUCCESSFUL_FINAL"}
    assert {o["retryCount"] for o in orders} == {0}, "no second key was charged"
    summary = await pipeline.psp.summary()
    assert summary["answered_unavailable_after_execution"] > 0
    assert (summary["orders_charged"], summary["executions"]) == (12, 12)
    assert summary["orders_charged_more_than_once"] == 0
    assert summary["status_queries"] >= summary["answered_unavailable_after_execution"]


async def test_declined_orders_keep_their_reason_and_emit_a_failed_event(
    pipeline: Pipeline, tokens: dict[str, str]
) -> None:
    await pipeline.psp.reset()
    await pipeline.psp.set_scenario(
        "BEST_PSP_EVER", success_percent=0, declined_percent=100, retryable_percent=0, pending_percent=0
    )
    payment_ids = await create_payments(pipeline, tokens["order-service"], 2)

    payments = await wait_until_final(pipeline, tokens["order-service"], payment_ids, within=20)

    assert {o["status"] for p in payments.values() for o in p["paymentOrders"]} == {"DECLINED_FINAL"}
    assert {p["status"] for p in payments.values()} == {"FAILED"}
    failed = await outbox_events(pipeline, "payment_order_failed")
    ours = {o["paymentOrderId"].removeprefix("paymentorder-") for p in payments.values() for o in p["paymentOrders"]}
    assert ours <= {r["aggregate_id"] for r in failed}
    assert (await pipeline.psp.summary())["orders_charged"] == 0


async def test_transient_failures_are_retried_until_the_limit_then_fail_with_the_reason(
    pipeline: Pipeline, tokens: dict[str, str]
) -> None:
    await pipeline.psp.reset()
    await pipeline.psp.set_scenario(
        "BEST_PSP_EVER", success_percent=0, declined_percent=0, retryable_percent=100, pending_percent=0
    )
    payment_ids = await create_payments(pipeline, tokens["order-service"], 1, sellers=1)

    payments = await wait_until_final(pipeline, tokens["order-service"], payment_ids, within=30)

    (order,) = next(iter(payments.values()))["paymentOrders"]
    assert order["status"] == "FAILED_FINAL"
    assert order["retryCount"] == 5
    summary = await pipeline.psp.summary()
    assert summary["calls"] == 6, "the first call plus five retries, each once"
    statuses = await order_statuses(pipeline)
    assert statuses[order["paymentOrderId"]] == "FAILED_FINAL"


async def test_poison_messages_go_to_the_dlq_and_their_partitions_keep_flowing(
    pipeline: Pipeline, tokens: dict[str, str]
) -> None:
    topic_reader = TopicReader(pipeline.bootstrap)
    await pipeline.psp.reset()
    await pipeline.psp.set_scenario("BEST_PSP_EVER")
    producer = AIOKafkaProducer(bootstrap_servers=pipeline.bootstrap)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(Topic.PAYMENT_ORDER_CREATED.value))
        for partition in partitions:
            await producer.send_and_wait(
                Topic.PAYMENT_ORDER_CREATED.value, b"\x00not an envelope", key=b"poison", partition=partition
            )
    finally:
        await producer.stop()

    # Orders created after the poison land on those partitions too, and must still settle.
    payment_ids = await create_payments(pipeline, tokens["order-service"], 6)
    payments = await wait_until_final(pipeline, tokens["order-service"], payment_ids, within=30)
    assert {o["status"] for p in payments.values() for o in p["paymentOrders"]} == {"SUCCESSFUL_FINAL"}

    letters = [
        m
        for m in await topic_reader.wait_for(Topic.PAYMENT_ORDER_CREATED.dlq, len(partitions), within=15)
        if m.value == b"\x00not an envelope"
    ]
    assert len(letters) == len(partitions)
    assert {m.partition for m in letters} == set(partitions)
    for letter in letters:
        assert letter.key == "poison"
        assert letter.headers["x-original-topic"] == Topic.PAYMENT_ORDER_CREATED.value.encode()
        assert letter.headers["x-consumer-group"] == b"payment-order-enqueuer-consumer-group"
        assert letter.headers["x-error-class"].endswith(b"PoisonMessage")
        assert int(letter.headers["x-original-offset"]) >= 0
