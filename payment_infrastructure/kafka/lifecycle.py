"""The start/stop/async-with lifecycle every wrapper around one AIOKafkaProducer shares."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaProducer


class OwnsProducer:
    """Mixin for a class holding `self._producer`: start it before use, stop it (flushes) at shutdown."""

    _producer: AIOKafkaProducer

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
