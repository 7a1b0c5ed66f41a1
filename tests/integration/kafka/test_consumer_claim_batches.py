"""The PSP-call executor as deployed (decode, coalesced claims in real Postgres, the call) behind a real Kafka
consumer: what one bad record, or one order locked elsewhere, does to the records whose claims share its batch.

- A request whose attempt no column can hold is poison on its own: it is dead-lettered at once, and the valid
  requests around it are claimed and charged (none dead-lettered, none left INITIATED_PENDING).
- An order locked by hand fails its claim batch after the claim's lock timeout; the batch's other claims are then
  made one by one and charged while the lock is still held, and the locked one waits in place (a dependency
  failure), never dead-lettered, until the lock goes.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.execute_psp_call import ExecutePspCall
from payment_domain.events import psp_call_requested
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.status import PaymentOrderStatus
from payment_domain.topics import dlq_of
from payment_infrastructure.clock import SystemClock
from payment_infrastructure.kafka.settings import KafkaSettings
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.payment_order_store import PostgresPaymentOrderClaims
from payment_infrastructure.postgres.settings import DatabaseSettings
from payment_infrastructure.serialization import envelope_to_bytes, envelope_to_wire
from services.payment_consumers.handlers import psp_call_handler
from tests.fakes_consumers import FakeEventSink, FakePsp
from tests.fixtures.broker import TopicReader, unique_topic
from tests.integration.api.helpers import dsn
from tests.integration.kafka.consumer_support import fast_settings, produce, running, wait_for_commits, wait_until
from tests.integration.postgres.order_rows import StoredOrder, insert_orders, order_row

S = PaymentOrderStatus
CREATED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LOCK_TIMEOUT_MS = 200
# The production in-place policy (3 retries from 200 ms): a poisoned batch's neighbours used to run out of them.
SETTINGS = fast_settings(
    batch_size=16,
    in_place_retries=3,
    in_place_backoff_ms=200,
    in_place_backoff_max_ms=5_000,
    dependency_backoff_ms=50,
    dependency_backoff_max_ms=200,
)


@pytest.fixture
async def claims_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(url=database_url, pool_size=4), application_name="claim-batches")
    yield engine
    await engine.dispose()


class Executor:
    """psp_call_handler over the real claims; the PSP and the result sink are recording fakes (each charge succeeds)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.psp = FakePsp()
        self.events = FakeEventSink()
        self.claims = PostgresPaymentOrderClaims(engine, statement_timeout_ms=2_000, lock_timeout_ms=LOCK_TIMEOUT_MS)
        self.handler = psp_call_handler(
            ExecutePspCall(
                claims=self.claims,
                psp=self.psp,
                events=self.events,
                clock=SystemClock(),
                monotonic=SystemClock(),
                lease_seconds=30,
                call_budget_seconds=1.5,
            )
        )

    def charged(self) -> set[str]:
        return {request.merchant_reference for request in self.psp.charges}


def a_request(order_id: int, *, attempt: int = 0) -> bytes:
    order = PaymentOrder(
        payment_order_id=PaymentOrderId(order_id),
        payment_id=PaymentId(order_id),
        seller_id=f"SELLER-{order_id}",
        amount=Amount(1_000, Currency.EUR),
        status=S.INITIATED_PENDING,
        created_at=CREATED_AT,
        updated_at=CREATED_AT,
    )
    return envelope_to_bytes(
        psp_call_requested(order, attempt=attempt, trace_id=f"trace-{order_id}", parent_event_id="", now=CREATED_AT)
    )


def with_retry_count(raw: bytes, retry_count: int) -> bytes:
    wire = orjson.loads(raw)
    wire["data"]["retryCount"] = retry_count
    return orjson.dumps(wire)


async def pending_orders(database_url: str, count: int) -> list[int]:
    first = random.randrange(10**12, 10**13)
    ids = [first + i for i in range(count)]
    await insert_orders(database_url, [StoredOrder(i, CREATED_AT) for i in ids])
    return ids


async def a_topic(topic_reader: TopicReader) -> str:
    topic = await topic_reader.create(unique_topic("claims"), partitions=1)
    await topic_reader.create(dlq_of(topic), partitions=1)
    return topic


def dependency_retries(group: str, topic: str) -> float:
    labels = {"group": group, "topic": topic, "dependency": "database"}
    return REGISTRY.get_sample_value("kafka_consumer_dependency_retries_total", labels) or 0.0


async def test_a_request_no_column_can_hold_is_dead_lettered_alone_and_its_batch_neighbours_are_charged(
    kafka_settings: KafkaSettings, topic_reader: TopicReader, database_url: str, claims_engine: AsyncEngine
) -> None:
    topic, group, bootstrap = await a_topic(topic_reader), unique_topic("group"), kafka_settings.bootstrap_servers
    valid_before, poisoned, valid_after, last = await pending_orders(database_url, 4)
    poison = with_retry_count(a_request(poisoned), 2**31)  # an integer, but no int4 holds it
    await produce(
        bootstrap,
        topic,
        [
            (0, str(valid_before), a_request(valid_before)),
            (0, str(poisoned), poison),
            (0, str(valid_after), a_request(valid_after)),
            (0, str(last), a_request(last)),
        ],
    )
    executor = Executor(claims_engine)

    async with running(kafka_settings, SETTINGS, group_id=group, topics=[topic], handler=executor.handler):
        await wait_for_commits(bootstrap, group, topic, {0: 4}, within=30)

    [letter] = await topic_reader.wait_for(dlq_of(topic), 1)
    assert letter.value == poison
    assert executor.charged() == {f"paymentorder-{i}" for i in (valid_before, valid_after, last)}
    for order_id in (valid_before, valid_after, last):
        assert (await order_row(database_url, order_id))["psp_call_count"] == 1
    assert (await order_row(database_url, poisoned))["psp_call_count"] == 0
    assert len(await topic_reader.read_all(dlq_of(topic))) == 1


async def test_an_order_locked_by_hand_waits_in_place_while_the_other_claims_of_its_batch_are_charged(
    kafka_settings: KafkaSettings, topic_reader: TopicReader, database_url: str, claims_engine: AsyncEngine
) -> None:
    topic, group, bootstrap = await a_topic(topic_reader), unique_topic("group"), kafka_settings.bootstrap_servers
    orders = await pending_orders(database_url, 5)
    locked = orders[1]
    others = {f"paymentorder-{i}" for i in orders if i != locked}
    holder = await asyncpg.connect(dsn(database_url))
    lock = holder.transaction()
    await lock.start()
    await holder.execute("SELECT 1 FROM payment_orders WHERE payment_order_id = $1 FOR UPDATE", locked)
    executor = Executor(claims_engine)
    await produce(bootstrap, topic, [(0, str(i), a_request(i)) for i in orders])

    try:
        async with running(kafka_settings, SETTINGS, group_id=group, topics=[topic], handler=executor.handler):
            await wait_until(lambda: executor.charged() == others, within=20, what="the unlocked orders charged")
            await wait_until(
                lambda: dependency_retries(group, topic) >= 3, within=20, what="the locked order retried in place"
            )
            assert f"paymentorder-{locked}" not in executor.charged()
            assert await topic_reader.read_all(dlq_of(topic)) == []

            await lock.rollback()
            await wait_until(
                lambda: f"paymentorder-{locked}" in executor.charged(), within=20, what="the locked order charged"
            )
            await wait_for_commits(bootstrap, group, topic, {0: 5}, within=20)
    finally:
        if not holder.is_closed():
            await holder.close()

    assert await topic_reader.read_all(dlq_of(topic)) == []
    assert (await order_row(database_url, locked))["psp_call_count"] == 1
    assert [envelope_to_wire(e)["data"]["paymentOrderId"] for e in executor.events.emitted].count(str(locked)) == 1
