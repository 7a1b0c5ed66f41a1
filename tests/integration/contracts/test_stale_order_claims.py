"""StaleOrderClaims: FakeStaleOrderClaims and PostgresStaleOrderClaims (on a database of this module's own, emptied
for each case: a claim takes every stale order in the table) pass the same cases. The threshold and the claim's
stamp are the store's clock: the fake's FakeClock, which a case moves, and Postgres now(), which no case can move,
so time passes there by moving the data into the past."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import pytest

from payment_application.ports.stale_orders import StaleOrder, StaleOrderClaims
from payment_domain.status import PaymentOrderStatus
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.settings import DatabaseSettings
from payment_infrastructure.postgres.stale_orders import NOT_IN_FLIGHT, PostgresStaleOrderClaims
from tests.fakes import FakeClock
from tests.fakes_consumers import ConsumerTables, FakeStaleOrderClaims, an_order
from tests.fixtures.database import migrated_database
from tests.integration.api.helpers import fetch
from tests.integration.postgres.order_rows import StoredOrder, insert_orders, order_row, shift_back

STALE_AFTER = timedelta(minutes=10)
HOUR = timedelta(hours=1)
MARGIN = timedelta(seconds=5)
"""Far more than a case takes between writing its data and claiming: Postgres' clock moves meanwhile."""
FAKE_TRACE = "trace-of-the-payment"


@dataclass(frozen=True, slots=True)
class Stamps:
    updated_at: datetime
    swept_at: datetime | None


class SweepWorld(Protocol):
    claims: StaleOrderClaims

    async def now(self) -> datetime:
        """The store's clock."""
        ...

    async def add_order(
        self,
        order_id: int,
        *,
        quiet_for: timedelta,
        status: str = "INITIATED_PENDING",
        retry_count: int = 0,
        status_check_number: int = 0,
    ) -> None:
        """An order of its own payment, last changed `quiet_for` ago."""
        ...

    async def psp_claim(self, order_id: int, *, expires_in: timedelta) -> None:
        """The executor's claim on the order's attempt, ending `expires_in` from now (negative: ended that long
        ago)."""
        ...

    async def swept(self, order_id: int, *, ago: timedelta) -> None:
        """Another sweeper claimed the order `ago`."""
        ...

    async def status_check(
        self, order_id: int, *, attempt: int, check_number: int, due_in: timedelta, published_ago: timedelta | None
    ) -> None:
        """A status check of the order, still scheduled (`published_ago` None) or published that long ago."""
        ...

    async def outbox_row(self, order_id: int, *, sent: bool) -> None:
        """The order's payment_order_created event, published or not yet."""
        ...

    async def stamps(self, order_id: int) -> Stamps: ...

    def trace_of(self, order_id: int) -> str:
        """The trace of the order's payment."""
        ...

    async def pass_time(self, delta: timedelta) -> None: ...


class FakeWorld:
    def __init__(self) -> None:
        self.clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
        self.tables = ConsumerTables()
        self.claims: StaleOrderClaims = FakeStaleOrderClaims(self.tables, self.clock, trace_id=FAKE_TRACE)

    async def now(self) -> datetime:
        return self.clock.now()

    async def add_order(
        self,
        order_id: int,
        *,
        quiet_for: timedelta,
        status: str = "INITIATED_PENDING",
        retry_count: int = 0,
        status_check_number: int = 0,
    ) -> None:
        order = an_order(
            order_id,
            status=PaymentOrderStatus(status),
            attempt=retry_count,
            payment_id=order_id,
            updated_at=self.clock.now() - quiet_for,
        )
        self.tables.add_order(order, status_check_number=status_check_number)

    async def psp_claim(self, order_id: int, *, expires_in: timedelta) -> None:
        row = self.tables.orders[order_id]
        row.claim_token, row.claim_expires_at = "psp/0/7", self.clock.now() + expires_in

    async def swept(self, order_id: int, *, ago: timedelta) -> None:
        self.tables.orders[order_id].swept_at = self.clock.now() - ago

    async def status_check(
        self, order_id: int, *, attempt: int, check_number: int, due_in: timedelta, published_ago: timedelta | None
    ) -> None:
        now = self.clock.now()
        row = self.tables.add_check(order_id, attempt=attempt, check_number=check_number, due_at=now + due_in, now=now)
        if published_ago is not None:
            row.status, row.updated_at = "PUBLISHED", now - published_ago

    async def outbox_row(self, order_id: int, *, sent: bool) -> None:
        if not sent:
            self.tables.unsent_outbox.add(order_id)

    async def stamps(self, order_id: int) -> Stamps:
        row = self.tables.orders[order_id]
        return Stamps(row.order.updated_at, row.swept_at)

    def trace_of(self, order_id: int) -> str:
        return FAKE_TRACE

    async def pass_time(self, delta: timedelta) -> None:
        self.clock.advance(delta)


class PostgresWorld:
    def __init__(self, database_url: str, claims: PostgresStaleOrderClaims) -> None:
        self.url = database_url
        self.claims: StaleOrderClaims = claims

    async def _execute(self, statement: str, *args: object) -> None:
        await fetch(self.url, statement, *args)

    async def now(self) -> datetime:
        (row,) = await fetch(self.url, "SELECT now() AS now")
        now: datetime = row["now"]
        return now

    async def add_order(
        self,
        order_id: int,
        *,
        quiet_for: timedelta,
        status: str = "INITIATED_PENDING",
        retry_count: int = 0,
        status_check_number: int = 0,
    ) -> None:
        order = StoredOrder(order_id, await self.now() - quiet_for, status, retry_count, status_check_number)
        await insert_orders(self.url, [order])

    async def psp_claim(self, order_id: int, *, expires_in: timedelta) -> None:
        await self._execute(
            "UPDATE payment_orders SET psp_claim_token = 'psp/0/7', psp_claim_expires_at = now() + $2::interval "
            "WHERE payment_order_id = $1",
            order_id,
            expires_in,
        )

    async def swept(self, order_id: int, *, ago: timedelta) -> None:
        await self._execute(
            "UPDATE payment_orders SET swept_at = now() - $2::interval WHERE payment_order_id = $1", order_id, ago
        )

    async def status_check(
        self, order_id: int, *, attempt: int, check_number: int, due_in: timedelta, published_ago: timedelta | None
    ) -> None:
        await self._execute(
            """
            INSERT INTO payment_order_status_checks (payment_order_id, attempt, check_number, scheduled_at, status,
                                                     trace_id, created_at, updated_at)
            VALUES ($1, $2, $3, now() + $4::interval, $5, 'trace', now(), now() - $6::interval)
            """,
            order_id,
            attempt,
            check_number,
            due_in,
            "SCHEDULED" if published_ago is None else "PUBLISHED",
            published_ago or timedelta(0),
        )

    async def outbox_row(self, order_id: int, *, sent: bool) -> None:
        await self._execute(
            """
            INSERT INTO outbox_event (event_id, event_type, topic, aggregate_id, trace_id, parent_event_id, payload,
                                      status, created_at)
            VALUES (gen_random_uuid(), 'payment_order_created', 'payment_order_created_topic', $1, 'trace',
                    gen_random_uuid(), '{}', $2, now())
            """,
            str(order_id),
            "SENT" if sent else "NEW",
        )

    async def stamps(self, order_id: int) -> Stamps:
        row = await order_row(self.url, order_id)
        return Stamps(row["updated_at"], row["swept_at"])

    def trace_of(self, order_id: int) -> str:
        return f"trace-{order_id}"

    async def pass_time(self, delta: timedelta) -> None:
        await shift_back(self.url, delta)


@pytest.fixture(scope="module")
async def sweep_database() -> AsyncIterator[str]:
    async with migrated_database() as url:
        yield url


@pytest.fixture(params=["fake", "postgres"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """None for the fake; this module's database (created only for the real adapter's cases) otherwise."""
    if request.param == "fake":
        return None
    database_url: str = request.getfixturevalue("sweep_database")
    return database_url


@pytest.fixture
async def world(backend: str | None) -> AsyncIterator[SweepWorld]:
    if backend is None:
        yield FakeWorld()
        return
    await fetch(
        backend,
        "TRUNCATE refunds, payment_order_status_checks, payment_orders, payments, outbox_event, processed_events",
    )
    engine = create_engine(DatabaseSettings(url=backend, pool_size=2), application_name="stale-order-contract")
    try:
        yield PostgresWorld(backend, PostgresStaleOrderClaims(engine, statement_timeout_ms=2_000))
    finally:
        await engine.dispose()


async def claim(world: SweepWorld, *, limit: int = 50) -> list[int]:
    return ids(await world.claims.claim_stale(stale_after=STALE_AFTER, limit=limit))


def ids(claimed: list[StaleOrder]) -> list[int]:
    return [s.order.payment_order_id.value for s in claimed]


async def test_an_order_quiet_past_the_threshold_is_claimed_as_it_is_stamped_with_the_stores_now(
    world: SweepWorld,
) -> None:
    await world.add_order(1, quiet_for=HOUR, status="PSP_UNAVAILABLE_TRANSIENT", retry_count=2, status_check_number=1)
    written = await world.stamps(1)

    before = await world.now()
    (stale,) = await world.claims.claim_stale(stale_after=STALE_AFTER, limit=10)
    after = await world.now()

    assert (stale.order.payment_order_id.value, stale.order.status, stale.order.retry_count) == (
        1,
        PaymentOrderStatus.PSP_UNAVAILABLE_TRANSIENT,
        2,
    )
    assert (stale.status_check_number, stale.trace_id, stale.order.updated_at) == (
        1,
        world.trace_of(1),
        written.updated_at,
    )
    stamps = await world.stamps(1)
    assert stamps.updated_at == written.updated_at, "a claim is no state change"
    assert stamps.swept_at is not None and before <= stamps.swept_at <= after


async def test_the_threshold_is_measured_on_the_stores_clock(world: SweepWorld) -> None:
    await world.add_order(1, quiet_for=STALE_AFTER - MARGIN)

    not_yet = await claim(world)
    await world.pass_time(2 * MARGIN)
    now_stale = await claim(world)

    assert (not_yet, now_stale) == ([], [1])


async def test_a_claimed_order_is_not_claimed_again_until_the_threshold_passes_its_claim(world: SweepWorld) -> None:
    await world.add_order(1, quiet_for=HOUR)

    first = await claim(world)
    await world.pass_time(STALE_AFTER - MARGIN)
    within = await claim(world)
    await world.pass_time(2 * MARGIN)
    after = await claim(world)

    assert (first, within, after) == ([1], [], [1])


# --- signs of progress ------------------------------------------------------------------------------------------


async def _moved_lately(world: SweepWorld) -> None:
    await world.add_order(1, quiet_for=timedelta(minutes=5))


async def _psp_call_in_flight(world: SweepWorld) -> None:
    await world.add_order(1, quiet_for=HOUR)
    await world.psp_claim(1, expires_in=timedelta(seconds=20))


async def _psp_call_claimed_lately(world: SweepWorld) -> None:
    await world.add_order(1, quiet_for=HOUR)
    await world.psp_claim(1, expires_in=-timedelta(minutes=2))


async def _psp_call_claimed_long_ago(world: SweepWorld) -> None:
    await world.add_order(1, quiet_for=HOUR)
    await world.psp_claim(1, expires_in=-HOUR)


async def _swept_lately(world: SweepWorld) -> None:
    await world.add_order(1, quiet_for=HOUR)
    await world.swept(1, ago=timedelta(minutes=2))


async def _swept_long_ago(world: SweepWorld) -> None:
    await world.add_order(1, quiet_for=HOUR)
    await world.swept(1, ago=HOUR)


async def _created_event_unsent(world: SweepWorld) -> None:
    await world.add_order(1, quiet_for=HOUR)
    await world.outbox_row(1, sent=False)


async def _created_event_sent(world: SweepWorld) -> None:
    await world.add_order(1, quiet_for=HOUR)
    await world.outbox_row(1, sent=True)


def _waiting_for_check(
    *, attempt: int, due_in: timedelta, published_ago: timedelta | None
) -> Callable[[SweepWorld], Awaitable[None]]:
    """Order 1 waits for check 2 of attempt 1; the check row is for `attempt`."""

    async def setup(world: SweepWorld) -> None:
        await world.add_order(
            1, quiet_for=HOUR, status="PENDING_STATUS_CHECK_LATER", retry_count=1, status_check_number=2
        )
        await world.status_check(1, attempt=attempt, check_number=2, due_in=due_in, published_ago=published_ago)

    return setup


# case -> (setup, claimed?)
SIGNS: dict[str, tuple[Callable[[SweepWorld], Awaitable[None]], bool]] = {
    "moved lately": (_moved_lately, False),
    "a psp call in flight": (_psp_call_in_flight, False),
    "a psp call claimed lately": (_psp_call_claimed_lately, False),
    "a psp call claimed long ago": (_psp_call_claimed_long_ago, True),
    "claimed by another sweeper lately": (_swept_lately, False),
    "claimed by a sweeper long ago": (_swept_long_ago, True),
    "its created event still in the outbox": (_created_event_unsent, False),
    "its created event sent": (_created_event_sent, True),
    "its status check scheduled": (_waiting_for_check(attempt=1, due_in=HOUR, published_ago=None), False),
    "its status check overdue": (_waiting_for_check(attempt=1, due_in=-HOUR, published_ago=None), False),
    "its status check published lately": (
        _waiting_for_check(attempt=1, due_in=-HOUR, published_ago=timedelta(minutes=2)),
        False,
    ),
    "its status check published long ago": (_waiting_for_check(attempt=1, due_in=-HOUR, published_ago=HOUR), True),
    "only a check of an earlier attempt scheduled": (
        _waiting_for_check(attempt=0, due_in=HOUR, published_ago=None),
        True,
    ),
}


@pytest.mark.parametrize("case", list(SIGNS))
async def test_what_counts_as_a_sign_of_progress(world: SweepWorld, case: str) -> None:
    setup, claimed = SIGNS[case]
    await setup(world)
    before = await world.stamps(1)

    found = await claim(world)

    assert found == ([1] if claimed else [])
    assert ((await world.stamps(1)).swept_at != before.swept_at) is claimed, "stamped if, and only if, claimed"


@pytest.mark.parametrize("status", NOT_IN_FLIGHT)
async def test_settled_and_parked_orders_are_never_claimed(world: SweepWorld, status: str) -> None:
    await world.add_order(1, quiet_for=24 * HOUR, status=status, retry_count=2, status_check_number=5)

    assert await claim(world) == []
    assert (await world.stamps(1)).swept_at is None


async def test_a_round_is_bounded_and_takes_the_oldest_first(world: SweepWorld) -> None:
    for order_id in range(1, 8):
        await world.add_order(order_id, quiet_for=HOUR + timedelta(seconds=order_id))

    rounds = [await claim(world, limit=3) for _ in range(4)]

    assert rounds == [[7, 6, 5], [4, 3, 2], [1], []]


@pytest.mark.parametrize(
    ("limit", "stale_after", "wrong"),
    [
        (0, STALE_AFTER, "limit"),
        (-1, STALE_AFTER, "limit"),
        (10, timedelta(0), "stale_after"),
        (10, -HOUR, "stale_after"),
    ],
    ids=["no limit", "a negative limit", "no threshold", "a negative threshold"],
)
async def test_a_claim_needs_a_limit_of_one_or_more_and_a_positive_threshold(
    world: SweepWorld, limit: int, stale_after: timedelta, wrong: str
) -> None:
    await world.add_order(1, quiet_for=HOUR)
    await world.add_order(2, quiet_for=2 * HOUR)

    with pytest.raises(ValueError, match=wrong):
        await world.claims.claim_stale(stale_after=stale_after, limit=limit)
    assert [(await world.stamps(i)).swept_at for i in (1, 2)] == [None, None]
