"""How far behind the payment pipeline is, as admission control sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BacklogReading:
    """`orders`: accepted and not yet answered by the PSP once (counted up to a limit); `wait_p95_seconds`: the 95th
    percentile of how long they have waited so far (0 when there are none)."""

    orders: int
    wait_p95_seconds: float


class PipelineBacklog(Protocol):
    async def read(self, *, limit: int) -> BacklogReading:
        """The orders still INITIATED_PENDING (in the outbox, on a topic, or in a PSP call), the oldest `limit` of
        them at most, so that reading a deep backlog stays cheap."""
        ...
