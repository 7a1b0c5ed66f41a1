"""PSP client benchmark: charges per second and client CPU per charge, through the real gateway.

    python -m tests.benchmarks.bench_psp_client [--calls 6000] [--concurrency 8 32] [--rounds 3]
        [--gateway module:Class] [--loop uvloop|asyncio]

Starts the PSP simulator in its own process on a free port (BEST_PSP_EVER: every charge succeeds after 1-2 ms),
then, per concurrency level, drives `--calls` charges through the gateway with that many callers at a time, each
charge under a fresh idempotency key, with the product's PSP settings (32 workers, 64 connections). Client CPU
per call is this process's CPU time (time.process_time) over the calls, so it holds the gateway, the worker pool,
the HTTP client and the event loop, and not the simulator, whose own CPU per call is printed beside it. Answers
other than SUCCESSFUL_FINAL (a caller that waited out the 500 ms call timeout on a saturated box) are counted and
printed; the simulator must have executed every charge answered successful once and no charge twice, or the
benchmark stops.
`--gateway` names another implementation with the same constructor and start/charge/close (e.g. an earlier one
copied out of git onto PYTHONPATH), to compare clients on the same box.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from payment_application.ports.psp import PspCallResult, PspChargeRequest
from payment_domain.status import PaymentOrderStatus
from payment_infrastructure.observability.logging import configure_logging
from payment_infrastructure.psp.settings import PspSettings
from payment_infrastructure.psp.worker_pool import PspWorkerPool
from tests.fixtures.ports import wait_until
from tests.fixtures.psp import running_psp_simulator

DEFAULT_GATEWAY = "payment_infrastructure.psp.gateway:AiohttpPspGateway"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Gateway(Protocol):
    @property
    def pool(self) -> PspWorkerPool[Any]: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def charge(self, request: PspChargeRequest) -> PspCallResult: ...


@dataclass(frozen=True)
class Round:
    calls: int
    wall_s: float
    cpu_s: float
    simulator_cpu_s: float
    outcomes: Counter[PaymentOrderStatus]

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.wall_s

    @property
    def cpu_ms_per_call(self) -> float:
        return self.cpu_s * 1000 / self.calls

    @property
    def simulator_cpu_ms_per_call(self) -> float:
        return self.simulator_cpu_s * 1000 / self.calls


@contextmanager
def psp_simulator() -> Iterator[tuple[str, int]]:
    """The tests' simulator (BEST_PSP_EVER, seed 1) with a deep listen backlog; yields (base URL, pid)."""
    with running_psp_simulator(seed=1, backlog=1024) as (handle, pid):
        yield handle.base_url, pid


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of another process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _load_gateway(spec: str) -> Callable[[PspSettings], Gateway]:
    module_name, _, class_name = spec.partition(":")
    factory: Callable[[PspSettings], Gateway] = getattr(importlib.import_module(module_name), class_name)
    return factory


def _request(run: str, number: int) -> PspChargeRequest:
    return PspChargeRequest(
        idempotency_key=f"bench-{run}-{number}",
        merchant_reference=f"po-{run}-{number}",
        amount_minor=2500,
        currency="EUR",
        seller_id="seller-1",
    )


async def _drive(gateway: Gateway, calls: int, concurrency: int) -> Counter[PaymentOrderStatus]:
    run = uuid.uuid4().hex[:8]
    numbers = iter(range(calls))
    outcomes: Counter[PaymentOrderStatus] = Counter()

    async def caller() -> None:
        for number in numbers:
            outcomes[(await gateway.charge(_request(run, number))).status] += 1

    await asyncio.gather(*(caller() for _ in range(concurrency)))

    async def idle() -> bool:  # a call its caller stopped waiting for may still be on its way to the PSP
        return gateway.pool.busy_workers == 0 and gateway.pool.queue_depth == 0

    await wait_until(idle, what="the PSP worker pool to go idle")
    return outcomes


def _check(outcomes: Counter[PaymentOrderStatus], base_url: str) -> None:
    """Every answered success was one execution, and nothing was executed that was not asked for."""
    summary: dict[str, Any] = httpx.get(f"{base_url}/admin/summary", timeout=10).json()
    asked, succeeded = outcomes.total(), outcomes[PaymentOrderStatus.SUCCESSFUL_FINAL]
    if not succeeded <= summary["executions"] <= asked or summary["orders_charged_more_than_once"]:
        raise SystemExit(f"{succeeded} of {asked} charges answered successful, but the simulator says {summary}")


async def _measure(
    make_gateway: Callable[[PspSettings], Gateway], base_url: str, pid: int, args: argparse.Namespace, concurrency: int
) -> list[Round]:
    gateway = make_gateway(PspSettings(base_url=base_url))
    await gateway.start()
    rounds: list[Round] = []
    try:
        httpx.post(f"{base_url}/admin/reset", timeout=10).raise_for_status()
        _check(await _drive(gateway, args.warmup, concurrency), base_url)
        for _ in range(args.rounds):
            httpx.post(f"{base_url}/admin/reset", timeout=10).raise_for_status()
            wall, cpu, simulator = time.perf_counter(), time.process_time(), _cpu_seconds(pid)
            outcomes = await _drive(gateway, args.calls, concurrency)
            measured = Round(
                args.calls,
                time.perf_counter() - wall,
                time.process_time() - cpu,
                _cpu_seconds(pid) - simulator,
                outcomes,
            )
            _check(outcomes, base_url)
            rounds.append(measured)
    finally:
        await gateway.close()
    return rounds


async def main(args: argparse.Namespace) -> None:
    configure_logging(service="bench-psp-client", level="ERROR")  # a timed-out call's warning is counted instead
    make_gateway = _load_gateway(args.gateway)
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    print(f"gateway {args.gateway}, event loop {loop}, {args.calls} calls x {args.rounds} rounds per level")
    with psp_simulator() as (base_url, pid):
        for concurrency in args.concurrency:
            rounds = await _measure(make_gateway, base_url, pid, args, concurrency)
            per_round = ", ".join(f"{r.cpu_ms_per_call:.3f}" for r in rounds)
            outcomes = sum((r.outcomes for r in rounds), Counter[PaymentOrderStatus]())
            answers = ", ".join(f"{count} {status.value}" for status, count in outcomes.most_common())
            print(
                f"concurrency {concurrency:>3}: {statistics.median(r.calls_per_s for r in rounds):7.0f} calls/s, "
                f"client CPU {statistics.median(r.cpu_ms_per_call for r in rounds):.3f} ms/call "
                f"(rounds: {per_round}), simulator CPU "
                f"{statistics.median(r.simulator_cpu_ms_per_call for r in rounds):.3f} ms/call; answers: {answers}"
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=6000, help="charges per measured round")
    parser.add_argument("--warmup", type=int, default=1000, help="charges before measuring, per level")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per level (the median is printed)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--gateway", default=DEFAULT_GATEWAY, help="module:Class of the gateway to drive")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="payment-consumers: uvloop")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.loop == "uvloop":
        import uvloop

        uvloop.run(main(arguments))
    else:
        asyncio.run(main(arguments))
