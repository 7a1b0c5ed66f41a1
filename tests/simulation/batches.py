"""The result applier's coalescer (payment_infrastructure/runtime/batcher.py) as the scheduler drives it.

A consumer chain submits its answer and waits; a scheduler action starts a batch when a slot is free: up to
MAX_BATCH queued answers of distinct payments none of which a running batch holds (keyed by payment, as the real
one: a sibling order's answer never waits on another batch's payment lock), in arrival order, applied by the
real `ApplyPspResult.apply_many` as a task of the applier process, so a crash or a rebalance kills it where it
stands (before its transaction, or after the commit between two retries queued). Each chain then meets its own
answer's outcome, as the real handler does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from payment_application.apply_psp_result import Applied, ApplyPspResult
from payment_domain.events import EventEnvelope, PspResultUpdated
from tests.simulation.scheduler import Scheduler, Task, wait_for

CONCURRENCY = 2
MAX_BATCH = 6  # the real one takes 32; a small one is reached here


@dataclass(eq=False)
class _Submission:
    envelope: EventEnvelope[PspResultUpdated]
    key: int  # the payment
    taken: bool = False
    done: bool = False
    outcome: Applied | BaseException | None = None


class SimBatcher:
    def __init__(
        self, apply: ApplyPspResult, scheduler: Scheduler, trace: Callable[[str], None], *, process: str
    ) -> None:
        self._apply = apply
        self._scheduler = scheduler
        self._trace = trace
        self._process = process
        self._queue: list[_Submission] = []
        self._running: dict[Task, set[int]] = {}  # batch task -> the payments it holds
        self.batch_sizes: list[int] = []

    async def submit(self, envelope: EventEnvelope[PspResultUpdated]) -> Applied:
        submission = _Submission(envelope, envelope.payload.order.payment_id.value)
        self._queue.append(submission)
        try:
            await wait_for(lambda: submission.done)
        finally:
            if not submission.taken:  # the chain died waiting: its answer is withdrawn
                self._queue.remove(submission)
        if isinstance(submission.outcome, BaseException):
            raise submission.outcome
        assert submission.outcome is not None
        return submission.outcome

    def can_start(self) -> bool:
        return len(self._live()) < CONCURRENCY and bool(self._takeable())

    def start(self) -> None:
        batch: list[_Submission] = []
        for submission in self._takeable():
            if len(batch) < MAX_BATCH and submission.key not in {s.key for s in batch}:
                batch.append(submission)
        for submission in batch:
            submission.taken = True
            self._queue.remove(submission)
        self.batch_sizes.append(len(batch))
        if len(batch) > 1:
            self._trace(f"{self._process} applies {len(batch)} answers in one transaction")

        def done(outcomes: Sequence[Applied | Exception] | None, error: BaseException | None) -> None:
            del self._running[task]
            results: Sequence[Any] = [error] * len(batch) if error is not None else (outcomes or [])
            for submission, outcome in zip(batch, results, strict=True):
                submission.outcome, submission.done = outcome, True

        task = self._scheduler.spawn(
            f"{self._process}/batch", self._process, self._apply.apply_many([s.envelope for s in batch]), done
        )
        self._running[task] = {s.key for s in batch}

    def _live(self) -> dict[Task, set[int]]:
        """Batches still running (a killed one's on_done never comes: it holds nothing any more)."""
        for task in [t for t in self._running if t not in self._scheduler.tasks]:
            del self._running[task]
        return self._running

    def _takeable(self) -> list[_Submission]:
        held = set().union(*self._live().values())
        return [s for s in self._queue if s.key not in held]
