"""The start/stop/async-with lifecycle every wrapper around one AIOKafkaProducer shares."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

import structlog
from aiokafka import AIOKafkaProducer

log = structlog.get_logger(__name__)

STOP_FLUSH_SECONDS = 5.0


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
