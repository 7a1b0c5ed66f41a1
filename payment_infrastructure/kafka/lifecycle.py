"""The start/stop/async-with lifecycle every wrapper around one AIOKafkaProducer shares, and the bounded close of a
consumer: aiokafka's own stop of either waits on the broker without a bound of its own."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from payment_infrastructure.kafka.settings import STOP_FLUSH_SECONDS

log = structlog.get_logger(__name__)


class OwnsProducer:
    """Mixin for a class holding `self._producer`: start it before use, stop it (flushes) at shutdown."""

    _producer: AIOKafkaProducer

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        """Flush for a bounded time, then close. An idempotent producer retries a batch until the broker takes it,
        so with the broker gone a plain stop would wait forever. Records still unacknowledged are dropped: every
        caller re-sends what it never saw acknowledged (outbox rows stay NEW, consumed offsets stay uncommitted)."""
        try:
            async with asyncio.timeout(STOP_FLUSH_SECONDS):
                await self._producer.flush()
        except TimeoutError:
            log.warning("kafka_producer_closed_with_unacknowledged_records", flush_seconds=STOP_FLUSH_SECONDS)
            sender_task = getattr(getattr(self._producer, "_sender", None), "sender_task", None)
            if sender_task is not None:
                sender_task.cancel()  # lets AIOKafkaProducer.stop() skip its unbounded flush
        await self._producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def stop_consumer(consumer: AIOKafkaConsumer, *, within: float) -> bool:
    """Leave the group and close, within `within` seconds; True if the consumer closed in time.

    AIOKafkaConsumer.stop() first waits for its coordination task, which, with the broker gone, can be waiting for
    a metadata update that only comes after `metadata_max_age_ms` (minutes), and then sends LeaveGroup, which waits
    for the request timeout. Past the bound the close is abandoned: its background tasks are cancelled and its
    connections closed. Nothing is lost: what was not committed is delivered again, and the group drops a member that
    did not leave once its session times out."""
    try:
        async with asyncio.timeout(within):
            await consumer.stop()
        return True
    except TimeoutError:
        log.warning("kafka_consumer_closed_without_leaving_group", seconds=within)
    # stop() marked the consumer closed before it was cut off, so it never runs again: finish what it did not.
    coordinator = getattr(consumer, "_coordinator", None)
    tasks: list[asyncio.Future[object]] = [
        task
        for name in ("_coordination_task", "_heartbeat_task", "_commit_refresh_task")
        if (task := getattr(coordinator, name, None)) is not None and not task.done()
    ]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=within)
    current = asyncio.current_task()
    cancelling = current.cancelling() if current is not None else 0
    for part in (getattr(consumer, "_fetcher", None), getattr(consumer, "_client", None)):
        if part is not None:
            try:
                async with asyncio.timeout(within):
                    await part.close()
            except (Exception, asyncio.CancelledError):  # the fetcher's close re-raises its tasks' cancellation
                if current is not None and current.cancelling() > cancelling:
                    raise  # this stop itself is being cancelled
    return False
