"""The result applier's coalescer as the scheduler drives it: the product's `Coalescer` (the one `Batcher` runs on
asyncio) decides every batch.

A consumer chain submits its answer and waits; a scheduler action starts a batch when the coalescer has a free slot
and something to take: up to MAX_BATCH queued answers of distinct payments none of which a running batch holds
(keyed by payment, as deployed), in arrival order. The batch runs the real `ApplyPspResult.apply_many`, through the
coalescer's own `results` (a batch-wide error other than an outage runs the answers again one by one), as a task of
the applier process, so a crash or a rebalance kills it where it stands (before its transaction, or after the
commit between two retries queued). Each chain then meets its own answer's outcome, as the real handler does.
An oracle watches the coalescer itself: no batch holds a payment twice, nor one a running batch holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from payment_application.apply_psp_result import Applied, ApplyPspResult
from payment_domain.events import EventEnvelope, PspResultUpdated
from payment_infrastructure.runtime.coalescing import Coalescer, Withdrawn
from tests.simulation.scheduler import Scheduler, SimulationFailed, Task, wait_for

CONCURRENCY = 2
MAX_BATCH = 6  # the real one takes 32; a small one is reached here


def outage(error: Exception) -> bool:
    """The simulated ports' stand-in for `DependencyUnavailable` (the real applier's outage) is a ConnectionError;
    a TimeoutError stands for a timeout, which is no outage: the answers run again one by one."""
    return isinstance(error, ConnectionError)


@dataclass(eq=False, slots=True)
class _Submission:
    envelope: EventEnvelope[PspResultUpdated]
    key: int  # the payment
    outcome: Applied | BaseException | None = None

    @property
    def future(self) -> _Submission:
        return self  # its own answer: done once it has an outcome (Withdrawn when its chain died waiting)

    def done(self) -> bool:
        return self.outcome is not None


class SimBatcher:
    def __init__(
        self, apply: ApplyPspResult, scheduler: Scheduler, trace: Callable[[str], None], *, process: str
    ) -> None:
        self._apply = apply
        self._scheduler = scheduler
        self._trace = trace
        self._process = process
        self.coalescer: Coalescer[_Submission] = Coalescer(
            max_batch=MAX_BATCH, slots=CONCURRENCY, exclusive=True, outage=outage
        )
        self._running: dict[Task, list[_Submission]] = {}  # batch task -> its answers
        self.batch_sizes: list[int] = []

    async def submit(self, envelope: EventEnvelope[PspResultUpdated]) -> Applied:
        submission = _Submission(envelope, envelope.payload.order.payment_id.value)
        self.coalescer.add(submission)
        try:
            await wait_for(submission.done)
        finally:
            if submission.outcome is None:  # the chain died waiting: its answer is withdrawn
                submission.outcome = Withdrawn()
        if isinstance(submission.outcome, BaseException):
            raise submission.outcome
        return submission.outcome

    def can_start(self) -> bool:
        self._live()
        return self.coalescer.can_start()

    def start(self) -> None:
        self.coalescer.open_slot()
        batch = self.coalescer.take()
        self._check(batch)
        self.batch_sizes.append(len(batch))
        if len(batch) > 1:
            self._trace(f"{self._process} applies {len(batch)} answers in one transaction")

        def run(entries: list[_Submission]) -> Awaitable[list[Applied | Exception]]:
            return self._apply.apply_many([s.envelope for s in entries])

        def done(outcomes: Sequence[Applied | BaseException] | None, error: BaseException | None) -> None:
            self._end(task)
            if error is not None:
                raise SimulationFailed(f"{self._process} batch raised {error!r} past its results") from error
            assert outcomes is not None
            for submission, outcome in zip(batch, outcomes, strict=True):
                if submission.outcome is None:
                    submission.outcome = outcome

        task = self._scheduler.spawn(
            f"{self._process}/batch",
            self._process,
            self.coalescer.results(batch, run),
            done,
        )
        self._running[task] = batch

    def _check(self, batch: list[_Submission]) -> None:
        keys = [s.key for s in batch]
        held = {s.key for running in self._running.values() for s in running}
        if len(set(keys)) != len(keys) or held.intersection(keys):
            raise SimulationFailed(f"a batch of payments {keys} while running batches hold {sorted(held)}")

    def _end(self, task: Task) -> None:
        self.coalescer.finish(self._running.pop(task))
        self.coalescer.close_slot()

    def _live(self) -> None:
        """A batch killed where it stands never reaches its on_done: it holds nothing any more (its process died)."""
        for task in [t for t in self._running if t not in self._scheduler.tasks]:
            self._end(task)
