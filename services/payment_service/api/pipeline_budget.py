"""End-to-end flow control: creates are admitted while the pipeline behind the API keeps up.

The API can write far more payments than the dispatcher, the consumers and the PSP can settle; what it accepts
beyond that only waits, and every order behind it waits longer. So admission also bounds the orders accepted and not
yet answered by the PSP once (Little's law: orders in flight = the rate they settle x the time each waits, so a
budget of `rate x target` keeps the wait near the target). Past the budget a create is refused at once with 503
`pipeline-behind` and Retry-After: nothing was written, and the client retries with the same Idempotency-Key.

The count comes from the database (every API process sees every process's orders), read at most every
`refresh_seconds` and only while creates arrive; between readings a process adds the orders it accepted itself. A
reading older than `stale_after_seconds` (the count failed) does not refuse anything: the create's own write then
says whether the database is there. Knobs and figures: docs/operations.md, "Flow control".
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import structlog

from payment_application.ports.pipeline import PipelineBacklog
from services.payment_service.metrics import (
    PIPELINE_BUDGET,
    PIPELINE_ORDERS_IN_FLIGHT,
    PIPELINE_READING_FAILURES,
)

log = structlog.get_logger(__name__)

# A reading counts up to this many budgets: enough for the gauge to show how far past the budget the pipeline is.
_READ_UP_TO_BUDGETS = 4


class PipelineBudget:
    """`admits()` before a create, `accepted(orders)` after one was written; never waits."""

    def __init__(
        self,
        backlog: PipelineBacklog,
        *,
        budget: int,
        refresh_seconds: float,
        stale_after_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if budget < 1:
            raise ValueError("the in-flight budget must be at least 1 order")
        if not 0 < refresh_seconds < stale_after_seconds:
            raise ValueError("need 0 < refresh_seconds < stale_after_seconds")
        self.budget = budget
        self._backlog = backlog
        self._refresh_seconds = refresh_seconds
        self._stale_after = stale_after_seconds
        self._monotonic = monotonic
        self._reading = 0
        self._read_at = -math.inf
        self._asked_at = -math.inf
        self._accepted_since = 0
        self._refreshing: asyncio.Task[None] | None = None
        PIPELINE_BUDGET.set(budget)

    @property
    def in_flight(self) -> int:
        """Orders awaiting their first PSP answer: the last reading plus what this process accepted since."""
        return self._reading + self._accepted_since

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
        return self.in_flight < self.budget

    def accepted(self, orders: int) -> None:
        self._accepted_since += orders

    async def refresh(self) -> None:
        """Read the count now (the first reading of a test, or a start-up check); raises what the read raised."""
        counted = self._accepted_since
        reading = await self._backlog.orders_awaiting_first_answer(limit=self.budget * _READ_UP_TO_BUDGETS)
        # Orders accepted before the read began are in the reading; those accepted while it ran may be too, and
        # stay counted until the next one (an over-count, never an under-count).
        self._accepted_since -= counted
        self._reading = reading
        self._read_at = self._monotonic()
        PIPELINE_ORDERS_IN_FLIGHT.set(reading)

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
