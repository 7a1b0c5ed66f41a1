"""A fixed number of asyncio worker tasks pulling PSP calls from a bounded queue.

Why worker tasks and not OS threads: the PSP client (one shared aiohttp.ClientSession) is asynchronous, so a
single event loop keeps many calls in flight; threads would only add GIL contention and hand-offs without
adding I/O concurrency. The pool keeps what the original's ThreadPoolExecutor (8 threads, queue 64,
AbortPolicy) gave: at most `workers` calls at once, at most `queue_size` waiting, and an immediate
rejection, never an unbounded backlog, when both are full.

Every call gets one deadline when it is submitted. The caller stops waiting at the deadline; the worker hands
the time left to the call, which bounds its HTTP request with the client's own per-phase timeouts. The worker
does not cancel the request at the deadline: those timeouts end it and say how far it got (never connected,
or sent and unanswered), and a request cancelled mid-way says nothing and costs its connection; cancellation
is only a backstop `grace_s` later. The PSP may still finish a charge after we hung up: that unknown outcome
is resolved by a status query.

With a `GradientLimit` the pool runs at most `limit.current` of its `workers` at once, the limit following the
PSP's latency (payment_infrastructure/psp/concurrency_limit.py); `workers` is then the ceiling. Worker i takes a
call only while i < the limit, so a lower limit parks the highest-numbered workers once their call ends (a worker
already waiting for a call when the limit fell may still take one more).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from payment_infrastructure.psp.concurrency_limit import GradientLimit
from payment_infrastructure.psp.metrics import (
    PSP_CONCURRENCY_LIMIT,
    PSP_EXEC_DURATION,
    PSP_POOL_QUEUE_DEPTH,
    PSP_QUEUE_DELAY,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")


class PoolRejected(Exception):
    """The call was never started, so it never reached the PSP; `code` says why."""

    FULL = "REJECTED"
    QUEUE_TIMEOUT = "QUEUE_TIMEOUT"
    CLOSED = "POOL_CLOSED"

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(eq=False)
class _Job(Generic[T]):
    call: Callable[[float], Awaitable[T]]
    future: asyncio.Future[T]
    enqueued_at: float
    deadline: float
    started: bool = False


class PspWorkerPool(Generic[T]):
    def __init__(self, workers: int, queue_size: int, grace_s: float = 1.0, limit: GradientLimit | None = None) -> None:
        if workers < 1 or queue_size < 1:
            raise ValueError("a worker pool needs at least one worker and one queue slot")
        if limit is not None and limit.current > workers:
            raise ValueError("the concurrency limit cannot start above the pool's workers")
        self._worker_count = workers
        self._limit = limit
        self._allowed = workers if limit is None else limit.current
        self._grew = asyncio.Event()
        self._grace_s = grace_s
        self._queue: asyncio.Queue[_Job[T]] = asyncio.Queue(maxsize=queue_size)
        self._workers: list[asyncio.Task[None]] = []
        self._accepting = False
        self._busy = 0

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def busy_workers(self) -> int:
        return self._busy

    @property
    def allowed_workers(self) -> int:
        """Calls that may run at once now: `workers`, or the adaptive limit's current value."""
        return self._allowed

    async def start(self) -> None:
        if self._workers:
            return
        self._workers = [asyncio.create_task(self._work(i), name=f"psp-worker-{i}") for i in range(self._worker_count)]
        self._accepting = True
        PSP_CONCURRENCY_LIMIT.set(self._allowed)

    async def close(self, drain_timeout_s: float) -> None:
        """Refuse new calls, let queued ones finish (each is bounded by its deadline), then stop workers."""
        self._accepting = False
        try:
            await asyncio.wait_for(self._queue.join(), drain_timeout_s)
        except TimeoutError:
            log.warning("psp_pool_drain_timed_out", queued=self._queue.qsize(), busy=self._busy)
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        while not self._queue.empty():  # left over after a drain timeout: nobody will run them
            job = self._queue.get_nowait()
            PSP_POOL_QUEUE_DEPTH.dec()
            if not job.future.done():
                job.future.set_exception(PoolRejected(PoolRejected.CLOSED, "the PSP worker pool closed"))
            self._queue.task_done()

    async def run(self, call: Callable[[float], Awaitable[T]], timeout_s: float) -> T:
        """Run `call(seconds_left)` on a worker, which must bound itself by the seconds it is given.

        Raises PoolRejected when the call never started (queue full, pool closed, or the deadline passed
        while it was queued) and TimeoutError when it started but did not finish by the deadline.
        """
        if not self._accepting:
            raise PoolRejected(PoolRejected.CLOSED, "the PSP worker pool is not running")
        loop = asyncio.get_running_loop()
        now = loop.time()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(call, future, enqueued_at=now, deadline=now + timeout_s)
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise PoolRejected(
                PoolRejected.FULL, f"the PSP worker pool queue is full ({self._queue.maxsize})"
            ) from None
        PSP_POOL_QUEUE_DEPTH.inc()
        try:
            # On timeout or cancellation wait_for cancels the future, and a worker skips a job whose future
            # is done: so a job not started by now never will be (one event loop, no race).
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            if not job.started:
                raise PoolRejected(PoolRejected.QUEUE_TIMEOUT, "waited out the call timeout in the queue") from None
            raise

    async def _work(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while index >= self._allowed:
                await self._grew.wait()
            job = await self._queue.get()
            PSP_POOL_QUEUE_DEPTH.dec()
            try:
                if not job.future.done():
                    await self._execute(job, loop)
            finally:
                self._queue.task_done()

    async def _execute(self, job: _Job[T], loop: asyncio.AbstractEventLoop) -> None:
        started = loop.time()
        PSP_QUEUE_DELAY.observe(started - job.enqueued_at)
        if started >= job.deadline:  # waited out its whole budget in the queue: never start it
            job.future.set_exception(TimeoutError())
            return
        job.started = True
        self._busy += 1
        try:
            left = job.deadline - started
            result = await asyncio.wait_for(job.call(left), left + self._grace_s)
        except asyncio.CancelledError:  # the pool closed mid-call: the request may have gone out
            if not job.future.done():
                job.future.set_exception(TimeoutError())
            raise
        except Exception as exc:  # TimeoutError included: handed to the caller as-is
            if not job.future.done():
                job.future.set_exception(exc)
        else:
            if not job.future.done():
                job.future.set_result(result)
        finally:
            took = loop.time() - started
            if self._limit is not None and self._limit.on_call(took, self._busy):
                self._follow_limit(self._limit.current)
            self._busy -= 1
            PSP_EXEC_DURATION.observe(took)

    def _follow_limit(self, allowed: int) -> None:
        grew = allowed > self._allowed
        self._allowed = min(allowed, self._worker_count)
        PSP_CONCURRENCY_LIMIT.set(self._allowed)
        if grew:  # wake the parked workers; each checks its own index again
            self._grew.set()
            self._grew = asyncio.Event()
