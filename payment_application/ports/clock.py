"""Time comes in through a port so every use case is deterministic under test."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        ...


class MonotonicClock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (only differences mean anything): for measuring how long
        something took, which a wall clock set back or forward would get wrong."""
        ...


class Sleeper(Protocol):
    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (a test's sleeper returns at once and records the wait)."""
        ...
