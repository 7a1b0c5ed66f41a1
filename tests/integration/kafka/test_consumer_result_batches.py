"""The result applier as deployed (decode, the result batcher, `apply_many` in real Postgres) behind a real Kafka
consumer: two answers about one order that name different payments are keyed apart by the batcher and so can share
a batch. The batch is then applied one answer at a time: the answer naming a payment its order does not belong to
is dead-lettered alone, and every valid answer of the batch is applied (none dead-lettered).

The batch is made to form: one answer whose payment the test holds locked takes the batcher's only slot, the
others (each on a partition of its own, so none waits behind another in its partition's batch) queue behind it,
and the lock is released once all of them wait."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.apply_psp_result import ApplyPspResult, ResultPolicy
from payment_domain.events import EventEnvelope, psp_result_updated
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.ledger import CommissionSchedule
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.psp_result import ResultSource
from payment_domain.status import PaymentOrderStatus
from payment_domain.topics import dlq_of
from payment_infrastructure.kafka.settings import KafkaSettings
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.payment_order_store import PostgresResultStore
from payment_infrastructure.postgres.settings import DatabaseSettings
from payment_infrastructure.serialization import envelope_to_bytes
from services.payment_consumers.handlers import result_batcher, result_handler
from tests.fixtures.broker import TopicReader, unique_topic
from tests.fixtures.ports import wait_until as wait_until_async
from tests.integration.api.helpers import dsn, fetch
from tests.integration.kafka.consumer_support import fast_settings, produce, running, wait_for_commits, wait_until
from tests.integration.postgres.order_rows import StoredOrder, insert_orders, order_row

S = PaymentOrderStatus
CREATED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SETTINGS = fast_settings(batch_size=16, in_place_retries=3, in_place_backoff_ms=200, in_place_backoff_max_ms=5_000)


class NoRetries:
    async def schedule(self, envelope: EventEnvelope, *, delay_ms: int) -> bool:
        raise AssertionError(f"unexpected retry of {envelope.aggregate_id}")


@pytest.fixture
async def results_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(url=database_url, pool_size=4), application_name="result-batches")
    yield engine
    await engine.dispose()


def an_answer(order_id: int, status: PaymentOrderStatus, *, payment_id: int | None = None) -> bytes:
    order = PaymentOrder(
        payment_order_id=PaymentOrderId(order_id),
        payment_id=PaymentId(order_id if payment_id is None else payment_id),
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
        source=ResultSource.CHARGE,
        trace_id=f"trace-{order_id}",
        parent_event_id=str(uuid.uuid4()),
        now=CREATED_AT,
    )
    return envelope_to_bytes(envelope)


async def lock_waits(database_url: str) -> int:
    rows = await fetch(database_url, "SELECT count(*) AS waiting FROM pg_locks WHERE NOT granted")
    return int(rows[0]["waiting"])


async def test_an_answer_naming_another_payment_is_dead_lettered_alone_and_its_batch_neighbours_apply(
    kafka_settings: KafkaSettings, topic_reader: TopicReader, database_url: str, results_engine: AsyncEngine
) -> None:
    topic = await topic_reader.create(unique_topic("results"), partitions=5)
    await topic_reader.create(dlq_of(topic), partitions=5)
    group, bootstrap = unique_topic("group"), kafka_settings.bootstrap_servers
    first = random.randrange(10**12, 10**13)
    blocker, order_a, order_b, order_c = first, first + 1, first + 2, first + 3
    await insert_orders(database_url, [StoredOrder(i, CREATED_AT) for i in (blocker, order_a, order_b, order_c)])
    apply = ApplyPspResult(
        store=PostgresResultStore(results_engine, statement_timeout_ms=30_000, lock_timeout_ms=20_000),
        retries=NoRetries(),  # type: ignore[arg-type]
        policy=ResultPolicy(),
        randint=random.Random(3).randint,
        consumer=f"result-batches-{uuid.uuid4().hex[:8]}",
        commission=CommissionSchedule(default_bps=1_000),
    )
    batcher = result_batcher(apply, concurrency=1, max_batch=32)
    forged = an_answer(order_a, S.FAILED_FINAL, payment_id=first + 9)  # order A, but a payment it is not part of
    holder = await asyncpg.connect(dsn(database_url))
    lock = holder.transaction()
    await lock.start()
    await holder.execute("SELECT 1 FROM payments WHERE payment_id = $1 FOR UPDATE", blocker)

    async def blocked_on_the_lock() -> bool:
        return await lock_waits(database_url) >= 1

    try:
        async with running(
            kafka_settings, SETTINGS, group_id=group, topics=[topic], handler=result_handler(batcher.submit)
        ):
            await produce(bootstrap, topic, [(4, str(blocker), an_answer(blocker, S.SUCCESSFUL_FINAL))])
            await wait_until(lambda: batcher.queued == 0, what="the blocker's batch taken")
            await wait_until_async(blocked_on_the_lock, timeout=10, interval=0.05, what="the blocker's batch waiting")
            await produce(
                bootstrap,
                topic,
                [
                    (0, str(order_a), an_answer(order_a, S.SUCCESSFUL_FINAL)),
                    (1, str(order_b), an_answer(order_b, S.SUCCESSFUL_FINAL)),
                    (2, str(order_a), forged),
                    (3, str(order_c), an_answer(order_c, S.DECLINED_FINAL)),
                ],
            )
            await wait_until(lambda: batcher.queued >= 4, within=20, what="the four answers queued together")
            await lock.rollback()
            await wait_for_commits(bootstrap, group, topic, {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}, within=30)
    finally:
        if not holder.is_closed():
            await holder.close()

    letters = await topic_reader.read_all(dlq_of(topic))
    assert [letter.value for letter in letters] == [forged]
    assert (await order_row(database_url, order_a))["status"] == S.SUCCESSFUL_FINAL
    assert (await order_row(database_url, order_b))["status"] == S.SUCCESSFUL_FINAL
    assert (await order_row(database_url, order_c))["status"] == S.DECLINED_FINAL
    assert (await order_row(database_url, blocker))["status"] == S.SUCCESSFUL_FINAL
