"""A database outage longer than the in-place retries: the real result applier, over a Postgres reached through a
proxy the test cuts, holds the record (and the records behind it on its partition) until the database is back,
then applies every record in order. Nothing goes to the DLQ: an outage is not a poison message."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.apply_psp_result import ApplyPspResult, ResultPolicy
from payment_domain.events import EventEnvelope, psp_result_updated
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.status import PaymentOrderStatus
from payment_domain.topics import dlq_of
from payment_infrastructure.clock import SystemClock
from payment_infrastructure.kafka.settings import KafkaSettings
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.payment_order_store import PostgresResultStore
from payment_infrastructure.postgres.settings import DatabaseSettings
from payment_infrastructure.serialization import envelope_to_bytes
from services.payment_consumers.handlers import result_handler
from tests.fixtures.broker import TopicReader, unique_topic
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

CREATED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# The production defaults: 3 retries 200, 400, 800 ms apart, so a failure is given up after ~1.4 s.
PRODUCTION_IN_PLACE = {"in_place_retries": 3, "in_place_backoff_ms": 200, "in_place_backoff_max_ms": 5_000}
OUTAGE_SECONDS = 2.5


class NoRetries:
    """A success is never retried: the retry queue must not be touched."""

    async def schedule(self, envelope: EventEnvelope, *, delay_ms: int) -> bool:
        raise AssertionError(f"unexpected retry of {envelope.aggregate_id}")


@pytest.fixture
async def proxied_engine(database_url: str, postgres_proxy: TcpProxy) -> AsyncIterator[AsyncEngine]:
    url = make_url(database_url).set(port=postgres_proxy.port).render_as_string(hide_password=False)
    engine = create_engine(
        DatabaseSettings(url=url, pool_size=2, connect_timeout_seconds=1.0), application_name="outage"
    )
    yield engine
    await engine.dispose()


def a_success(order_id: int) -> bytes:
    order = PaymentOrder(
        payment_order_id=PaymentOrderId(order_id),
        payment_id=PaymentId(order_id),
        seller_id=f"SELLER-{order_id}",
        amount=Amount(1_000, Currency.EUR),
        status=PaymentOrderStatus.INITIATED_PENDING,
        created_at=CREATED_AT,
        updated_at=CREATED_AT,
    )
    envelope = psp_result_updated(
        order,
        attempt=0,
        psp_status=PaymentOrderStatus.SUCCESSFUL_FINAL,
        latency_ms=40,
        source="charge",
        trace_id=f"trace-{order_id}",
        parent_event_id=f"request-{order_id}",
        now=CREATED_AT,
    )
    return envelope_to_bytes(envelope)


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_database_outage_longer_than_the_in_place_retries_holds_the_partition_and_dead_letters_nothing(
    kafka_settings: KafkaSettings,
    topic_reader: TopicReader,
    database_url: str,
    postgres_proxy: TcpProxy,
    proxied_engine: AsyncEngine,
) -> None:
    topic = await topic_reader.create(unique_topic("outage"), partitions=1)
    await topic_reader.create(dlq_of(topic), partitions=1)
    group = unique_topic("group")
    bootstrap = kafka_settings.bootstrap_servers
    first, second = (random.randrange(10**12, 10**13) + n for n in (0, 1))
    await insert_orders(database_url, [StoredOrder(first, CREATED_AT), StoredOrder(second, CREATED_AT)])
    apply = ApplyPspResult(
        store=PostgresResultStore(proxied_engine, statement_timeout_ms=2_000, lock_timeout_ms=250),
        retries=NoRetries(),  # type: ignore[arg-type]
        clock=SystemClock(),
        policy=ResultPolicy(),
        randint=random.Random(7).randint,
        consumer=f"outage-{uuid.uuid4().hex[:8]}",
    )
    real_handler = result_handler(apply)
    failures: list[tuple[int, float]] = []

    async def noting_failures(record: object) -> None:
        try:
            await real_handler(record)  # type: ignore[arg-type]
        except Exception:
            failures.append((record.offset, time.monotonic()))  # type: ignore[attr-defined]
            raise

    recorder = Recorder()
    await postgres_proxy.sever()
    await produce(bootstrap, topic, [(0, str(first), a_success(first)), (0, str(second), a_success(second))])
    settings = fast_settings(**PRODUCTION_IN_PLACE, dependency_backoff_ms=50, dependency_backoff_max_ms=200)
    blocked = {"group": group, "topic": topic, "partition": "0"}

    async with running(
        kafka_settings, settings, group_id=group, topics=[topic], handler=recorder.handler("c1", noting_failures)
    ):
        await wait_until(
            lambda: bool(failures) and failures[-1][1] - failures[0][1] >= OUTAGE_SECONDS,
            within=OUTAGE_SECONDS + 10,
            what=f"the database to have been unreachable for {OUTAGE_SECONDS}s",
        )
        # Well past the in-place retries: the first record is still the one being tried, the second waits behind it.
        assert {offset for offset, _ in failures} == {0}
        assert {p.offset for p in recorder.started} == {0}
        assert _sample("kafka_consumer_partition_blocked_seconds", blocked) >= OUTAGE_SECONDS - 0.1
        assert await committed_offsets(bootstrap, group, topic, 1) == {}
        assert await topic_reader.read_all(dlq_of(topic)) == []

        postgres_proxy.restore()
        await wait_until(lambda: recorder.offsets(0) == [0, 1], what="both results applied after the outage")
        await wait_for_commits(bootstrap, group, topic, {0: 2})

    assert await topic_reader.read_all(dlq_of(topic)) == []
    for order_id in (first, second):
        assert (await order_row(database_url, order_id))["status"] == "SUCCESSFUL_FINAL"
    assert _sample("kafka_consumer_partition_blocked_seconds", blocked) == 0.0
    records = {"group": group, "topic": topic}
    assert _sample("kafka_consumer_records_total", records | {"result": "dead_lettered"}) == 0
    assert _sample("kafka_consumer_records_total", records | {"result": "ok"}) == 2
    assert _sample("kafka_consumer_dependency_retries_total", records | {"dependency": "database"}) == len(failures)
