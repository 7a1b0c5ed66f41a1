"""The consumer runtime every payment-consumers worker uses: per-order order, bounded work, at-least-once.

One aiokafka consumer polls with `getmany`; records go to one worker task per assigned partition, which runs them
in batches (offset order per key, different keys side by side; partitions concurrently). A partition whose queue
is full is paused and seeked back to the first record it did not take. Offsets are committed (offset + 1 of the
last finished record) only after the handler returned or the record's dead letter was acknowledged:
periodically, before partitions are given away in a rebalance, and at shutdown. Nothing here relies on Kafka
transactions: handlers are idempotent, and a redelivery after a crash changes nothing.

Records are handed to workers in the same step as `getmany` returns them (no await in between), so a rebalance
can never slip between a fetch and its dispatch and hand a worker records of a previous assignment.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from payment_infrastructure.kafka.consumer_metrics import (
    export_consumer_series,
    kafka_consumer_member_lag,
    kafka_consumer_rebalances_total,
)
from payment_infrastructure.kafka.consumer_settings import ConsumerSettings
from payment_infrastructure.kafka.dead_letters import DeadLetterSink
from payment_infrastructure.kafka.failures import DEPENDENCY_NAMES
from payment_infrastructure.kafka.fetch_pacing import FetchPacing
from payment_infrastructure.kafka.lifecycle import stop_consumer
from payment_infrastructure.kafka.partition_worker import PartitionWorker
from payment_infrastructure.kafka.record_processor import RecordProcessor
from payment_infrastructure.kafka.records import ConsumedRecord, Handler, PoisonMessage, consumed_record
from payment_infrastructure.kafka.security import client_security
from payment_infrastructure.kafka.settings import KafkaSettings

__all__ = [
    "ConsumedRecord",
    "ConsumerNotReady",
    "ConsumerWedged",
    "Handler",
    "PartitionOrderedConsumer",
    "PoisonMessage",
]

log = structlog.get_logger(__name__)


class ConsumerNotReady(RuntimeError):
    pass


class ConsumerWedged(RuntimeError):
    """The poll loop has not finished a turn for longer than `stalled_poll_timeout_ms`: only a restart helps."""


class PartitionOrderedConsumer:
    def __init__(
        self,
        kafka: KafkaSettings,
        settings: ConsumerSettings,
        *,
        group_id: str,
        topics: Sequence[str],
        handler: Handler,
        dead_letters: DeadLetterSink,
        name: str,
    ) -> None:
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        self._kafka = kafka
        self._settings = settings
        self._group_id = group_id
        self._topics = tuple(topics)
        self._name = name
        export_consumer_series(group_id, self._topics, DEPENDENCY_NAMES)
        kafka_consumer_rebalances_total.labels(group_id)
        self._processor = RecordProcessor(handler, dead_letters, group_id=group_id, settings=settings)
        self._running_records = asyncio.Semaphore(settings.max_concurrent_records)
        self._consumer: AIOKafkaConsumer | None = None
        self._workers: dict[TopicPartition, PartitionWorker] = {}
        self._paused: set[TopicPartition] = set()
        self._running = False
        self._stopping = False
        self._joined_at: float | None = None
        self._last_poll_at = 0.0
        self._last_turn_at = 0.0
        self._fetch_pacing = FetchPacing(settings)

    @property
    def group_id(self) -> str:
        return self._group_id

    @property
    def healthy(self) -> bool:
        """For readiness: running, joined the group, and the poll loop (blocked only by rebalances) is alive."""
        if not self._running or self._joined_at is None:
            return False
        stale_after = (self._settings.rebalance_timeout_ms + self._settings.poll_timeout_ms) / 1000
        if time.monotonic() - self._last_poll_at > stale_after:
            return False
        return not any(worker.failed for worker in self._workers.values())

    async def check_ready(self) -> None:
        """A readiness check for the management server (raises when not `healthy`)."""
        if not self.healthy:
            raise ConsumerNotReady(f"consumer {self._name} ({self._group_id}) is not consuming")

    def check_alive(self) -> None:
        """Liveness: raises ConsumerWedged when, while running, the poll loop has not finished a turn (a poll that
        returned or failed) for longer than `stalled_poll_timeout_ms`. A consumer that is starting or has stopped
        passes: the startup probe covers the first, and a run that ended ends the process."""
        if not self._running:
            return
        stalled = time.monotonic() - self._last_turn_at
        if stalled > self._settings.stalled_poll_timeout_ms / 1000:
            raise ConsumerWedged(f"consumer {self._name} ({self._group_id}) has not polled for {stalled:.1f}s")

    def assigned_partitions(self) -> frozenset[tuple[str, int]]:
        return frozenset((tp.topic, tp.partition) for tp in self._workers)

    def fetching_idle(self) -> bool:
        """Whether the last poll found nothing, so fetches wait for the first record (see `FetchPacing`)."""
        return self._fetch_pacing.idle

    def in_flight(self) -> dict[tuple[str, int], int]:
        """Records taken from the broker and not finished yet, per (topic, partition)."""
        return {(tp.topic, tp.partition): worker.in_flight for tp, worker in self._workers.items()}

    def lag(self) -> dict[str, int]:
        """Per topic, over this member's partitions: the highwater learned from fetches minus the committed offset.

        Not ListOffsets (unreliable on the dev broker): a partition paused by backpressure reports the highwater
        of its last fetch, so its lag is a lower bound until it resumes.
        """
        lag = dict.fromkeys(self._topics, 0)
        consumer = self._consumer
        if consumer is None:
            return lag
        assigned = consumer.assignment()
        for tp, worker in list(self._workers.items()):
            if tp not in assigned:
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            base = worker.committed if worker.committed is not None else worker.first_offset
            lag[tp.topic] = lag.get(tp.topic, 0) + max(highwater - (highwater if base is None else base), 0)
        return lag

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then stop fetching, drain, commit and leave the group.

        Cancelling the task instead is a crash: records in hand are abandoned (not committed, delivered again).
        """
        if self._consumer is not None:
            raise RuntimeError(f"consumer {self._name} is already running")
        with structlog.contextvars.bound_contextvars(consumer=self._name, group=self._group_id):
            consumer = self._build_consumer()
            consumer.subscribe(list(self._topics), listener=_RebalanceListener(self))
            # Set before start(): the first assignment's callback runs inside start() and creates the workers.
            self._consumer = consumer
            try:
                await consumer.start()
            except BaseException:
                self._consumer = None
                await stop_consumer(consumer, within=self._settings.close_timeout_seconds)
                raise
            self._running = True
            self._stopping = False
            self._fetch_pacing = FetchPacing(self._settings)
            self._last_poll_at = self._last_turn_at = time.monotonic()
            log.info("consumer_started", topics=list(self._topics))
            committer = asyncio.create_task(self._commit_periodically(), name=f"{self._name}-commit")
            stopped = asyncio.create_task(stop.wait(), name=f"{self._name}-stop")
            poll: asyncio.Task[None] | None = None
            aborted = False
            try:
                while not stop.is_set():
                    poll = asyncio.create_task(self._poll_and_dispatch(consumer), name=f"{self._name}-poll")
                    await asyncio.wait({poll, stopped}, return_when=asyncio.FIRST_COMPLETED)
                    if not poll.done():
                        break
                    self._last_turn_at = time.monotonic()
                    if (error := poll.exception()) is not None:
                        if not isinstance(error, KafkaError):
                            raise error
                        log.warning("consumer_poll_failed", error_class=type(error).__name__, error=str(error))
                        await asyncio.wait({stopped}, timeout=self._kafka.retry_backoff_ms / 1000)
            except asyncio.CancelledError:
                aborted = True
                raise
            finally:
                self._running = False
                self._stopping = True
                for task in (poll, stopped, committer):
                    if task is not None:
                        task.cancel()
                await asyncio.wait({t for t in (poll, stopped, committer) if t is not None})
                await self._shut_down(consumer, aborted=aborted)

    def _build_consumer(self) -> AIOKafkaConsumer:
        s = self._settings
        return AIOKafkaConsumer(
            bootstrap_servers=self._kafka.bootstrap_servers,
            client_id=self._name,
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            max_poll_records=s.max_poll_records,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            fetch_min_bytes=s.fetch_min_bytes,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
            rebalance_timeout_ms=s.rebalance_timeout_ms,
            request_timeout_ms=s.request_timeout_ms,
            retry_backoff_ms=self._kafka.retry_backoff_ms,
            metadata_max_age_ms=self._kafka.metadata_max_age_ms,
            **client_security(self._kafka),
        )

    async def _poll_and_dispatch(self, consumer: AIOKafkaConsumer) -> None:
        batch = await consumer.getmany(timeout_ms=self._settings.poll_timeout_ms)
        # No await from here on: the batch belongs to the assignment that is current right now.
        self._last_poll_at = time.monotonic()
        self._fetch_pacing.after_poll(consumer, got_records=bool(batch))
        for tp, raw_records in batch.items():
            worker = self._worker_for(consumer, tp)
            if worker is None:
                log.warning("records_for_unassigned_partition", topic=tp.topic, partition=tp.partition)
                continue
            records = [consumed_record(raw) for raw in raw_records]
            taken = worker.offer(records)
            if taken < len(records):
                consumer.seek(tp, records[taken].offset)
                self._pause(consumer, tp)
            elif worker.room == 0:
                self._pause(consumer, tp)

    def _worker_for(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> PartitionWorker | None:
        worker = self._workers.get(tp)
        if worker is None and not self._stopping and tp in consumer.assignment():
            worker = PartitionWorker(
                tp,
                self._process,
                capacity=self._settings.max_in_flight_per_partition,
                batch_size=self._settings.batch_size,
                on_room=self._on_room,
            )
            self._workers[tp] = worker
        return worker

    async def _process(self, record: ConsumedRecord) -> None:
        async with self._running_records:
            await self._processor.process(record)

    def _pause(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        if tp not in self._paused:
            consumer.pause(tp)
            self._paused.add(tp)

    def _on_room(self, tp: TopicPartition) -> None:
        consumer = self._consumer
        if tp in self._paused and consumer is not None and not self._stopping and tp in consumer.assignment():
            consumer.resume(tp)
            self._paused.discard(tp)

    async def _commit_periodically(self) -> None:
        interval = self._settings.commit_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self._commit(list(self._workers.values()), reason="periodic")
                for topic, lag in self.lag().items():
                    kafka_consumer_member_lag.labels(self._group_id, topic).set(lag)
            except Exception:  # a bug here must not end the commits for good
                log.exception("offset_commit_loop_failed")

    async def _commit(self, workers: Iterable[PartitionWorker], *, reason: str, within: float | None = None) -> None:
        """`within`: the bound of this commit (default: the client's request timeout)."""
        consumer = self._consumer
        candidates = [(worker, worker.commit_candidate()) for worker in workers]
        offsets = {worker.tp: offset for worker, offset in candidates if offset is not None}
        if consumer is None or not offsets:
            return
        try:
            async with asyncio.timeout(self._kafka.request_timeout_ms / 1000 if within is None else within):
                await consumer.commit(offsets)
        except (KafkaError, TimeoutError) as error:
            # Not fatal: the records stay uncommitted and are delivered again to whoever owns the partition.
            log.warning(
                "offset_commit_failed", reason=reason, partitions=len(offsets), error_class=type(error).__name__
            )
            return
        for worker, offset in candidates:
            if offset is not None:
                worker.committed = offset

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        workers = [worker for tp in revoked if (worker := self._workers.pop(tp, None)) is not None]
        self._paused.difference_update(revoked)
        if not workers:
            return
        await asyncio.gather(*(worker.stop(self._settings.drain_timeout_seconds) for worker in workers))
        await self._commit(workers, reason="rebalance")
        log.info("partitions_revoked", partitions=_names(worker.tp for worker in workers))

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._joined_at = time.monotonic()
        self._last_poll_at = self._joined_at
        kafka_consumer_rebalances_total.labels(self._group_id).inc()
        consumer = self._consumer
        if consumer is not None:
            for tp in assigned:
                self._worker_for(consumer, tp)
        log.info("partitions_assigned", partitions=_names(assigned))

    async def _shut_down(self, consumer: AIOKafkaConsumer, *, aborted: bool) -> None:
        workers = list(self._workers.values())
        self._workers.clear()
        self._paused.clear()
        try:
            if aborted:
                await asyncio.gather(*(worker.abort() for worker in workers))
            else:
                await asyncio.gather(*(worker.stop(self._settings.drain_timeout_seconds) for worker in workers))
            await self._commit(workers, reason="shutdown", within=self._settings.close_timeout_seconds)
        finally:
            self._consumer = None
            for topic in self._topics:
                # A member that left reports no lag; the remaining members report theirs.
                with contextlib.suppress(KeyError):
                    kafka_consumer_member_lag.remove(self._group_id, topic)
            left = await stop_consumer(consumer, within=self._settings.close_timeout_seconds)
            log.info("consumer_stopped", aborted=aborted, left_group=left)


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    """Runs in aiokafka's coordinator task; the heartbeat keeps going while it drains."""

    def __init__(self, owner: PartitionOrderedConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        await self._owner._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        await self._owner._on_assigned(assigned)


def _names(tps: Iterable[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}:{tp.partition}" for tp in tps)
