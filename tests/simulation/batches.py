"""The consumers' two coalescers as the scheduler drives them: the product's `Coalescer` (the one `Batcher` runs
on asyncio) decides every batch, with the keys, slots and outage rule each has as deployed.

- The result applier's: answers keyed by payment, applied in one transaction by the real
  `ApplyPspResult.apply_many`.
- The executor's claims (`PostgresPaymentOrderClaims`): claims keyed by order, made in one statement; here the
  fake's `claim_many`, which judges each claim by the single claim's rules, all at once.

A consumer chain submits its item and waits; a scheduler action starts a batch when the coalescer has a free slot
and something to take: up to the batch size of queued items of distinct keys none of which a running batch holds,
in arrival order. The batch runs through the coalescer's own `results` (a batch-wide error other than an outage
runs the items again one by one), as a task of its process, so a crash or a rebalance kills it where it stands.
Each chain then meets its own item's outcome, as the real handler does (a claim's may be "refused": None). An
oracle watches the coalescer itself: no batch holds a key twice, nor one a running batch holds. Only the result
applier can trip it: its key is the payment, and sibling orders' answers arrive from different partitions; one
order's claims come from one partition's window, which never runs them side by side. What running the claims
through it adds is the deployed path itself: claims of different orders made in one statement, a refused claim
(None) handed back through the coalescer, a claim statement killed with its process mid-flight.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from payment_application.apply_psp_result import Applied, ApplyPspResult
from payment_application.ports.payment_orders import ClaimedAttempt
from payment_domain.events import EventEnvelope, PspResultUpdated
from payment_infrastructure.runtime.coalescing import Coalescer, Withdrawn
from tests.simulation.scheduler import Scheduler, SimulationFailed, Task, wait_for

CONCURRENCY = 2
MAX_BATCH = 6  # the real result batches take 16 and claim batches 32; a small one is reached here

Item = TypeVar("Item")
Result = TypeVar("Result")


def outage(error: Exception) -> bool:
    """The simulated ports' stand-in for `DependencyUnavailable` (the real coalescers' outage) is a ConnectionError;
    a TimeoutError stands for a timeout, which is no outage: the items run again one by one."""
    return isinstance(error, ConnectionError)


@dataclass(eq=False, slots=True)
class _Submission(Generic[Item]):
    item: Item
    key: Hashable
    outcome: Any = None  # its result (None is one: a claim refused) or exception; Withdrawn when its chain died
    answered: bool = False

    @property
    def future(self) -> _Submission[Item]:
        return self  # its own answer: done once it has an outcome

    def done(self) -> bool:
        return self.answered

    def answer(self, outcome: object) -> None:
        if not self.answered:
            self.outcome, self.answered = outcome, True


class SimCoalesced(Generic[Item, Result]):
    def __init__(
        self,
        run_batch: Callable[[list[Item]], Awaitable[Sequence[Result | Exception]]],
        *,
        key: Callable[[Item], Hashable],
        scheduler: Scheduler,
        trace: Callable[[str], None],
        process: str,
        what: str,
    ) -> None:
        self._run_batch = run_batch
        self._key = key
        self._scheduler = scheduler
        self._trace = trace
        self._process = process
        self._what = what
        self.coalescer: Coalescer[_Submission[Item]] = Coalescer(
            max_batch=MAX_BATCH, slots=CONCURRENCY, exclusive=True, outage=outage
        )
        self._running: dict[Task, list[_Submission[Item]]] = {}  # batch task -> its items
        self.batch_sizes: list[int] = []

    async def submit(self, item: Item) -> Result:
        submission = _Submission(item, self._key(item))
        self.coalescer.add(submission)
        try:
            await wait_for(submission.done)
        finally:
            submission.answer(Withdrawn())  # if the chain died waiting: its item is withdrawn
        if isinstance(submission.outcome, BaseException):
            raise submission.outcome
        result: Result = submission.outcome
        return result

    def can_start(self) -> bool:
        self._live()
        return self.coalescer.can_start()

    def start(self) -> None:
        self.coalescer.open_slot()
        batch = self.coalescer.take()
        self._check(batch)
        self.batch_sizes.append(len(batch))
        if len(batch) > 1:
            self._trace(f"{self._process} {self._what.format(n=len(batch))}")

        def run(entries: list[_Submission[Item]]) -> Awaitable[Sequence[Result | Exception]]:
            return self._run_batch([s.item for s in entries])

        def done(outcomes: Sequence[Result | BaseException] | None, error: BaseException | None) -> None:
            self._end(task)
            if error is not None:
                raise SimulationFailed(f"{self._process} batch raised {error!r} past its results") from error
            assert outcomes is not None
            for submission, outcome in zip(batch, outcomes, strict=True):
                submission.answer(outcome)

        task = self._scheduler.spawn(
            f"{self._process}/batch",
            self._process,
            self.coalescer.results(batch, run),
            done,
        )
        self._running[task] = batch

    def _check(self, batch: list[_Submission[Item]]) -> None:
        keys = [s.key for s in batch]
        held = {s.key for running in self._running.values() for s in running}
        if len(set(keys)) != len(keys) or held.intersection(keys):
            raise SimulationFailed(
                f"{self._process} took a batch of {keys} while running batches hold {sorted(held, key=str)}"
            )

    def _end(self, task: Task) -> None:
        self.coalescer.finish(self._running.pop(task))
        self.coalescer.close_slot()

    def _live(self) -> None:
        """A batch killed where it stands never reaches its on_done: it holds nothing any more (its process died)."""
        for task in [t for t in self._running if t not in self._scheduler.tasks]:
            self._end(task)


def result_batcher(
    apply: ApplyPspResult, scheduler: Scheduler, trace: Callable[[str], None], *, process: str
) -> SimCoalesced[EventEnvelope[PspResultUpdated], Applied]:
    """Keyed by payment, as deployed (`services.payment_consumers.handlers.result_batcher`)."""
    return SimCoalesced(
        apply.apply_many,
        key=lambda envelope: envelope.payload.order.payment_id.value,
        scheduler=scheduler,
        trace=trace,
        process=process,
        what="applies {n} answers in one transaction",
    )


@dataclass(frozen=True, slots=True)
class Claim:
    payment_order_id: int
    attempt: int
    token: str
    lease_seconds: float


class SimClaims:
    """`PaymentOrderClaims` as `PostgresPaymentOrderClaims` is deployed: concurrent claims coalesced, keyed by order,
    into one statement (`claims.claim_many`: one checkpoint, then every claim at once)."""

    def __init__(self, claims: Any, scheduler: Scheduler, trace: Callable[[str], None], *, process: str) -> None:
        self._claims = claims
        self.batcher: SimCoalesced[Claim, ClaimedAttempt | None] = SimCoalesced(
            self._claim_many,
            key=lambda claim: claim.payment_order_id,
            scheduler=scheduler,
            trace=trace,
            process=process,
            what="claims {n} orders in one statement",
        )

    async def claim_attempt(
        self, payment_order_id: int, *, attempt: int, claim_token: str, lease_seconds: float
    ) -> ClaimedAttempt | None:
        return await self.batcher.submit(Claim(payment_order_id, attempt, claim_token, float(lease_seconds)))

    async def _claim_many(self, claims: list[Claim]) -> list[ClaimedAttempt | None]:
        result: list[ClaimedAttempt | None] = await self._claims.claim_many(
            [(c.payment_order_id, c.attempt, c.token, c.lease_seconds) for c in claims]
        )
        return result
