"""Paced loops and timers: the only loop machinery in the project.

A paced loop runs rounds until stopped. A round that found work is followed at once by another (more is likely
waiting); one that found none waits for a wake-up (if the worker has one), for the time its round said work falls
due, or for an idle wait that doubles from `idle_min` to `idle_max`; one that failed backs off, doubling from
`failure_min` to `failure_max`, without listening to wake-ups, so a dependency that is down is not hammered. A
timer is a paced loop whose every round waits the same interval. Stopping lets a round in progress finish.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

log = structlog.get_logger(__name__)

Worker = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""Runs until the event is set, then returns once its work in progress is settled."""


@dataclass(frozen=True, slots=True)
class Round:
    """What one round found: `busy` (go again at once), `failed` (back off), `due_in` (seconds until more work
    is known to fall due: the idle wait is no longer than that)."""

    busy: bool = False
    failed: bool = False
    due_in: float | None = None


IDLE = Round()
BUSY = Round(busy=True)
FAILED = Round(failed=True)


@dataclass(frozen=True, slots=True)
class Pacing:
    """`linger`: after a wake-up, wait this long before the round, so that work arriving close together (commits a
    few milliseconds apart) is taken in one round rather than one round each: at a steady trickle a round's fixed
    cost (a transaction, a produce request) is then shared, for at most `linger` of added latency."""

    idle_min: float = 0.05
    idle_max: float = 1.0
    failure_min: float = 0.1
    failure_max: float = 5.0
    linger: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.idle_min <= self.idle_max or not 0 < self.failure_min <= self.failure_max:
            raise ValueError("pacing needs 0 < idle_min <= idle_max and 0 < failure_min <= failure_max")
        if not 0 <= self.linger <= self.idle_min:
            raise ValueError("pacing needs 0 <= linger <= idle_min")

    @classmethod
    def steady(cls, seconds: float) -> Pacing:
        """The same wait after every round that found nothing or failed (a poll or a timer)."""
        return cls(idle_min=seconds, idle_max=seconds, failure_min=seconds, failure_max=seconds)


class WakeUp(Protocol):
    """A hint that work arrived (e.g. Postgres NOTIFY); never a guarantee, so idle waits stay bounded."""

    def reset(self) -> None:
        """Forget wake-ups seen so far; called right before a round, so none that follows it is lost."""
        ...

    async def wait(self, max_seconds: float) -> bool:
        """True when woken, False when `max_seconds` passed first."""
        ...


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds`, or less if `stop` is set meanwhile; True when stopped."""
    if seconds > 0 and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def _woken(stop: asyncio.Event, wakeup: WakeUp, seconds: float) -> bool:
    woken = asyncio.ensure_future(wakeup.wait(seconds))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({woken, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        woken.cancel()
        stopped.cancel()
    return woken.done() and not woken.cancelled() and woken.result()


def _raise_if_cancelled() -> None:
    """Some clients turn a cancellation that lands inside their call into an error of their own, or swallow it
    (redis-py can): a worker being cancelled must still stop, not carry on as if the round had ended."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def paced(
    name: str,
    round_: Callable[[], Awaitable[Round]],
    pacing: Pacing,
    *,
    wakeup: WakeUp | None = None,
    workers: int = 1,
    sleep: Callable[[asyncio.Event, float], Awaitable[object]] = pause,
) -> Worker:
    """`workers` copies of the loop run side by side (e.g. so the database and the broker work in parallel). A
    round that raises is logged and counts as failed. `sleep(stop, seconds)` is every wait but a wake-up's (tests
    record them instead of waiting)."""
    if workers < 1:
        raise ValueError("workers must be at least 1")

    async def one(stop: asyncio.Event) -> None:
        idle, backoff = pacing.idle_min, pacing.failure_min
        while not stop.is_set():
            _raise_if_cancelled()
            if wakeup is not None:
                wakeup.reset()
            try:
                found = await round_()
            except Exception as error:
                _raise_if_cancelled()
                log.error("worker_round_failed", worker=name, error=repr(error), exc_info=error)
                found = FAILED
            if found.failed:
                await sleep(stop, backoff)
                backoff = min(backoff * 2, pacing.failure_max)
                continue
            backoff = pacing.failure_min
            if found.busy:
                idle = pacing.idle_min
                continue
            wait = idle if found.due_in is None else max(min(found.due_in, idle), 0.0)
            if wakeup is None:
                await sleep(stop, wait)
                idle = min(idle * 2, pacing.idle_max)
            elif await _woken(stop, wakeup, wait):
                idle = pacing.idle_min
                if pacing.linger:
                    await sleep(stop, pacing.linger)
            else:
                idle = min(idle * 2, pacing.idle_max)

    async def run(stop: asyncio.Event) -> None:
        if workers == 1:
            await one(stop)
            return
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(one(stop))

    run.__name__ = name
    return run


def every(name: str, interval: float, work: Callable[[], Awaitable[object]]) -> Worker:
    """Run `work` now and then every `interval` seconds until stopped; a failure is logged and tried next time."""

    async def tick() -> Round:
        await work()
        return IDLE

    return paced(name, tick, Pacing.steady(interval))


def busy_if(found: bool) -> Round:
    return BUSY if found else IDLE
