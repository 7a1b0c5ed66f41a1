"""Refunds in the simulation: clients asking the real RefundPaymentOrder (over the contract-tested FakeRefundStore) to
pay back part or all of an order, several per order, side by side, as soon as its payment is made (so racing the
charge, which may still be on its way); the real ExecuteRefund paying them back, the stale-refund sweeper and the
parked-refund re-query (RedriveRefunds) beside the charges' own. What they must keep: refund_invariants.py.

A client keeps its Idempotency-Key and sends again until it knows the outcome: accepted (or replayed), refused for
good (more than is left to refund; the order failed), or "not refundable yet" (the order is not charged yet: asked
again next round). Now and then it sends while its first request is still in flight, as a client timing out does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from payment_application.execute_refund import ExecuteRefund, RefundCallPolicy
from payment_application.ports.events import EventSink
from payment_application.ports.refund_redrives import UnsettledRefund
from payment_application.ports.refunds import RefundKey
from payment_application.redrive_refunds import RedriveRefunds
from payment_application.refund_payment_order import RefundCommand, RefundPaymentOrder
from payment_application.settle_refund import SettleRefund
from payment_domain.money import Amount
from payment_domain.payment import PaymentOrder
from payment_domain.refund import OrderNotRefundable, RefundExceedsCharge, RefundStatus
from payment_domain.status import PaymentOrderStatus, is_terminal
from tests.fakes import FakeClock, FakePaymentRepository
from tests.fakes_refunds import FakeRefundRedriveClaims, FakeRefundStore, RefundTables
from tests.simulation.broker import Record
from tests.simulation.creates import CLIENT, Request
from tests.simulation.scheduler import Checkpointed, checkpoint, wait_for

if TYPE_CHECKING:
    from tests.simulation.world import World

POLICY = RefundCallPolicy(attempts=3, base_ms=200, max_ms=2_000)
DEAD_LETTERED = 0.05  # of the refund requests delivered while faults are on
TWICE = 0.1  # of the client's sends while faults are on: a second copy while the first is in flight
R = RefundStatus


@dataclass
class RefundAsk:
    """One client refund: of line `line` of payment request `payment`, `amount` minor units, under `key`."""

    payment: int
    line: int
    amount: int
    key: str
    done: bool = False
    outcome: str = ""
    refund_id: int | None = None
    sent: int = 0


def refund_asks(made: list[Request], draw: Callable[[int, int], int]) -> list[RefundAsk]:
    """For about half the orders, one to three refunds: the whole amount, half of it, or any part; together they
    often ask for more than was charged (the limit refuses the rest)."""
    asks = []
    for n, request in enumerate(made):
        for i, line in enumerate(request.command.lines):
            if not draw(0, 1):
                continue
            charged = line.amount.value
            for j in range(draw(1, 3)):
                amount = [charged, max(1, charged // 2), draw(1, charged)][draw(0, 2)]
                asks.append(RefundAsk(n, i, amount, f"refund-key-{n}-{i}-{j}"))
    return asks


def order_of(repository: FakePaymentRepository, made: list[Request], ask: RefundAsk) -> PaymentOrder | None:
    """The order the client refunds from, once the API has made its payment (the client read it in the answer)."""
    order_id = made[ask.payment].command.order_id
    payment = next((p for p in repository.payments.values() if p.order_id == order_id), None)
    return None if payment is None else payment.payment_orders[ask.line]


async def ask_refund(
    refund: RefundPaymentOrder,
    ask: RefundAsk,
    order: PaymentOrder,
    status_now: Callable[[], PaymentOrderStatus],
    trace: Callable[[str], None],
) -> None:
    ask.sent += 1
    command = RefundCommand(
        payment_id=order.payment_id,
        payment_order_id=order.payment_order_id,
        amount=Amount(ask.amount, order.amount.currency),
        key=RefundKey(CLIENT, ask.key, f"hash-of-{ask.key}"),
        trace_id=f"trace-{ask.key}",
    )
    try:
        accepted = await refund(command)
    except RefundExceedsCharge as refused:
        outcome = f"refused: {ask.amount} exceeds what is left ({refused.remaining})"
    except OrderNotRefundable:
        status = status_now()
        if not is_terminal(status):
            trace(f"refund client told {ask.key}: order {status}, not refundable yet; will ask again")
            return
        outcome = f"refused: order {status}"
    else:
        ask.refund_id = accepted.refund.refund_id.value
        outcome = f"{'replayed' if accepted.replayed else 'accepted'} as {accepted.refund.public_id}"
    await checkpoint()  # the answer travels back: a crash here leaves the client not knowing
    trace(f"refund client got {ask.key} ({ask.amount}) {outcome} (try {ask.sent})")
    ask.outcome = outcome
    ask.done = True


class SimSleeper:
    """The refund executor's wait between tries, on the simulation's time (its process may die meanwhile)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    async def sleep(self, seconds: float) -> None:
        until = self.clock.monotonic() + seconds
        await wait_for(lambda: self.clock.monotonic() >= until)


class SimRefunds:
    """The refund side of one world: its tables, the clients' asks, the API, the executor (`handle`, the refund
    topic's consumer) and the two re-drive rounds; every port hands control to the scheduler first."""

    def __init__(self, world: World, sink: EventSink, *, stale_after: timedelta, requery_every: timedelta) -> None:
        self.world = world
        self.stale_after = stale_after
        self.requery_every = requery_every
        self.tables = RefundTables(world.tables)
        self.asks = refund_asks(world.requests, world.random.randint)
        store = Checkpointed(FakeRefundStore(self.tables, world.db_clock))
        self.api = RefundPaymentOrder(refunds=store, clock=world.clock("refunds"))
        self.execute = ExecuteRefund(
            refunds=store,
            psp=world.psp,
            settle=SettleRefund(refunds=store, clock=world.clock("refunder")),
            sleeper=SimSleeper(world.db_clock),
            randint=world.random.randint,
            policy=POLICY,
        )
        self.claims = Checkpointed(FakeRefundRedriveClaims(self.tables, world.db_clock))
        self.sweep = RedriveRefunds(claim=self._stale, events=sink, reason="stale")
        self.requery = RedriveRefunds(claim=self._parked, events=sink, reason="parked")

    async def _stale(self, limit: int) -> list[UnsettledRefund]:
        claimed = await self.claims.claim_stale(stale_after=self.stale_after, limit=limit)
        return self._traced("refund sweeper re-drives", claimed)

    async def _parked(self, limit: int) -> list[UnsettledRefund]:
        claimed = await self.claims.claim_parked(every=self.requery_every, limit=limit)
        return self._traced("refund re-query asks again about", claimed)

    def _traced(self, what: str, claimed: list[UnsettledRefund]) -> list[UnsettledRefund]:
        for unsettled in claimed:
            self.world.trace(f"{what} {unsettled.refund.public_id} ({unsettled.refund.status})")
        return claimed

    async def handle(self, record: Record) -> object:
        world = self.world
        if world.faults_on() and world.random.random() < DEAD_LETTERED:
            # A poison-message verdict in error: dead-lettered and never replayed; only the sweeper finds it.
            world.trace(f"refunder dead-letters {record.delivery} (never replayed)")
            return None
        return await self.execute(record.envelope)

    def published(self, envelope_refund_id: int) -> None:
        """The outbox relay sent the refund's request."""
        self.tables.unsent.discard(envelope_refund_id)

    def send_round(self) -> Coroutine[None, None, None]:
        """Each open ask as its own request of the API process, side by side with the others."""

        async def round_of_refunds() -> None:
            world = self.world
            for ask in self.asks:
                order = order_of(world.repository, world.requests, ask)
                if ask.done or order is None:
                    continue
                copies = 2 if world.faults_on() and world.random.random() < TWICE else 1
                for copy in range(copies):
                    name = f"refunds/{ask.key}/{copy}"
                    if ask.done or world.scheduler.running(name):
                        continue
                    if copy:
                        world.trace(f"refund client sends {ask.key} again while the first is in flight")
                    status = functools.partial(self._order_status, order.payment_order_id.value)
                    asking = ask_refund(self.api, ask, order, status, world.trace)
                    world.scheduler.spawn(name, "refunds", asking, functools.partial(_fail_on_error, name))
            await checkpoint()

        return round_of_refunds()

    def _order_status(self, payment_order_id: int) -> PaymentOrderStatus:
        return self.world.tables.order(payment_order_id).status

    def settled(self) -> bool:
        final = all(row.refund.status in (R.SUCCEEDED, R.FAILED) for row in self.tables.refunds.values())
        return final and all(ask.done for ask in self.asks)


def _fail_on_error(name: str, _value: object, error: BaseException | None) -> None:
    from tests.simulation.world import SimulationFailed

    if error is not None:
        raise SimulationFailed(f"{name} failed: {error!r}") from error
