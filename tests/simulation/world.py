"""The deterministic simulation of the whole money path: the real use cases and domain rules over simulated ports.

One seed builds one world: clients creating a few payments for several sellers each (through the real
CreatePayment), a broker, the PSP with its ledger, the
consumers' tables (the contract-tested fakes), the Redis retry queue, and every worker of the pipeline as a
process with its own (possibly skewed) clock. While faults are on, the scheduler interleaves the workers at every
await, kills processes there, rebalances groups, flushes Redis, and the broker and the PSP misbehave. Then the
faults stop and the world runs until it settles; the invariants are checked on what is left.
Each consumer group's partitions run the product's sliding window (partitions.py). The result applier's answers
go through the coalescer as deployed (batches.py): answers of distinct orders share
one `apply_many` transaction. Clients ask for refunds of the orders they paid (refunds.py) through the real
RefundPaymentOrder; the real ExecuteRefund pays them back, the stale-refund sweeper and the parked-refund re-query
(RedriveRefunds) run beside the charges' own.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from payment_application.apply_psp_result import ApplyPspResult, ResultPolicy
from payment_application.check_payment_status import CheckPaymentStatus
from payment_application.create_payment import CreatePayment
from payment_application.dispatch_retries import DispatchRetries
from payment_application.dispatch_status_checks import DispatchStatusChecks
from payment_application.enqueue_psp_call import EnqueuePspCall
from payment_application.execute_psp_call import ExecutePspCall
from payment_application.ports.ids import IdNamespace
from payment_application.redrive_stale_orders import RedriveStaleOrders
from payment_application.requery_parked_orders import RequeryParkedOrders
from payment_domain.events import EventType
from payment_domain.status import is_terminal
from tests.fakes import FakeClock, FakeIdGenerator, FakePaymentRepository, FakePresenter
from tests.fakes_consumers import (
    ConsumerTables,
    FakeClaims,
    FakeParkedOrders,
    FakeResultStore,
    FakeStaleOrderClaims,
    FakeStatusCheckQueue,
)
from tests.fakes_retry import FakeRetryQueue
from tests.simulation.batches import SimClaims, result_batcher
from tests.simulation.broker import Record, SimBroker, SimEventSink, SimPublisher
from tests.simulation.creates import CommittingRepository, database_floor, requests, send
from tests.simulation.invariants import SIM_COMMISSION, check_invariants
from tests.simulation.partitions import SimGroup
from tests.simulation.psp import SimPsp
from tests.simulation.refunds import SimRefunds
from tests.simulation.scheduler import Checkpointed, Scheduler, SimulationFailed, Task, checkpoint

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
POLICY = ResultPolicy(max_retries=3, retry_base_ms=200, retry_max_ms=2_000, status_check_delays_seconds=(1, 3, 6))
LEASE_SECONDS = 3.0
# A charge may take up to this long to reach the PSP. Longer than the first status check's delay on purpose (the
# consumers' settings refuse that): a check must not conclude "not charged" while a call can still arrive, by
# construction (the claim's lease end is kept as the bound), not because the timing happens to make it unlikely.
CALL_BUDGET_SECONDS = 2.0
STALE_AFTER = timedelta(seconds=20)
REQUERY_EVERY = timedelta(seconds=30)
FAULT_STEPS = 600
SETTLE_DEADLINE = timedelta(hours=2)
MAX_STEPS = 60_000


class SkewedClock:
    """A process's clock: the database's, off by a skew that faults may change."""

    def __init__(self, base: FakeClock) -> None:
        self.base = base
        self.skew = timedelta(0)

    def now(self) -> datetime:
        return self.base.now() + self.skew

    def monotonic(self) -> float:
        """A process's monotonic clock runs with the database's; a skew (a wall clock set wrong) never moves it."""
        return self.base.monotonic()


@dataclass
class Periodic:
    name: str
    interval_ms: int
    run: Callable[[], Coroutine[None, None, Any]]
    next_ms: int = 0


class World:
    def __init__(self, seed: int, *, fault_steps: int = FAULT_STEPS) -> None:
        self.seed = seed
        self.random = random.Random(seed)
        self.fault_steps = fault_steps
        self.steps = 0
        self.trace_lines: list[str] = []
        self.db_clock = FakeClock(START)
        self.scheduler = Scheduler()
        self.tables = ConsumerTables()
        self.broker = SimBroker(self.random, self.trace, self.faults_on)
        self.psp = SimPsp(self.random, self.now_ms, self.trace, self.faults_on)
        self.psp.status_outage = self.random.random() < 0.25
        self.psp.call_budget_ms = int(CALL_BUDGET_SECONDS * 1000)
        self.retry_queue = FakeRetryQueue(now_ms=self.now_ms())
        self.clocks: dict[str, SkewedClock] = {}
        self.outbox_sent: set[str] = set()
        self._build()

    # --- time, trace, faults ----------------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int((self.db_clock.now() - START).total_seconds() * 1000)

    def trace(self, line: str) -> None:
        self.trace_lines.append(f"{self.now_ms():>9} ms  {line}")

    def faults_on(self) -> bool:
        return self.steps < self.fault_steps

    def clock(self, process: str) -> SkewedClock:
        return self.clocks.setdefault(process, SkewedClock(self.db_clock))

    def _sync_redis_clock(self) -> None:
        self.retry_queue.now_ms = self.now_ms()

    # --- the system -------------------------------------------------------------------------------------------

    def _build(self) -> None:
        self._build_creates()
        tables = self.tables
        sink = Checkpointed(SimEventSink(self.broker))
        self.refunds = SimRefunds(self, sink, stale_after=STALE_AFTER, requery_every=REQUERY_EVERY)
        retries = Checkpointed(self.retry_queue, self._sync_redis_clock)
        psp = self.psp  # checkpoints of its own: it must see a request in the same step it is sent
        consumer = "payment-consumers"
        enqueue = EnqueuePspCall(events=sink, clock=self.clock("enqueuer"))
        self.claims = SimClaims(
            Checkpointed(FakeClaims(tables, self.db_clock)), self.scheduler, self.trace, process="executor"
        )
        execute = ExecutePspCall(
            claims=self.claims,
            psp=psp,
            events=sink,
            clock=self.clock("executor"),
            monotonic=self.clock("executor"),
            lease_seconds=LEASE_SECONDS,
            call_budget_seconds=CALL_BUDGET_SECONDS,
        )
        apply = ApplyPspResult(
            store=Checkpointed(FakeResultStore(tables, self.db_clock)),
            retries=retries,
            policy=POLICY,
            randint=self.random.randint,
            consumer=consumer,
            commission=SIM_COMMISSION,
        )
        self.results = result_batcher(apply, self.scheduler, self.trace, process="applier")
        check = CheckPaymentStatus(psp=psp, events=sink, clock=self.clock("checker"))

        def group(name: str, event_type: EventType, handle: Callable[[Record], Awaitable[object]]) -> SimGroup:
            topic = event_type.topic.value
            return SimGroup(name, topic, handle, self.scheduler, self.broker, self.random, self.trace, self.now_ms)

        self.groups = [
            group("enqueuer", EventType.PAYMENT_ORDER_CREATED, lambda r: enqueue(r.envelope)),
            group("executor", EventType.PSP_CALL_REQUESTED, lambda r: execute(r.envelope, delivery=r.delivery)),
            group("applier", EventType.PSP_RESULT_UPDATED, lambda r: self.results.submit(r.envelope)),
            group("checker", EventType.STATUS_CHECK_REQUESTED, lambda r: check(r.envelope)),
            group("refunder", EventType.REFUND_REQUESTED, self.refunds.handle),
        ]
        dispatch_retries = DispatchRetries(retries, SimPublisher(self.broker))
        dispatch_checks = DispatchStatusChecks(
            checks=Checkpointed(FakeStatusCheckQueue(tables, self.db_clock)),
            events=sink,
            clock=self.clock("checks"),
            lease_seconds=LEASE_SECONDS,
        )
        sweeper = RedriveStaleOrders(
            orders=Checkpointed(FakeStaleOrderClaims(tables, self.db_clock)),
            events=sink,
            retries=retries,
            clock=self.clock("sweeper"),
            stale_after=STALE_AFTER,
        )

        requery = RequeryParkedOrders(
            parked=Checkpointed(FakeParkedOrders(tables, self.db_clock)),
            psp=psp,
            events=sink,
            clock=self.clock("requery"),
            every=REQUERY_EVERY,
        )

        async def retry_round() -> None:
            await dispatch_retries.reclaim(visibility_timeout_ms=5_000)
            await dispatch_retries.dispatch_batch(limit=10)

        self.periodic = [
            Periodic("api", 250, self._send_requests),
            Periodic("outbox", 200, self._dispatch_outbox),
            Periodic("retries", 300, retry_round),
            Periodic("checks", 300, lambda: dispatch_checks.dispatch_batch(limit=10)),
            Periodic("sweeper", 10_000, lambda: sweeper.sweep_once(limit=10)),
            Periodic("requery", 15_000, lambda: requery.requery_once(limit=10)),
            Periodic("refunds", 1_000, self.refunds.send_round),
            Periodic("refund-sweeper", 10_000, lambda: self.refunds.sweep.run_once(limit=10)),
            Periodic("refund-requery", 15_000, lambda: self.refunds.requery.run_once(limit=10)),
        ]

    def _build_creates(self) -> None:
        """The API: the real CreatePayment; Redis holds its id counters (lost with everything else on a flush)."""
        self.id_counters: dict[IdNamespace, int] = {}
        self.repository = FakePaymentRepository()
        ids = FakeIdGenerator(counters=self.id_counters, floor=database_floor(self.repository))
        self.create = CreatePayment(
            payments=CommittingRepository(self.repository, self.tables, self.trace),
            ids=Checkpointed(ids),
            clock=self.clock("api"),
            presenter=FakePresenter(),
            idempotency_ttl=timedelta(hours=24),
        )
        self.requests = requests(self.random.randint)

    def _send_requests(self) -> Coroutine[None, None, None]:
        async def round_of_sends() -> None:
            for request in self.requests:
                if not request.done:
                    await send(self.create, request, self.trace)

        return round_of_sends()

    async def _dispatch_outbox(self) -> None:
        """The outbox relay: publish unsent rows in order, then mark them sent; a failure ends the round."""
        for envelope in list(self.tables.outbox):
            if envelope.event_id in self.outbox_sent:
                continue
            await checkpoint()
            self.broker.send(envelope)
            await checkpoint()
            self.outbox_sent.add(envelope.event_id)
            if envelope.event_type is EventType.PAYMENT_ORDER_CREATED:
                self.tables.unsent_outbox.discard(int(envelope.aggregate_id))
            if envelope.event_type is EventType.REFUND_REQUESTED:
                self.refunds.published(envelope.payload.refund_id.value)

    # --- the scheduler's choices ------------------------------------------------------------------------------

    def _actions(self) -> list[tuple[float, Callable[[], None]]]:
        actions: list[tuple[float, Callable[[], None]]] = []
        for task in self.scheduler.tasks:
            if task.runnable:
                actions.append((10.0, lambda task=task: self.scheduler.step(task)))  # type: ignore[misc]
        for coalesced in (self.results, self.claims.batcher):
            if coalesced.can_start():
                actions.append((5.0, coalesced.start))
        for group in self.groups:
            group.add_actions(actions)
        running = {task.name for task in self.scheduler.tasks}
        now = self.now_ms()
        for periodic in self.periodic:
            if periodic.next_ms <= now and periodic.name not in running:
                actions.append((3.0, lambda p=periodic: self._start(p)))  # type: ignore[misc]
        if self.faults_on():
            actions.append((0.6, self._crash))
            actions.append((0.3, self._rebalance))
            actions.append((0.1, self._flush_redis))
            actions.append((0.2, self._skew))
        if actions:
            actions.append((2.0, lambda: self._advance(self.random.randint(1, 400))))
        return actions

    def _start(self, periodic: Periodic) -> None:
        def done(_value: object, error: BaseException | None) -> None:
            periodic.next_ms = self.now_ms() + periodic.interval_ms
            if error is not None:
                self.trace(f"{periodic.name} round failed ({type(error).__name__}: {error})")
                if not isinstance(error, ConnectionError | TimeoutError):
                    raise SimulationFailed(f"{periodic.name} failed: {error!r}") from error

        self.scheduler.spawn(periodic.name, periodic.name, periodic.run(), done)

    def _crash(self) -> None:
        processes = sorted({t.process for t in self.scheduler.tasks} | {g.name for g in self.groups})
        process = self.random.choice(processes)
        killed: list[Task] = self.scheduler.kill(process)
        for group in self.groups:
            if group.name == process:
                group.drop()
        for periodic in self.periodic:
            if periodic.name == process:
                periodic.next_ms = self.now_ms() + periodic.interval_ms
        self.trace(f"CRASH {process} ({len(killed)} tasks killed mid-flight)")

    def _rebalance(self) -> None:
        group = self.random.choice(self.groups)
        if self.random.random() < 0.5:
            self.trace(f"REBALANCE {group.name}: its partitions revoked, the records in hand finish first")
            group.revoke()
        else:
            group.drop()
            self.trace(f"REBALANCE {group.name}: the member is gone, uncommitted records are delivered again")

    def _flush_redis(self) -> None:
        self.retry_queue.queued.clear()
        self.retry_queue.inflight.clear()
        self.id_counters.clear()
        self.trace("REDIS lost everything")

    def _skew(self) -> None:
        process = self.random.choice(sorted(self.clocks))
        self.clocks[process].skew = timedelta(milliseconds=self.random.randint(-5_000, 5_000))
        self.trace(f"CLOCK of {process} now off by {self.clocks[process].skew.total_seconds()} s")

    def _advance(self, ms: int) -> None:
        self.db_clock.advance(timedelta(milliseconds=ms))
        self.psp.run_due()

    def _next_event_ms(self) -> int:
        candidates = [p.next_ms for p in self.periodic if not self.scheduler.running(p.name)]
        late = self.psp.next_due_ms()
        if late is not None:
            candidates.append(late)
        return max(min(candidates), self.now_ms() + 1)

    # --- running ----------------------------------------------------------------------------------------------

    def settled(self) -> bool:
        if self.scheduler.tasks or self.psp.late or not all(r.done for r in self.requests):
            return False
        if any(e.event_id not in self.outbox_sent for e in self.tables.outbox):
            return False
        if not all(group.settled() for group in self.groups):
            return False
        # Parked orders too must leave NEEDS_RECONCILIATION: once faults stop the PSP answers truthfully, and the
        # re-query (defect 4) must turn that answer into a final state.
        orders_final = all(is_terminal(row.order.status) for row in self.tables.orders.values())
        return orders_final and self.refunds.settled()

    def run(self) -> None:
        faults_stopped_at: datetime | None = None
        while True:
            self.steps += 1
            if self.steps > MAX_STEPS:
                raise SimulationFailed(f"not settled after {MAX_STEPS} steps")
            if not self.faults_on():
                if faults_stopped_at is None:
                    faults_stopped_at = self.db_clock.now()
                    for clock in self.clocks.values():
                        clock.skew = timedelta(0)
                    self.trace("FAULTS STOP")
                if self.settled():
                    break
                if self.db_clock.now() - faults_stopped_at > SETTLE_DEADLINE:
                    raise SimulationFailed("orders still in flight two hours after the faults stopped")
            actions = self._actions()
            if not actions:
                self._advance(self._next_event_ms() - self.now_ms())
                continue
            weights = [w for w, _ in actions]
            self.random.choices(actions, weights=weights)[0][1]()
        check_invariants(self)


def run_seed(seed: int, *, fault_steps: int = FAULT_STEPS) -> World:
    world = World(seed, fault_steps=fault_steps)
    world.run()
    return world
