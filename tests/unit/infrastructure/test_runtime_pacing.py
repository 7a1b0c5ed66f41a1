"""The one worker runtime: a paced loop goes again after a busy round, waits (for a wake-up, the due time, or an
idle backoff) after an idle one, backs off after a failure, and stops cleanly; a timer runs every interval. Real
asyncio time, in milliseconds; every assertion waits on a condition with a deadline, never on a bare sleep."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable

import pytest

from payment_infrastructure.runtime.pacing import BUSY, FAILED, IDLE, Pacing, Round, every, paced, pause
from tests.fixtures.ports import until

FAST = Pacing(idle_min=0.05, idle_max=0.2, failure_min=0.05, failure_max=0.2)
"""Waits long enough to tell apart on a loaded 2-core box; lower bounds are exact, upper bounds generous."""


class Script:
    """Rounds that answer from a list (the last answer repeats), noting when each round started."""

    def __init__(self, *answers: Round | Exception) -> None:
        self.answers = list(answers)
        self.started: list[float] = []

    async def __call__(self) -> Round:
        self.started.append(time.monotonic())
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.started, self.started[1:], strict=False)]


async def running(worker: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event) -> asyncio.Task[None]:
    return asyncio.create_task(worker(stop))


async def test_busy_rounds_follow_each_other_at_once_and_idle_ones_back_off_to_the_maximum() -> None:
    script = Script(BUSY, BUSY, BUSY, IDLE)
    stop = asyncio.Event()
    task = await running(paced("t", script, FAST), stop)
    await until(lambda: len(script.started) >= 8)
    stop.set()
    await asyncio.wait_for(task, 1)

    gaps = script.gaps()
    assert all(g < 0.04 for g in gaps[:3])  # busy: no wait
    assert 0.049 <= gaps[3] < 0.15  # first idle wait: idle_min
    assert all(0.199 <= g < 0.45 for g in gaps[6:])  # doubled up to idle_max, not beyond


async def test_a_failed_round_backs_off_and_a_raising_round_counts_as_failed() -> None:
    script = Script(FAILED, RuntimeError("broker down"), FAILED, BUSY, IDLE)
    stop = asyncio.Event()
    task = await running(paced("t", script, FAST), stop)
    await until(lambda: len(script.started) >= 5)
    stop.set()
    await asyncio.wait_for(task, 1)

    gaps = script.gaps()
    assert gaps[0] >= 0.049 and gaps[1] >= 0.099 and gaps[2] >= 0.199  # 50, 100, 200 ms
    assert gaps[3] < 0.04  # success resets the backoff: the busy round is followed at once


async def test_a_known_due_time_shortens_the_idle_wait() -> None:
    script = Script(Round(due_in=0.0), IDLE)
    slow = Pacing(idle_min=1.0, idle_max=1.0, failure_min=1.0, failure_max=1.0)
    stop = asyncio.Event()
    task = await running(paced("t", script, slow), stop)
    await until(lambda: len(script.started) >= 2, timeout=0.5)
    stop.set()
    await asyncio.wait_for(task, 2)


class Bell:
    def __init__(self) -> None:
        self.rung = asyncio.Event()
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1
        self.rung.clear()

    async def wait(self, max_seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.rung.wait(), max_seconds)
        except TimeoutError:
            return False
        return True


async def test_a_wake_up_ends_an_idle_wait_at_once() -> None:
    script = Script(IDLE)
    bell = Bell()
    stop = asyncio.Event()
    slow = Pacing(idle_min=5.0, idle_max=5.0, failure_min=5.0, failure_max=5.0)
    task = await running(paced("t", script, slow, wakeup=bell), stop)
    await until(lambda: len(script.started) == 1)
    bell.rung.set()
    await until(lambda: len(script.started) == 2, timeout=1.0)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert bell.resets >= 2  # reset before every round, so a wake-up after it is never lost


async def test_stop_ends_a_long_wait_at_once_and_lets_the_round_in_progress_finish() -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    async def slow_round() -> Round:
        started.set()
        await asyncio.sleep(0.05)
        finished.set()
        return IDLE

    stop = asyncio.Event()
    slow = Pacing(idle_min=30.0, idle_max=30.0, failure_min=30.0, failure_max=30.0)
    task = await running(paced("t", slow_round, slow, workers=2), stop)
    await asyncio.wait_for(started.wait(), 1)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert finished.is_set()


async def test_a_timer_runs_now_then_every_interval_and_survives_a_failure() -> None:
    calls: list[float] = []

    async def work() -> None:
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise RuntimeError("database restarting")

    stop = asyncio.Event()
    task = await running(every("t", 0.05, work), stop)
    await until(lambda: len(calls) >= 4)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert all(0.049 <= b - a < 0.45 for a, b in itertools.pairwise(calls))


async def test_pause_returns_early_when_stopped() -> None:
    stop = asyncio.Event()
    stop.set()
    started = time.monotonic()
    assert await pause(stop, 10) is True
    assert time.monotonic() - started < 0.1


def test_pacing_and_workers_are_checked() -> None:
    with pytest.raises(ValueError, match="pacing"):
        Pacing(idle_min=0)
    with pytest.raises(ValueError, match="workers"):
        paced("t", Script(IDLE), FAST, workers=0)


async def test_a_cancellation_a_round_turns_into_an_error_still_stops_the_worker() -> None:
    """redis-py can turn a cancellation inside a command into ConnectionError; the worker must not carry on."""
    entered = asyncio.Event()

    async def swallowing_round() -> Round:
        entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise ConnectionError("connection closed while reading") from None
        return IDLE

    task = asyncio.create_task(paced("t", swallowing_round, FAST)(asyncio.Event()))
    await asyncio.wait_for(entered.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)


async def test_a_cancellation_a_round_swallows_still_stops_the_worker() -> None:
    entered = asyncio.Event()

    async def swallowing_round() -> Round:
        entered.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        return IDLE

    task = asyncio.create_task(paced("t", swallowing_round, FAST)(asyncio.Event()))
    await asyncio.wait_for(entered.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)
