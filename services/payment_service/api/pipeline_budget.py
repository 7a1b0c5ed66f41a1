"""End-to-end flow control: creates are admitted while the pipeline behind the API keeps up.

The API can write far more payments than the dispatcher, the consumers and the PSP can settle; what it accepts
beyond that only waits, and every order behind it waits longer. So admission also bounds the orders accepted and
queued in front of their first PSP call (in the outbox, on a topic, waiting for a consumer). Little's law sizes the
bound: orders queued = the rate they leave the queue x the time each waits, so with L orders queued for W (their
95th-percentile wait), the pipeline takes about L / W a second and `L / W x target` orders keep the wait at the
target. The rate is smoothed over about a second of readings and the budget follows it (between `min_in_flight`,
so that a few stuck orders never close the door, and `max_in_flight`, which also bounds every order awaiting its
first answer, in a PSP call or not): stopped consumers or too few PSP calls in flight raise W and shrink it within
seconds; a queue that waits less than half the target (or is empty) grows it by a quarter a reading, since a
short queue shows the pipeline's fixed latency rather than its rate. The PSP's own latency is not queueing: a PSP
that answers in 150 ms, or lets a fifth of the calls wait out their timeout, leaves the budget alone as long as the
calls keep up. Past the budget a create is refused at once with 503 `pipeline-behind` and Retry-After: nothing was
written, and the client retries with the same Idempotency-Key.

The reading comes from the database (every API process sees every process's orders), taken at most every
`refresh_seconds` and only while creates arrive; between readings a process adds the orders it accepted itself. A
reading older than `stale_after_seconds` (it failed) refuses nothing: the create's own write then says whether the
database is there. Knobs and figures: docs/operations.md, "Flow control".
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import structlog

from payment_application.ports.pipeline import BacklogReading, PipelineBacklog
from services.payment_service.metrics import (
    PIPELINE_BUDGET,
    PIPELINE_ORDERS_IN_FLIGHT,
    PIPELINE_ORDERS_QUEUED,
    PIPELINE_READING_FAILURES,
    PIPELINE_WAIT_P95,
)

log = structlog.get_logger(__name__)

# A reading looks at up to this many times `max_in_flight` orders: enough for the gauge to show how far past the
# budget the pipeline is.
_READ_UP_TO = 2
# Weight of a new reading in the smoothed settling rate: with a reading every 0.2 s, about a second of history.
_SMOOTHING = 0.3
# How far one reading that shows no queueing (nothing queued, or a wait under half the target) lets the rate grow:
# about 3x a second at a reading every 0.2 s.
_GROWTH = 1.25


class PipelineBudget:
    """`admits()` before a create, `accepted(orders)` after one was written; never waits."""

    def __init__(
        self,
        backlog: PipelineBacklog,
        *,
        target_seconds: float,
        min_in_flight: int,
        max_in_flight: int,
        refresh_seconds: float,
        stale_after_seconds: float,
        fixed: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`fixed`: a budget that does not follow the readings (`min_in_flight` and `max_in_flight` are then it)."""
        if fixed is not None:
            min_in_flight = max_in_flight = fixed
        if not 1 <= min_in_flight <= max_in_flight:
            raise ValueError("need 1 <= min_in_flight <= max_in_flight")
        if target_seconds <= 0 or not 0 < refresh_seconds < stale_after_seconds:
            raise ValueError("need target_seconds > 0 and 0 < refresh_seconds < stale_after_seconds")
        self.budget = max_in_flight
        self._target = target_seconds
        self._min, self._max = min_in_flight, max_in_flight
        self._rate: float | None = None  # orders a second the pipeline settles, smoothed over the readings
        self._backlog = backlog
        self._refresh_seconds = refresh_seconds
        self._stale_after = stale_after_seconds
        self._monotonic = monotonic
        self._orders = 0
        self._queued = 0
        self._read_at = -math.inf
        self._asked_at = -math.inf
        self._accepted_since = 0
        self._refreshing: asyncio.Task[None] | None = None
        PIPELINE_BUDGET.set(self.budget)

    @property
    def in_flight(self) -> int:
        """Orders awaiting their first PSP answer: the last reading plus what this process accepted since."""
        return self._orders + self._accepted_since

    @property
    def queued(self) -> int:
        """Those of them not in a PSP call: the last reading plus what this process accepted since."""
        return self._queued + self._accepted_since

    @property
    def fresh(self) -> bool:
        return self._monotonic() - self._read_at <= self._stale_after

    def admits(self) -> bool:
        now = self._monotonic()
        if now - self._asked_at >= self._refresh_seconds and self._refreshing is None:
            self._asked_at = now
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh(), name="pipeline-budget")
        if now - self._read_at > self._stale_after:
            return True
        return self.queued < self.budget and self.in_flight < self._max

    def accepted(self, orders: int) -> None:
        self._accepted_since += orders

    async def refresh(self) -> None:
        """Read the count now (the first reading of a test, or a start-up check); raises what the read raised."""
        counted = self._accepted_since
        reading = await self._backlog.read(limit=self._max * _READ_UP_TO)
        # Orders accepted before the read began are in the reading; those accepted while it ran may be too, and
        # stay counted until the next one (an over-count, never an under-count).
        self._accepted_since -= counted
        self._orders, self._queued = reading.orders, reading.queued
        self._read_at = self._monotonic()
        self.budget = self._budget_for(reading)
        PIPELINE_ORDERS_IN_FLIGHT.set(reading.orders)
        PIPELINE_ORDERS_QUEUED.set(reading.queued)
        PIPELINE_WAIT_P95.set(reading.wait_p95_seconds)
        PIPELINE_BUDGET.set(self.budget)

    def _budget_for(self, reading: BacklogReading) -> int:
        """Little's law on the queue: the rate it shows (orders queued / their wait, smoothed over about a second of
        readings, so one burst does not swing it) times the target wait.

        A queue that waits less than half the target shows the pipeline's fixed latency (fetch waits, lingers),
        not its rate: few orders over a short wait understate what it could take (a cold start's first reading
        would size the budget from its first few orders). Such a reading, or one with nothing queued, lets the
        rate grow instead; before any reading has shown queueing, the budget stays at its ceiling. Otherwise a
        budget sized while the queue was short keeps it short (what this process accepts between readings fills
        it), and the door stays half shut with cores idle. Measured at 300 payments/s offered: the budget sank to
        its floor within a minute and admitted about 100 payments/s for the rest of the run, where about 180 had
        settled within the bound."""
        if reading.queued > 0 and reading.wait_p95_seconds >= self._target / 2:
            rate = reading.queued / reading.wait_p95_seconds
            self._rate = rate if self._rate is None else self._rate + _SMOOTHING * (rate - self._rate)
        elif self._rate is not None:
            self._rate *= _GROWTH
        if self._rate is None:
            return self._max  # nothing has waited yet: no evidence the pipeline is short of anything
        self._rate = min(self._rate, self._max / self._target)  # past the ceiling it says nothing more
        return min(max(math.ceil(self._rate * self._target), self._min), self._max)

    async def _refresh(self) -> None:
        try:
            await self.refresh()
        except Exception as error:  # never fails a request: admission falls back to the queue bound alone
            PIPELINE_READING_FAILURES.inc()
            log.warning("pipeline_backlog_read_failed", error_class=type(error).__name__, error=str(error))
        finally:
            self._refreshing = None
            self._asked_at = self._monotonic()  # the next one `refresh_seconds` after this one ended

    async def close(self) -> None:
        task = self._refreshing
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
