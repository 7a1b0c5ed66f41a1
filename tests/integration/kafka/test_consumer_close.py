"""The bounded close of a group consumer (payment_infrastructure/kafka/lifecycle.py, `stop_consumer`) against a real
broker: one that answers sees the member leave; one paused with SIGSTOP (connections open, no answers) is given up on
within the bound, and nothing of the client is left running. The second case also guards the aiokafka internals the
close finishes by hand (its coordinator's tasks, fetcher and client): renamed in an upgrade, tasks would be left."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from aiokafka import AIOKafkaConsumer

from payment_infrastructure.kafka.lifecycle import stop_consumer
from tests.fixtures.broker import KafkaFactory, TopicReader, unique_topic
from tests.fixtures.ports import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")

WITHIN = 1.0


async def joined(bootstrap_servers: str, topic: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=f"close-{topic}",
        enable_auto_commit=False,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=500,
        request_timeout_ms=40_000,  # the payment-consumers' default: what a plain stop() waits in LeaveGroup
    )
    await consumer.start()

    async def assigned() -> bool:
        await consumer.getmany(timeout_ms=100)
        return bool(consumer.assignment())

    await wait_until(assigned, timeout=30, what="partitions assigned")
    return consumer


async def test_a_consumer_leaves_its_group_in_time_and_gives_up_within_the_bound_on_a_paused_broker(
    kafka_factory: KafkaFactory,
) -> None:
    broker = await kafka_factory()
    topic = await TopicReader(broker.bootstrap_servers).create(unique_topic("close"), partitions=2)

    answering = await joined(broker.bootstrap_servers, topic)
    assert await stop_consumer(answering, within=WITHIN) is True

    before = asyncio.all_tasks()
    consumer = await joined(broker.bootstrap_servers, topic)
    pid = broker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        left = await stop_consumer(consumer, within=WITHIN)
        took = time.monotonic() - started

        assert left is False
        # The stop itself, then at most the bound again for cancelled tasks and the connections' close.
        assert took < 3 * WITHIN + 1, took

        def leftovers() -> set[asyncio.Task[object]]:
            return {task for task in asyncio.all_tasks() - before if not task.done()} - {asyncio.current_task()}

        async def nothing_left() -> bool:
            return not leftovers()

        try:
            await wait_until(nothing_left, timeout=5, what="the client's tasks ended")
        except TimeoutError:
            pytest.fail(f"tasks of the closed consumer still running: {leftovers()}")
    finally:
        os.kill(pid, signal.SIGCONT)
