"""Waiting for a condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], *, timeout_s: float = 5.0) -> T:
    """Call `probe` until `accept(result)`; return that result, or fail with the last one seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if accept(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s; last result: {result!r}")
        await asyncio.sleep(0.02)


async def wait_until(condition: Callable[[], bool], *, timeout_s: float = 5.0) -> None:
    """Yield to the event loop until `condition()` holds."""

    async def tick() -> bool:
        return condition()

    await eventually(tick, bool, timeout_s=timeout_s)
