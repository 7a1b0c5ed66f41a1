"""Outages longer than the in-place retries, met by the real result applier: a Postgres reached through a proxy the
test cuts, a Redis the test stops and starts again. The record waits (and the records behind it on its partition
wait too) until the dependency is back, then every record is applied, in order. Nothing goes to the DLQ: an
outage is not a poison message."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.apply_psp_result import ApplyPspResult, ResultPolicy
from payment_application.ports.retry_queue import RetryQueue
from payment_domain.events import EventEnvelope, psp_result_updated
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.psp_result import ResultSource
from payment_domain.status import PaymentOrderStatus
from payment_domain.topics import dlq_of
from payment_infrastructure.kafka.consumer import ConsumedRecord
from payment_infrastructure.kafka.settings import KafkaSettings
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.payment_order_store import PostgresResultStore
from payment_infrastructure.postgres.settings import DatabaseSettings
from payment_infrastructure.redis.client import create_redis
from payment_infrastructure.redis.retry_queue import RedisRetryQueue
from payment_infrastructure.redis.retry_settings import RetrySettings
from payment_infrastructure.redis.settings import RedisSettings
from payment_infrastructure.serialization import envelope_to_bytes
from services.payment_consumers.handlers import result_batcher, result_handler
from tests.fakes_consumers import COMMISSION
from tests.fixtures.broker import TopicReader, unique_topic
from tests.fixtures.redis import RedisServer, start_redis_server
from tests.fixtures.tcp_proxy import TcpProxy
from tests.integration.kafka.consumer_support import (
    Recorder,
    committed_offsets,
    fast_settings,
    produce,
    running,
    wait_for_commits,
    wait_until,
)
from tests.integration.postgres.order_rows import StoredOrder, insert_orders, order_row

S = PaymentOrderStatus
CREATED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# The production defaults: 3 retries 200, 400, 800 ms apart, so a failure used to be given up after ~1.4 s.
SETTINGS = fast_settings(
    in_place_retries=3,
    in_place_backoff_ms=200,
    in_place_backoff_max_ms=5_000,
    dependency_backoff_ms=50,
    dependency_backoff_max_ms=200,
)
OUTAGE_SECONDS = 2.5


class NoRetries:
    """For results that are never retried: the retry queue must not be touched."""

    async def schedule(self, envelope: EventEnvelope, *, delay_ms: int) -> bool:
        raise AssertionError(f"unexpected retry of {envelope.aggregate_id}")


class Outage:
    """The result applier's handler, noting when each failed call happened and which record it was."""

    def __init__(self, engine: AsyncEngine, retries: RetryQueue | NoRetries) -> None:
        apply = ApplyPspResult(
            store=PostgresResultStore(engine, statement_timeout_ms=2_000, lock_timeout_ms=250),
            retries=retries,  # type: ignore[arg-type]
            policy=ResultPolicy(retry_base_ms=60_000, retry_max_ms=60_000),
            randint=random.Random(7).randint,
            consumer=f"outage-{uuid.uuid4().hex[:8]}",
            commission=COMMISSION,
        )
        self._handle = result_handler(result_batcher(apply, concurrency=2, max_batch=32).submit)  # as deployed
        self.failures: list[tuple[int, float]] = []
        self.recorder = Recorder()

    def handler(self) -> Callable[[ConsumedRecord], Awaitable[None]]:
        async def noting_failures(record: ConsumedRecord) -> None:
            try:
                await self._handle(record)
            except Exception:
                self.failures.append((record.offset, time.monotonic()))
                raise

        return self.recorder.handler("c1", noting_failures)

    def lasted(self, seconds: float) -> bool:
        return bool(self.failures) and self.failures[-1][1] - self.failures[0][1] >= seconds

    @property
    def failed_offsets(self) -> set[int]:
        return {offset for offset, _ in self.failures}


@pytest.fixture
async def proxied_engine(database_url: str, postgres_proxy: TcpProxy) -> AsyncIterator[AsyncEngine]:
    url = make_url(database_url).set(port=postgres_proxy.port).render_as_string(hide_password=False)
    engine = create_engine(
        DatabaseSettings(url=url, pool_size=2, connect_timeout_seconds=1.0), application_name="outage"
    )
    yield engine
    await engine.dispose()


def a_result(order_id: int, status: PaymentOrderStatus | None, *, check_number: int = 0, found: bool = True) -> bytes:
    """A charge's answer, or with `check_number` the answer to that status check."""
    order = PaymentOrder(
        payment_order_id=PaymentOrderId(order_id),
        payment_id=PaymentId(order_id),
        seller_id=f"SELLER-{order_id}",
        amount=Amount(1_000, Currency.EUR),
        status=S.INITIATED_PENDING,
        created_at=CREATED_AT,
        updated_at=CREATED_AT,
    )
    envelope = psp_result_updated(
        order,
        attempt=0,
        psp_status=status,
        latency_ms=40,
        source=ResultSource.STATUS_CHECK if check_number else ResultSource.CHARGE,
        check_number=check_number,
        found=found,
        trace_id=f"trace-{order_id}",
        parent_event_id=f"request-{order_id}",
        now=CREATED_AT,
    )
    return envelope_to_bytes(envelope)


async def two_orders(database_url: str, first_order: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """Two pending orders (the first one as `first_order` says), each of its own payment."""
    first = random.randrange(10**12, 10**13)
    orders = [StoredOrder(first, CREATED_AT, **(first_order or {})), StoredOrder(first + 1, CREATED_AT)]
    await insert_orders(database_url, orders)
    return first, first + 1


async def a_topic(topic_reader: TopicReader) -> str:
    topic = await topic_reader.create(unique_topic("outage"), partitions=1)
    await topic_reader.create(dlq_of(topic), partitions=1)
    return topic


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_database_outage_longer_than_the_in_place_retries_holds_the_partition_and_dead_letters_nothing(
    kafka_settings: KafkaSettings,
    topic_reader: TopicReader,
    database_url: str,
    postgres_proxy: TcpProxy,
    proxied_engine: AsyncEngine,
) -> None:
    topic, group, bootstrap = await a_topic(topic_reader), unique_topic("group"), kafka_settings.bootstrap_servers
    first, second = await two_orders(database_url)
    outage = Outage(proxied_engine, NoRetries())
    await postgres_proxy.sever()
    await produce(
        bootstrap,
        topic,
        [(0, str(first), a_result(first, S.SUCCESSFUL_FINAL)), (0, str(second), a_result(second, S.SUCCESSFUL_FINAL))],
    )

    async with running(kafka_settings, SETTINGS, group_id=group, topics=[topic], handler=outage.handler()):
        await wait_until(
            lambda: outage.lasted(OUTAGE_SECONDS),
            within=OUTAGE_SECONDS + 10,
            what=f"the database to have been unreachable for {OUTAGE_SECONDS}s",
        )
        # Well past the in-place retries: both records are still being tried (they are about different orders, so
        # they run side by side in one batch), and nothing is committed or dead-lettered.
        assert outage.failed_offsets == {0, 1}
        assert outage.recorder.offsets(0) == []
        blocked = sample("kafka_consumer_partition_blocked_seconds", group=group, topic=topic, partition="0")
        assert blocked >= OUTAGE_SECONDS - 0.1
        assert await committed_offsets(bootstrap, group, topic, 1) == {}
        assert await topic_reader.read_all(dlq_of(topic)) == []

        postgres_proxy.restore()
        await wait_until(lambda: sorted(outage.recorder.offsets(0)) == [0, 1], what="both applied after the outage")
        await wait_for_commits(bootstrap, group, topic, {0: 2})

    assert await topic_reader.read_all(dlq_of(topic)) == []
    for order_id in (first, second):
        assert (await order_row(database_url, order_id))["status"] == S.SUCCESSFUL_FINAL
    assert sample("kafka_consumer_partition_blocked_seconds", group=group, topic=topic, partition="0") == 0.0
    assert sample("kafka_consumer_records_total", group=group, topic=topic, result="dead_lettered") == 0
    assert sample("kafka_consumer_records_total", group=group, topic=topic, result="ok") == 2
    retries = sample("kafka_consumer_dependency_retries_total", group=group, topic=topic, dependency="database")
    assert retries == len(outage.failures)


async def test_a_redis_restart_holds_the_result_until_its_retry_is_queued_and_dead_letters_nothing(
    kafka_settings: KafkaSettings,
    topic_reader: TopicReader,
    database_url: str,
    engine: AsyncEngine,
    private_redis_server: RedisServer,
) -> None:
    topic, group, bootstrap = await a_topic(topic_reader), unique_topic("group"), kafka_settings.bootstrap_servers
    # Its charge timed out and the status check is due: the PSP's "no such charge" makes it retry (Redis).
    transient, succeeded = await two_orders(
        database_url, {"status": S.PENDING_STATUS_CHECK_LATER.value, "status_check_number": 1}
    )
    redis = create_redis(RedisSettings(url=private_redis_server.url))
    retry_settings = RetrySettings()
    outage = Outage(engine, RedisRetryQueue.from_settings(redis, retry_settings))
    private_redis_server.stop()
    await produce(
        bootstrap,
        topic,
        [
            (0, str(transient), a_result(transient, None, check_number=1, found=False)),
            (0, str(succeeded), a_result(succeeded, S.SUCCESSFUL_FINAL)),
        ],
    )
    restarted: RedisServer | None = None
    try:
        async with running(kafka_settings, SETTINGS, group_id=group, topics=[topic], handler=outage.handler()):
            await wait_until(
                lambda: outage.lasted(OUTAGE_SECONDS),
                within=OUTAGE_SECONDS + 10,
                what=f"Redis to have been down for {OUTAGE_SECONDS}s",
            )
            # The retry decision is committed in Postgres, but the retry is not queued: the record is not done. The
            # other order's result (no Redis needed) went ahead beside it, yet the partition's offset waits for both.
            assert outage.failed_offsets == {0}
            await wait_until(lambda: outage.recorder.offsets(0) == [1], what="the other order's result applied")
            assert (await order_row(database_url, transient))["status"] == S.FAILED_TRANSIENT_ERROR
            assert await committed_offsets(bootstrap, group, topic, 1) == {}
            assert await topic_reader.read_all(dlq_of(topic)) == []

            restarted = await start_redis_server(port=private_redis_server.port)
            await wait_until(lambda: outage.recorder.offsets(0) == [1, 0], what="both results applied after restart")
            await wait_for_commits(bootstrap, group, topic, {0: 2})

        assert await topic_reader.read_all(dlq_of(topic)) == []
        assert await redis.zrange(retry_settings.queue_key, 0, -1) == [f"{transient}:1".encode()]
        assert (await order_row(database_url, succeeded))["status"] == S.SUCCESSFUL_FINAL
        retries = sample("kafka_consumer_dependency_retries_total", group=group, topic=topic, dependency="redis")
        assert retries == len(outage.failures)
    finally:
        await redis.aclose()
        if restarted is not None:
            restarted.stop()
