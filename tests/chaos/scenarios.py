"""Scenarios and their run: start a fresh stack, send the load, set off the scenario's faults at seeded moments
after at least 20 % of the payments were accepted, wait (with a deadline) until nothing is in between any more, then
judge the invariants and report one row of the table."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.chaos import faults as f
from tests.chaos.faults import BASELINE_PSP, Fault, FaultLog, carry_out
from tests.chaos.invariants import (
    Verdict,
    check_kafka,
    check_ledger,
    check_outbox,
    check_state,
    snapshot,
)
from tests.chaos.load import LoadResult, TokenSource, payment_requests, run_load
from tests.chaos.stack import ChaosStack, chaos_stack, poll
from tests.fixtures.psp import PspSimulatorHandle
from tests.integration.api.helpers import fetch

FIRST_FAULT_AT = 0.2  # of the payments accepted
LAST_FAULT_AT = 0.7


@dataclass(frozen=True)
class Scenario:
    name: str
    faults: tuple[Fault, ...]

    @property
    def own_postgres(self) -> bool:
        return any(fault.own_postgres for fault in self.faults)


def scenarios(outage_s: float = 30.0) -> list[Scenario]:
    """Every fault on its own (most of them twice), then all of them in one run. `outage_s`: how long Postgres and
    Redis stay cut."""
    crashes = [f.kill9("api"), f.kill9("dispatcher"), f.kill9("consumers")]
    restarts = [f.sigterm("api"), f.sigterm("dispatcher"), f.sigterm("consumers")]
    outages = [f.cut_postgres(outage_s), f.cut_redis(outage_s)]
    return [
        Scenario("kill -9 API", (f.kill9("api"),) * 2),
        Scenario("kill -9 dispatcher", (f.kill9("dispatcher"),) * 2),
        Scenario("kill -9 consumers", (f.kill9("consumers"),) * 2),
        Scenario("SIGTERM restarts", tuple(restarts)),
        Scenario("kill -9 Kafka", (f.KILL9_KAFKA,) * 2),
        Scenario("Kafka paused", (f.PAUSE_KAFKA,)),
        Scenario(f"Postgres cut {outage_s:g}s", (outages[0],)),
        Scenario("Postgres restart", (f.POSTGRES_RESTART,) * 3),
        Scenario("Postgres crash", (f.POSTGRES_CRASH,) * 3),
        Scenario(f"Redis cut {outage_s:g}s", (outages[1],)),
        Scenario("Redis FLUSHALL", (f.FLUSH_REDIS,) * 2),
        Scenario("Redis restarts", (f.REDIS_RESTART_EMPTY, f.REDIS_RESTART_KEPT)),
        Scenario("every message twice", (f.DUPLICATES,)),
        Scenario("PSP slow, failing", (f.PSP_DEGRADED, f.PSP_FAILING)),
        Scenario("PSP charges then 503", (f.PSP_CHARGED_THEN_503,) * 2),
        Scenario("poison", (f.POISON,)),
        Scenario("wedged poll loop", (f.WEDGE,)),
        Scenario(
            "combined",
            (
                *crashes,
                *restarts,
                f.KILL9_KAFKA,
                f.PAUSE_KAFKA,
                *outages,
                f.POSTGRES_RESTART,
                f.POSTGRES_CRASH,
                f.FLUSH_REDIS,
                f.REDIS_RESTART_EMPTY,
                f.REDIS_RESTART_KEPT,
                f.DUPLICATES,
                f.PSP_DEGRADED,
                f.PSP_FAILING,
                f.PSP_CHARGED_THEN_503,
                f.POISON,
                f.WEDGE,
            ),
        ),
    ]


@dataclass
class Outcome:
    scenario: str
    payments: int
    faults: list[str]
    verdict: Verdict
    load: LoadResult
    converged_in_s: float | None
    log_dir: Path
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict.ok and not self.errors and self.converged_in_s is not None

    def problems(self) -> list[str]:
        out = list(self.errors)
        if self.converged_in_s is None:
            out.append("did not converge before the deadline")
        return out + self.verdict.violations


async def _converged(stack: ChaosStack) -> bool:
    rows = await fetch(
        stack.database_url,
        "SELECT (SELECT count(*) FROM payment_orders WHERE status NOT IN "
        "('SUCCESSFUL_FINAL','DECLINED_FINAL','FAILED_FINAL','NEEDS_RECONCILIATION')) AS open, "
        "(SELECT count(*) FROM outbox_event WHERE status <> 'SENT') AS unsent",
    )
    if rows[0]["open"] or rows[0]["unsent"]:
        return False
    summary = await stack.psp.summary()
    return bool(summary["in_flight"] == 0 and summary["pending"] == 0)


async def run_scenario(
    scenario: Scenario,
    *,
    psp: PspSimulatorHandle,
    issuer_url: str,
    token: TokenSource,
    payments: int,
    rate: float,
    seed: int,
    log_dir: Path,
    converge_within_s: float,
    concurrency: int = 32,
) -> Outcome:
    rng = random.Random(f"{seed}:{scenario.name}")
    await psp.reset()
    await psp.set_scenario("NORMAL", **BASELINE_PSP)
    run = f"CHAOS-{seed}-{rng.getrandbits(32):08x}"
    requests = payment_requests(run, payments, rng)
    moments = sorted(rng.uniform(FIRST_FAULT_AT, LAST_FAULT_AT) for _ in scenario.faults)
    order = list(scenario.faults)
    rng.shuffle(order)
    fault_log = FaultLog()
    errors: list[str] = []
    load = LoadResult()
    load_over = asyncio.Event()
    began = time.monotonic()
    async with chaos_stack(
        psp=psp, issuer_url=issuer_url, log_dir=log_dir, own_postgres=scenario.own_postgres
    ) as stack:
        up_in = time.monotonic() - began

        async def at(moment: float, fault: Fault) -> None:
            async def reached() -> bool:
                return len(load.accepted) >= moment * payments or load_over.is_set()

            await poll(reached, within=3600, interval=0.05)
            await carry_out(fault, stack, fault_log, errors)

        fault_tasks = [asyncio.create_task(at(m, fault)) for m, fault in zip(moments, order, strict=True)]
        try:
            await run_load(stack.api_url, token, requests, rate=rate, concurrency=concurrency, result=load)
        finally:
            load_over.set()
        await asyncio.gather(*fault_tasks)
        await psp.set_scenario("NORMAL", **BASELINE_PSP)
        settled_from = time.monotonic()

        async def converged() -> bool:
            try:
                return await _converged(stack)
            except (OSError, httpx.HTTPError):
                return False

        converged_in: float | None = None
        if await poll(converged, within=converge_within_s, interval=0.5):
            converged_in = time.monotonic() - settled_from
        verdict = Verdict()
        checks_from = time.monotonic()
        snap = await snapshot(stack.database_url, psp.base_url)
        orders_per_payment = {r.body["orderId"]: r.orders for r in requests}
        check_state(snap, load.accepted, orders_per_payment, verdict)
        verdict.check(
            not load.given_up, f"the client gave up on {len(load.given_up)}: {list(load.given_up.items())[:3]}"
        )
        verdict.check(not load.refused, f"refused outright: {list(load.refused.items())[:3]}")
        # 503 (unavailable, with Retry-After) and 504 (outcome unknown) are the API's answers to a fault; any other
        # 5xx is an error it did not recognise (the id floor's unhandled driver error was one).
        unrecognised = {a: n for a, n in load.answers.items() if a.startswith("5") and a not in ("503", "504")}
        verdict.check(not unrecognised, f"the API answered errors it did not recognise: {unrecognised}")
        checks = (
            check_outbox(stack.database_url, verdict),
            check_ledger(stack.database_url, psp.base_url, verdict),
            check_kafka(stack.database_url, stack.broker.bootstrap_servers, fault_log.poison, verdict),
        )
        for check in checks:
            try:
                await check
            except Exception as error:  # a check that could not run is a violation, not a crash of the run
                verdict.violations.append(f"a check failed to run: {type(error).__name__}: {error}")
        verdict.figures["restarts"] = stack.restarts()
        verdict.figures["seconds"] = {
            "stack_up": round(up_in, 1),
            "load_and_faults": round(settled_from - began - up_in, 1),
            "checks": round(time.monotonic() - checks_from, 1),
        }
    return Outcome(scenario.name, payments, fault_log.injected, verdict, load, converged_in, log_dir, errors)


HEADER = (
    "| scenario | payments | faults injected | duplicates delivered | final states | charged twice | lost | stuck "
    "| time to converge | holds |\n|---|---:|---|---:|---|---:|---:|---:|---:|---|"
)
SHORT = {
    "SUCCESSFUL_FINAL": "ok",
    "DECLINED_FINAL": "declined",
    "FAILED_FINAL": "failed",
    "NEEDS_RECONCILIATION": "parked",
}


def table(outcomes: Sequence[Outcome]) -> str:
    rows = [HEADER]
    for o in outcomes:
        figures = o.verdict.figures
        finals = Counter[str](figures.get("final", {}))
        final = ", ".join(f"{SHORT.get(s, s)} {n}" for s, n in sorted(finals.items(), key=lambda kv: -kv[1]))
        injected = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in Counter(o.faults).items())
        converged = "-" if o.converged_in_s is None else f"{o.converged_in_s:.1f} s"
        rows.append(
            f"| {o.scenario} | {o.payments} | {injected} | {figures.get('duplicates', '?')} | {final} "
            f"| {figures.get('charged_twice', '?')} | {figures.get('lost', '?')} | {figures.get('stuck', '?')} "
            f"| {converged} | {'yes' if o.ok else 'NO'} |"
        )
    return "\n".join(rows)
