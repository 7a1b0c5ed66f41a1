"""The PSP worker pool on a real event loop: what never started is told apart from what may have run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from payment_infrastructure.psp.concurrency_limit import GradientLimit, LimitSettings
from payment_infrastructure.psp.worker_pool import PoolRejected, PspWorkerPool
from tests.integration.psp.polling import wait_until


@pytest.fixture
async def pool() -> AsyncIterator[PspWorkerPool[str]]:
    pool: PspWorkerPool[str] = PspWorkerPool(workers=1, queue_size=4, grace_s=1.0)
    await pool.start()
    yield pool
    await pool.close(drain_timeout_s=2)


async def test_call_still_queued_at_its_deadline_is_rejected_and_never_runs(pool: PspWorkerPool[str]) -> None:
    ran: list[str] = []

    async def slow(_left: float) -> str:
        await asyncio.sleep(0.3)
        return "slow"

    async def record(_left: float) -> str:
        ran.append("queued")
        return "queued"

    occupying = asyncio.create_task(pool.run(slow, timeout_s=1))
    await wait_until(lambda: pool.busy_workers == 1)

    with pytest.raises(PoolRejected) as rejected:
        await pool.run(record, timeout_s=0.05)

    assert rejected.value.code == PoolRejected.QUEUE_TIMEOUT
    assert await occupying == "slow"
    await wait_until(lambda: pool.queue_depth == 0 and pool.busy_workers == 0)
    assert ran == []


async def test_call_started_but_unfinished_at_its_deadline_times_out_and_still_completes(
    pool: PspWorkerPool[str],
) -> None:
    completed: list[float] = []

    async def outlives_the_wait(left: float) -> str:
        await asyncio.sleep(0.15)
        completed.append(left)
        return "done"

    with pytest.raises(TimeoutError):
        await pool.run(outlives_the_wait, timeout_s=0.05)

    assert completed == []
    await wait_until(lambda: bool(completed))
    assert 0 < completed[0] <= 0.05


async def test_call_ignoring_its_bound_is_cancelled_after_the_grace_period() -> None:
    pool: PspWorkerPool[str] = PspWorkerPool(workers=1, queue_size=1, grace_s=0.1)
    await pool.start()

    async def never_ends(_left: float) -> str:
        await asyncio.sleep(3600)
        return "never"

    with pytest.raises(TimeoutError):
        await pool.run(never_ends, timeout_s=0.05)

    await wait_until(lambda: pool.busy_workers == 0, timeout_s=1)
    assert await pool.run(lambda _left: asyncio.sleep(0, "next"), timeout_s=1) == "next"
    await pool.close(drain_timeout_s=1)


async def test_closed_pool_rejects_new_calls() -> None:
    pool: PspWorkerPool[str] = PspWorkerPool(workers=1, queue_size=1)
    await pool.start()
    await pool.close(drain_timeout_s=1)

    with pytest.raises(PoolRejected) as rejected:
        await pool.run(lambda _left: asyncio.sleep(0, "x"), timeout_s=1)

    assert rejected.value.code == PoolRejected.CLOSED


async def test_with_an_adaptive_limit_no_more_calls_run_at_once_than_it_allows_and_it_grows_with_the_demand() -> None:
    limit = GradientLimit(LimitSettings(initial=2, minimum=1, maximum=6, window_calls=2))
    pool: PspWorkerPool[str] = PspWorkerPool(workers=6, queue_size=64, grace_s=1.0, limit=limit)
    await pool.start()
    release = asyncio.Event()
    running = 0
    most = 0
    seen_over: list[tuple[int, int]] = []

    async def call(_left: float) -> str:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if running > pool.allowed_workers:
            seen_over.append((running, pool.allowed_workers))
        await release.wait()
        await asyncio.sleep(0.01)  # the PSP's latency: steady, so the limit may grow
        running -= 1
        return "ok"

    try:
        first = [asyncio.create_task(pool.run(call, timeout_s=5)) for _ in range(8)]
        await wait_until(lambda: pool.busy_workers == 2 and pool.queue_depth == 6)
        assert pool.allowed_workers == 2  # two of six workers take calls; the others are parked
        release.set()
        assert await asyncio.gather(*first) == ["ok"] * 8
        more = [asyncio.create_task(pool.run(call, timeout_s=5)) for _ in range(60)]
        assert await asyncio.gather(*more) == ["ok"] * 60
        assert pool.allowed_workers > 2  # the calls used the limit and the latency held: it grew
        assert seen_over == []
        assert most <= 6
    finally:
        release.set()
        await pool.close(drain_timeout_s=2)
