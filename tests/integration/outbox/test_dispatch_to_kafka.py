"""The dispatch use case end to end: Postgres outbox → Apache Kafka, with crashes, restarts and a broker outage."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.dispatch_outbox import DispatchOutbox, message_of
from payment_application.ports.outbox import OutboxRecord
from payment_application.relay_report import RelayReport
from payment_infrastructure.kafka.admin import create_topics
from payment_infrastructure.kafka.producer import KafkaEventPublisher
from payment_infrastructure.kafka.settings import KafkaSettings
from payment_infrastructure.postgres.outbox_notifications import PostgresOutboxNotifications
from payment_infrastructure.postgres.outbox_store import PostgresOutboxStore
from payment_infrastructure.runtime.pacing import Pacing
from services.payment_service.outbox_relay import outbox_relay
from tests.fixtures.broker import ConsumedMessage, KafkaFactory, TopicReader
from tests.integration.outbox.support import NewRow, expire_leases, insert_rows, row_states

LEASE = 30.0


class _Reports:
    def __init__(self, *, stop_after: int | None = None, stop: asyncio.Event | None = None) -> None:
        self.done: list[RelayReport[OutboxRecord]] = []
        self.failed: list[Exception] = []
        self._stop_after = stop_after
        self._stop = stop

    def batch_done(self, report: RelayReport[OutboxRecord], seconds: float) -> None:
        self.done.append(report)
        if self._stop is not None and self._stop_after is not None and len(self.done) >= self._stop_after:
            self._stop.set()

    def batch_failed(self, error: Exception, seconds: float) -> None:
        self.failed.append(error)


class _NeverWakes:
    def reset(self) -> None:
        pass

    async def wait(self, max_seconds: float) -> bool:
        await asyncio.sleep(max_seconds)
        return False


def _rows(topic: str, aggregates: int, per_aggregate: int = 1) -> list[NewRow]:
    base = datetime.now(UTC) - timedelta(seconds=30)
    return [
        NewRow(
            topic=topic,
            aggregate_id=str(500_000 + a),
            seq=s,
            created_at=base + timedelta(microseconds=s * aggregates + a),
        )
        for s in range(per_aggregate)
        for a in range(aggregates)
    ]


async def _drain(dispatch: DispatchOutbox, *, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while (await dispatch.dispatch_batch()).claimed:
        assert time.monotonic() < deadline, "the outbox never ran dry"


async def _wait_until(condition: Callable[[], bool], *, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _seq(message: ConsumedMessage) -> int:
    seq: int = orjson.loads(message.value)["data"]["seq"]
    return seq


async def test_dispatched_rows_go_out_with_their_payload_key_and_headers_and_are_marked_sent(
    outbox: AsyncEngine, publisher: KafkaEventPublisher, topic: str, topic_reader: TopicReader
) -> None:
    [row] = _rows(topic, 1)
    await insert_rows(outbox, [row])
    dispatch = DispatchOutbox(PostgresOutboxStore(outbox), publisher, batch_size=10, lease_seconds=LEASE)

    report = await dispatch.dispatch_batch()
    [message] = await topic_reader.read_all(topic)

    assert (len(report.claimed), report.sent, report.failures) == (1, 1, ())
    assert message.key == row.aggregate_id
    assert message.value == row.payload
    assert message.headers == {
        "eventId": row.event_id.encode(),
        "eventType": b"payment_order_created",
        "traceId": row.trace_id.encode(),
        "parentEventId": row.event_id.encode(),
        "aggregateId": row.aggregate_id.encode(),
    }
    assert (await row_states(outbox))[row.event_id].status == "SENT"


async def test_concurrent_dispatchers_never_publish_a_row_twice_within_a_lease(
    outbox: AsyncEngine, kafka_settings: KafkaSettings, topic: str, topic_reader: TopicReader
) -> None:
    rows = _rows(topic, 1_500)
    await insert_rows(outbox, rows)
    store = PostgresOutboxStore(outbox)
    async with (
        KafkaEventPublisher.from_settings(kafka_settings) as first,
        KafkaEventPublisher.from_settings(kafka_settings) as second,
    ):
        dispatchers = [
            DispatchOutbox(store, publisher, batch_size=40, lease_seconds=LEASE)
            for publisher in (first, second, first, second)
        ]
        await asyncio.gather(*(_drain(d) for d in dispatchers))

    published = Counter(m.headers["eventId"].decode() for m in await topic_reader.read_all(topic))
    assert published == Counter({r.event_id: 1 for r in rows})
    assert {s.status for s in (await row_states(outbox)).values()} == {"SENT"}


async def test_a_dispatcher_killed_between_publish_and_mark_causes_a_duplicate_never_a_loss(
    outbox: AsyncEngine, publisher: KafkaEventPublisher, topic: str, topic_reader: TopicReader
) -> None:
    rows = _rows(topic, 5)
    await insert_rows(outbox, rows)
    store = PostgresOutboxStore(outbox)
    # The doomed dispatcher: claims and publishes, then dies before marking anything sent.
    doomed = await store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)
    assert await publisher.publish_batch([message_of(r) for r in doomed.records]) == [None] * 5
    successor = DispatchOutbox(store, publisher, batch_size=10, lease_seconds=LEASE)

    during_lease = await successor.dispatch_batch()
    await expire_leases(outbox)
    after_expiry = await successor.dispatch_batch()

    assert during_lease.claimed == ()
    assert (len(after_expiry.claimed), after_expiry.sent) == (5, 5)
    published = Counter(m.headers["eventId"].decode() for m in await topic_reader.read_all(topic))
    assert published == Counter({r.event_id: 2 for r in rows})
    states = await row_states(outbox)
    assert {(s.status, s.publish_attempts) for s in states.values()} == {("SENT", 2)}


async def test_per_key_order_holds_across_crashes_and_restarts(
    outbox: AsyncEngine, kafka_settings: KafkaSettings, topic: str, topic_reader: TopicReader
) -> None:
    rows = _rows(topic, aggregates=30, per_aggregate=5)
    await insert_rows(outbox, rows)
    store = PostgresOutboxStore(outbox)

    async with KafkaEventPublisher.from_settings(kafka_settings) as publisher:
        first_life = DispatchOutbox(store, publisher, batch_size=7, lease_seconds=LEASE)
        for _ in range(6):
            await first_life.dispatch_batch()
        # Crash: a batch leaves published but unmarked.
        crashed = await store.claim(lease_token=uuid.uuid4(), limit=7, lease_seconds=LEASE)
        await publisher.publish_batch([message_of(r) for r in crashed.records])
    async with KafkaEventPublisher.from_settings(kafka_settings) as publisher:
        second_life = [DispatchOutbox(store, publisher, batch_size=5, lease_seconds=LEASE) for _ in range(2)]
        await asyncio.gather(*(d.dispatch_batch() for d in second_life))
        await expire_leases(outbox)
        await asyncio.gather(*(_drain(d) for d in second_life))

    consumed = await topic_reader.read_all(topic)
    by_key: dict[str, list[int]] = {}
    for message in sorted(consumed, key=lambda m: (m.partition, m.offset)):
        assert message.key is not None
        by_key.setdefault(message.key, []).append(_seq(message))
    assert crashed.records, "the crash must leave rows behind for the test to mean anything"
    assert set(by_key) == {r.aggregate_id for r in rows}
    for seqs in by_key.values():
        assert seqs == sorted(seqs), f"out of order: {seqs}"
        assert sorted(set(seqs)) == list(range(5))
    assert {s.status for s in (await row_states(outbox)).values()} == {"SENT"}


async def test_with_the_broker_down_rows_stay_new_and_go_out_once_it_is_back(
    outbox: AsyncEngine, kafka_factory: KafkaFactory
) -> None:
    broker = await kafka_factory()
    settings = KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers, linger_ms=1, request_timeout_ms=500, delivery_timeout_ms=1_500
    )
    topic = "outage_topic"
    await create_topics(settings, {topic: 2})
    publisher = KafkaEventPublisher.from_settings(settings)
    await publisher.start()
    try:
        dispatch = DispatchOutbox(PostgresOutboxStore(outbox), publisher, batch_size=50, lease_seconds=LEASE)
        rows = _rows(topic, 20)
        await broker.stop()
        await insert_rows(outbox, rows)

        during_outage = await dispatch.dispatch_batch()
        states_during = await row_states(outbox)

        await broker.start()  # the same data directory: the topic is still there
        reader = TopicReader(broker.bootstrap_servers)
        sent = 0
        deadline = time.monotonic() + 20
        while sent < len(rows):
            assert time.monotonic() < deadline, "rows did not go out after the broker came back"
            sent += (await dispatch.dispatch_batch()).sent
        published = Counter(m.headers["eventId"].decode() for m in await reader.read_all(topic))
    finally:
        await publisher.stop()
        await broker.stop()

    assert (len(during_outage.claimed), during_outage.sent, during_outage.released) == (20, 0, 20)
    assert {(s.status, s.lease_token) for s in states_during.values()} == {("NEW", None)}
    # At least once: a record whose acknowledgement timed out during the outage stays queued in the (idempotent)
    # producer and may still land after the broker is back, beside the dispatcher's re-send. Consumers dedupe by
    # eventId; what must never happen is a row that is not published at all.
    assert set(published) == {r.event_id for r in rows}
    assert max(published.values()) <= 2
    assert {s.status for s in (await row_states(outbox)).values()} == {"SENT"}


async def test_an_idle_dispatch_loop_is_woken_by_the_commit_notification(
    outbox: AsyncEngine, database_url: str, publisher: KafkaEventPublisher, topic: str, topic_reader: TopicReader
) -> None:
    notifications = PostgresOutboxNotifications(database_url)
    await notifications.start()
    reports = _Reports()
    loop = outbox_relay(
        DispatchOutbox(PostgresOutboxStore(outbox), publisher, batch_size=10, lease_seconds=LEASE),
        notifications,
        reports,
        Pacing(idle_min=60.0, idle_max=60.0),  # without the notification nothing would happen for a minute
    )
    stop = asyncio.Event()
    running = asyncio.create_task(loop(stop))
    try:
        await _wait_until(lambda: len(reports.done) >= 1)  # the first, empty, round is done
        [row] = _rows(topic, 1)
        started = time.monotonic()
        await insert_rows(outbox, [row])
        [message] = await topic_reader.wait_for(topic, 1, within=10)
        latency = time.monotonic() - started
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
        await notifications.stop()

    assert message.headers["eventId"] == row.event_id.encode()
    assert latency < 5
    assert reports.failed == []


async def test_a_stopped_loop_finishes_its_batch_and_leaves_no_lease_behind(
    outbox: AsyncEngine, publisher: KafkaEventPublisher, topic: str
) -> None:
    rows = _rows(topic, 300)
    await insert_rows(outbox, rows)
    stop = asyncio.Event()
    reports = _Reports(stop_after=2, stop=stop)
    loop = outbox_relay(
        DispatchOutbox(PostgresOutboxStore(outbox), publisher, batch_size=20, lease_seconds=LEASE),
        _NeverWakes(),
        reports,
        Pacing(),
        workers=2,
    )
    await asyncio.wait_for(loop(stop), 10)

    states = (await row_states(outbox)).values()
    sent = sum(1 for s in states if s.status == "SENT")
    assert sent == sum(r.sent for r in reports.done)
    assert 0 < sent < len(rows)
    assert {s.lease_token for s in states} == {None}
