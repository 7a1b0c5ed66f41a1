"""The delivery policy of one record: a dependency outage holds the record (and its partition) until the dependency
is back, however long that takes; only input that can never succeed, or a failure nobody recognises that outlives
the in-place retries, goes to the DLQ. Time is fake, so a ten-minute outage takes no time at all."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
)
from prometheus_client import REGISTRY
from redis.exceptions import BusyLoadingError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import exc as sa_exc

from payment_application.errors import DependencyTimeout, DependencyUnavailable
from payment_infrastructure.kafka.consumer_settings import ConsumerSettings
from payment_infrastructure.kafka.failures import FailureKind, classify
from payment_infrastructure.kafka.record_processor import RecordProcessor
from payment_infrastructure.kafka.records import ConsumedRecord, PoisonMessage

TOPIC = "payment_order_psp_result_updated_topic"
RECORD = ConsumedRecord(TOPIC, 3, 41, "order-9", b"{}", {"traceId": b"t-9"}, 0)
SETTINGS = ConsumerSettings(
    in_place_retries=3,
    in_place_backoff_ms=200,
    in_place_backoff_max_ms=5_000,
    dependency_backoff_ms=100,
    dependency_backoff_max_ms=1_000,
)
DATABASE_DOWN = DependencyUnavailable("database", "cannot reach the database")


class FakeTime:
    """A monotonic clock that only moves when the processor sleeps."""

    def __init__(self) -> None:
        self.now = 5_000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class RecordingDeadLetters:
    def __init__(self) -> None:
        self.letters: list[tuple[ConsumedRecord, BaseException, int]] = []

    async def publish(self, record: ConsumedRecord, error: BaseException, *, group_id: str, attempts: int) -> None:
        self.letters.append((record, error, attempts))


class ScriptedHandler:
    """Raises the scripted errors in turn, then succeeds; notes the blocked-seconds gauge at every call."""

    def __init__(self, group: str, errors: list[BaseException]) -> None:
        self.group = group
        self.errors = list(errors)
        self.calls = 0
        self.done = 0
        self.blocked_seen: list[float | None] = []

    async def __call__(self, record: ConsumedRecord) -> None:
        self.calls += 1
        self.blocked_seen.append(blocked_seconds(self.group, record))
        if self.errors:
            raise self.errors.pop(0)
        self.done += 1


def blocked_seconds(group: str, record: ConsumedRecord = RECORD) -> float | None:
    labels = {"group": group, "topic": record.topic, "partition": str(record.partition)}
    return REGISTRY.get_sample_value("kafka_consumer_partition_blocked_seconds", labels)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def largest(low: int, high: int) -> int:
    return high


def a_group() -> str:
    return f"group-{uuid.uuid4().hex[:8]}"


def processor(
    handler: Callable[[ConsumedRecord], object],
    dead_letters: RecordingDeadLetters,
    time: FakeTime,
    *,
    group: str,
    settings: ConsumerSettings = SETTINGS,
) -> RecordProcessor:
    return RecordProcessor(
        handler,  # type: ignore[arg-type]
        dead_letters,
        group_id=group,
        settings=settings,
        sleep=time.sleep,
        monotonic=time.monotonic,
        randint=largest,
    )


async def test_a_dependency_outage_longer_than_the_in_place_retries_holds_the_record_until_it_succeeds() -> None:
    group, time, dead_letters = a_group(), FakeTime(), RecordingDeadLetters()
    handler = ScriptedHandler(group, [DATABASE_DOWN] * 12)

    await processor(handler, dead_letters, time, group=group).process(RECORD)

    assert dead_letters.letters == []
    assert (handler.calls, handler.done) == (13, 1)
    # Doubling from 100 ms, capped at 1 s (the jitter is pinned to its top): ~9 s of outage, never given up.
    assert time.sleeps == [0.1, 0.2, 0.4, 0.8] + [1.0] * 8
    assert sample("kafka_consumer_records_total", group=group, topic=TOPIC, result="ok") == 1
    assert sample("kafka_consumer_records_total", group=group, topic=TOPIC, result="dead_lettered") == 0
    assert sample("kafka_consumer_dependency_retries_total", group=group, topic=TOPIC, dependency="database") == 12


async def test_the_blocked_gauge_counts_from_the_first_dependency_failure_and_drops_to_zero_once_done() -> None:
    group, time, dead_letters = a_group(), FakeTime(), RecordingDeadLetters()
    handler = ScriptedHandler(group, [DATABASE_DOWN] * 4)

    await processor(handler, dead_letters, time, group=group).process(RECORD)

    # At each call: the seconds since the first failure (the first call found the partition flowing).
    assert handler.blocked_seen[0] in (None, 0.0)
    assert handler.blocked_seen[1:] == pytest.approx([0.1, 0.3, 0.7, 1.5])
    assert blocked_seconds(group) == 0.0


async def test_the_blocked_gauge_is_live_between_retries() -> None:
    group, time, dead_letters = a_group(), FakeTime(), RecordingDeadLetters()
    release, waiting = asyncio.Event(), asyncio.Event()
    seen: list[float | None] = []

    async def sleep(seconds: float) -> None:
        time.now += seconds
        seen.append(blocked_seconds(group))
        waiting.set()
        await release.wait()

    async def handler(record: ConsumedRecord) -> None:
        if not release.is_set():
            raise DATABASE_DOWN

    blocked = RecordProcessor(
        handler, dead_letters, group_id=group, settings=SETTINGS, sleep=sleep, monotonic=time.monotonic
    )
    task = asyncio.create_task(blocked.process(RECORD))
    await waiting.wait()
    time.now += 150.0  # a scrape long after the last failure sees the whole outage so far

    assert blocked_seconds(group) == pytest.approx(150.0 + seen[0])
    release.set()
    await task
    assert blocked_seconds(group) == 0.0


async def test_dependency_failures_do_not_spend_the_in_place_retries_of_other_failures() -> None:
    group, time, dead_letters = a_group(), FakeTime(), RecordingDeadLetters()
    handler = ScriptedHandler(group, [DATABASE_DOWN] * 6 + [RuntimeError("bug")] * 3)

    await processor(handler, dead_letters, time, group=group).process(RECORD)

    assert dead_letters.letters == []
    assert (handler.calls, handler.done) == (10, 1)


async def test_poison_goes_to_the_dlq_at_once() -> None:
    group, time, dead_letters = a_group(), FakeTime(), RecordingDeadLetters()
    poison = PoisonMessage("amountValue is not an integer")
    handler = ScriptedHandler(group, [poison])

    await processor(handler, dead_letters, time, group=group).process(RECORD)

    assert dead_letters.letters == [(RECORD, poison, 1)]
    assert (handler.calls, handler.done, time.sleeps) == (1, 0, [])
    assert blocked_seconds(group) is None  # never blocked


async def test_poison_after_a_dependency_outage_is_dead_lettered_and_the_partition_flows_again() -> None:
    group, time, dead_letters = a_group(), FakeTime(), RecordingDeadLetters()
    poison = PoisonMessage("payment order 9 does not exist")
    handler = ScriptedHandler(group, [DATABASE_DOWN, DATABASE_DOWN, poison])

    await processor(handler, dead_letters, time, group=group).process(RECORD)

    assert dead_letters.letters == [(RECORD, poison, 3)]
    assert blocked_seconds(group) == 0.0


async def test_an_unrecognised_failure_is_dead_lettered_after_the_in_place_retries() -> None:
    group, time, dead_letters = a_group(), FakeTime(), RecordingDeadLetters()
    bug = RuntimeError("attempt 4 failed")
    handler = ScriptedHandler(group, [RuntimeError("attempt 1"), RuntimeError("2"), RuntimeError("3"), bug])

    await processor(handler, dead_letters, time, group=group).process(RECORD)

    assert dead_letters.letters == [(RECORD, bug, 4)]
    assert time.sleeps == [0.2, 0.4, 0.8]
    assert sample("kafka_consumer_records_total", group=group, topic=TOPIC, result="retried") == 3


async def test_cancellation_while_blocked_propagates_and_clears_the_gauge() -> None:
    group, time, dead_letters = a_group(), FakeTime(), RecordingDeadLetters()
    waiting = asyncio.Event()

    async def sleep(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()  # a rebalance or a shutdown comes first

    async def handler(record: ConsumedRecord) -> None:
        raise DATABASE_DOWN

    blocked = RecordProcessor(
        handler, dead_letters, group_id=group, settings=SETTINGS, sleep=sleep, monotonic=time.monotonic
    )
    task = asyncio.create_task(blocked.process(RECORD))
    await waiting.wait()
    time.now += 30.0
    assert blocked_seconds(group) == 30.0

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert dead_letters.letters == []
    assert blocked_seconds(group) == 0.0


async def test_a_dlq_that_cannot_take_the_record_shows_the_partition_blocked() -> None:
    group, time = a_group(), FakeTime()
    failures: list[float | None] = []

    class DownDeadLetters(RecordingDeadLetters):
        async def publish(self, record: ConsumedRecord, error: BaseException, *, group_id: str, attempts: int) -> None:
            failures.append(blocked_seconds(group))
            if len(failures) <= 3:
                raise KafkaTimeoutError("no acknowledgement")
            await super().publish(record, error, group_id=group_id, attempts=attempts)

    dead_letters = DownDeadLetters()
    handler = ScriptedHandler(group, [PoisonMessage("bad")])

    await processor(handler, dead_letters, time, group=group).process(RECORD)

    assert len(dead_letters.letters) == 1
    assert failures[0] in (None, 0.0)
    assert failures[1:] == pytest.approx([0.2, 0.6, 1.4])  # the DLQ backoff: 200, 400, 800 ms
    assert blocked_seconds(group) == 0.0


def _sqlalchemy_connection_lost() -> BaseException:
    try:
        raise sa_exc.OperationalError("SELECT 1", {}, ConnectionResetError("connection reset by peer"))
    except sa_exc.OperationalError as error:
        return error


def _wrapped(error: BaseException) -> BaseException:
    try:
        raise RuntimeError("while applying the result") from error
    except RuntimeError as wrapper:
        return wrapper


@pytest.mark.parametrize(
    ("error", "dependency"),
    [
        (DependencyUnavailable("database", "cannot reach the database"), "database"),
        (DependencyTimeout("database", "lock timeout"), "database"),
        (DependencyUnavailable("redis", "cannot schedule retry 9:1"), "redis"),
        (RedisConnectionError("Connection refused"), "redis"),
        (RedisTimeoutError("Timeout reading from socket"), "redis"),
        (BusyLoadingError("Redis is loading the dataset in memory"), "redis"),
        (ReadOnlyError("You can't write against a read only replica."), "redis"),
        (KafkaTimeoutError("no acknowledgement within 20.0s"), "kafka"),
        (KafkaConnectionError("connection refused"), "kafka"),
        (NotLeaderForPartitionError(), "kafka"),
        (ConnectionRefusedError(111, "Connection refused"), "network"),
        (TimeoutError(), "network"),
        (_sqlalchemy_connection_lost(), "database"),
        (_wrapped(DependencyUnavailable("database", "transient failure (SQLSTATE 40001)")), "database"),
    ],
)
def test_backing_service_failures_are_dependency_failures(error: BaseException, dependency: str) -> None:
    failure = classify(error)

    assert (failure.kind, failure.dependency) == (FailureKind.DEPENDENCY, dependency)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (PoisonMessage("not a JSON envelope"), FailureKind.POISON),
        (PoisonMessage("ValueError: bad"), FailureKind.POISON),
        (RuntimeError("a bug"), FailureKind.UNEXPECTED),
        (AttributeError("'NoneType' object has no attribute 'status'"), FailureKind.UNEXPECTED),
        (MessageSizeTooLargeError(), FailureKind.UNEXPECTED),
    ],
)
def test_everything_else_is_poison_or_unexpected(error: BaseException, kind: FailureKind) -> None:
    assert classify(error).kind is kind


def test_poison_is_poison_even_when_a_dependency_error_caused_it() -> None:
    try:
        raise PoisonMessage("the handler decided") from DATABASE_DOWN
    except PoisonMessage as poison:
        assert classify(poison).kind is FailureKind.POISON


async def test_the_blocked_gauge_stays_up_while_any_record_of_the_partition_still_waits() -> None:
    """A batch runs several records of one partition at once: one that finishes does not clear the other's wait."""
    group, time, dead_letters = a_group(), FakeTime(), RecordingDeadLetters()
    first_blocked, first_release, second_release = asyncio.Event(), asyncio.Event(), asyncio.Event()
    second = ConsumedRecord(TOPIC, RECORD.partition, RECORD.offset + 1, "order-10", b"{}", {}, 0)

    async def handler(record: ConsumedRecord) -> None:
        release = first_release if record is RECORD else second_release
        if not release.is_set():
            raise DATABASE_DOWN

    async def sleep(seconds: float) -> None:
        first_blocked.set()
        await asyncio.sleep(0)

    blocked = RecordProcessor(
        handler, dead_letters, group_id=group, settings=SETTINGS, sleep=sleep, monotonic=time.monotonic
    )
    first = asyncio.create_task(blocked.process(RECORD))
    await first_blocked.wait()
    time.now += 10.0
    second_task = asyncio.create_task(blocked.process(second))
    time.now += 5.0
    second_release.set()
    await second_task

    assert blocked_seconds(group) == pytest.approx(15.0)  # the first record still waits, since 15 s
    first_release.set()
    await first
    assert blocked_seconds(group) == 0.0
