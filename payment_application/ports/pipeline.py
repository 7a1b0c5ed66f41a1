"""How far behind the payment pipeline is, as admission control sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BacklogReading:
    """`orders`: accepted and not yet answered by the PSP once (counted up to a limit); `queued`: those of them not in
    a PSP call (in the outbox, on a topic, waiting for a consumer: the part of the wait the pipeline decides);
    `wait_p95_seconds`: the 95th percentile of how long the queued ones have waited so far (0 when there are none).

    A PSP call's own time is left out of the wait on purpose: a PSP that answers in 150 ms, or makes a fifth of its
    callers wait out their 500 ms timeout, settles as many orders a second as a fast one with enough calls in
    flight; only a queue in front of the calls says that the pipeline is short of something."""

    orders: int
    queued: int
    wait_p95_seconds: float


class PipelineBacklog(Protocol):
    async def read(self, *, limit: int) -> BacklogReading:
        """The orders still INITIATED_PENDING (in the outbox, on a topic, or in a PSP call), the oldest `limit` of
        them at most, so that reading a deep backlog stays cheap."""
        ...
