"""What one `make bench-e2e` run recorded, and the headline figures drawn from it (pure: no I/O).

Windows: the load runs from k6's first request for warm-up + duration seconds; the *measured* window is the load
without its warm-up; the *drain* ends when every order is final (or at the drain timeout). Rates are over the
measured window; create→final latency is over the orders created in it; CPU per order is the CPU a part used from
the start of the measured window to the end of the drain, over the orders that became final in that span.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from tests.benchmarks.e2e_figures import (
    ACCEPTED,
    ERROR,
    SHED,
    Order,
    Request,
    Window,
    cpu_ms_per_order,
    cpu_seconds_between,
    per_second,
    percentile,
    slope,
)
from tests.benchmarks.e2e_profile import Profile
from tests.benchmarks.e2e_statements import Statement
from tests.benchmarks.proc_usage import PartUsage


@dataclass(frozen=True)
class Sample:
    """The once-a-second reading: consumer lag per group, unsent outbox rows, orders not final yet, the retry
    queue, and CPU/RSS per part (plus the whole machine's busy CPU seconds, to see what else ran)."""

    at: float
    lag: Mapping[str, int]
    outbox_backlog: int
    in_flight: int
    retry_queue: int
    parts: Mapping[str, PartUsage]
    machine_busy_seconds: float
    cpu_pressure_seconds: float = 0.0  # cumulative time some task waited for a core (PSI)
    flow: Mapping[str, float] = field(default_factory=dict)  # the services' own flow-control series (e2e_flow)

    @property
    def total_lag(self) -> int:
        return sum(self.lag.values())


@dataclass(frozen=True)
class Settings:
    scenario: str
    rate: int
    duration: int
    warmup: int
    sellers: tuple[int, int]
    drain_timeout: int
    vus: int
    max_vus: int


@dataclass
class Run:
    settings: Settings
    requests: list[Request]
    orders: list[Order]
    statuses: dict[str, int]
    samples: list[Sample]
    load: Window
    drain_end: float
    dropped_iterations: int = 0
    psp: dict[str, object] = field(default_factory=dict)
    profiles: list[Profile] = field(default_factory=list)
    statements: list[Statement] | None = None  # the database's, over the profile window (None: not measured)

    @property
    def idle(self) -> Window:
        """Before the load: the stack up and waiting (its fixed cost: polls, timers, heartbeats)."""
        return Window(self.samples[0].at if self.samples else self.load.start, self.load.start)

    @property
    def measured(self) -> Window:
        return Window(min(self.load.start + self.settings.warmup, self.load.end), self.load.end)


@dataclass(frozen=True)
class PartFigures:
    name: str
    cpu_seconds: float  # measured start → drain end
    cores_idle: float  # mean before the load
    cores_under_load: float  # mean over the measured window
    cpu_ms_per_order: float | None
    largest_rss_bytes: int  # the largest single process of the part, at any sample
    rss_at_start: int  # the largest process at the start of the measured window
    rss_at_end: int  # ... and when the load stopped (growth shows as the difference)
    processes: int


@dataclass(frozen=True)
class Summary:
    measured_seconds: float
    sent_per_s: float
    accepted_per_s: float
    accepted_orders_per_s: float
    settled_orders_per_s: float
    accepted: int
    shed: int
    errors: int
    dropped_iterations: int
    orders_total: int
    orders_final: int
    orders_parked: int
    drain_seconds: float | None  # load end → the last order final; None if some never got there
    latency_s: dict[int, float]  # create→final percentiles (50/95/99) of the orders created in the window
    # ... of those answered on their first call, and of those that took a retry or a status check (designed waits)
    latency_direct_s: dict[int, float]
    latency_waited_s: dict[int, float]
    orders_waited: int
    api_accepted_ms: dict[int, float]
    api_shed_ms: dict[int, float]
    lag_max: int
    lag_at_load_end: int
    lag_by_group_at_load_end: dict[str, int]
    lag_trend_per_s: float  # least-squares slope over the second half of the measured window
    outbox_backlog_max: int
    parts: list[PartFigures]
    machine_cores_idle: float
    machine_cores_under_load: float
    others_cores_idle: float
    others_cores_under_load: float
    cpu_pressure_under_load: float  # share of the window in which some task waited for a core


PERCENTILES = (50, 95, 99)
TERMINAL = frozenset({"SUCCESSFUL_FINAL", "FAILED_FINAL", "DECLINED_FINAL", "UNKNOWN_FINAL"})
PARKED = "NEEDS_RECONCILIATION"


def summarise(run: Run) -> Summary:
    measured = run.measured
    in_window = [r for r in run.requests if r.started in measured]
    by_outcome = {kind: [r for r in in_window if r.outcome == kind] for kind in (ACCEPTED, SHED, ERROR)}
    accepted = by_outcome[ACCEPTED]
    created_in_window = [o for o in run.orders if o.created in measured]
    direct = [o for o in created_in_window if not o.waited]
    waited = [o for o in created_in_window if o.waited]
    settled_in_window = sum(1 for o in run.orders if o.final is not None and o.final in measured)
    finals = [o.final for o in run.orders if o.final is not None]
    all_final = len(finals) == len(run.orders)
    drain_seconds = max(max(finals) - run.load.end, 0.0) if all_final and finals else None

    load_samples = [s for s in run.samples if s.at in measured]
    second_half = [s for s in load_samples if s.at >= measured.start + measured.seconds / 2]
    at_end = [s for s in run.samples if s.at <= measured.end]

    cost_window = Window(measured.start, run.drain_end)
    settled_for_cost = sum(1 for o in run.orders if o.final is not None and o.final in cost_window)
    parts = [
        _part_figures(name, run.samples, run.idle, measured, cost_window, settled_for_cost)
        for name in _part_names(run.samples)
    ]
    machine = [(s.at, s.machine_busy_seconds) for s in run.samples]
    machine_cores = per_second(cpu_seconds_between(machine, measured), measured)
    machine_idle = per_second(cpu_seconds_between(machine, run.idle), run.idle)
    return Summary(
        measured_seconds=measured.seconds,
        sent_per_s=per_second(len(in_window), measured),
        accepted_per_s=per_second(len(accepted), measured),
        accepted_orders_per_s=per_second(sum(r.orders for r in accepted), measured),
        settled_orders_per_s=per_second(settled_in_window, measured),
        accepted=len(accepted),
        shed=len(by_outcome[SHED]),
        errors=len(by_outcome[ERROR]),
        dropped_iterations=run.dropped_iterations,
        orders_total=len(run.orders),
        orders_final=sum(n for status, n in run.statuses.items() if status in TERMINAL),
        orders_parked=run.statuses.get(PARKED, 0),
        drain_seconds=drain_seconds,
        latency_s={q: percentile((o.latency for o in created_in_window), q) for q in PERCENTILES},
        latency_direct_s={q: percentile((o.latency for o in direct), q) for q in PERCENTILES},
        latency_waited_s={q: percentile((o.latency for o in waited), q) for q in PERCENTILES},
        orders_waited=len(waited),
        api_accepted_ms={q: percentile((r.duration_ms for r in accepted), q) for q in PERCENTILES},
        api_shed_ms={q: percentile((r.duration_ms for r in by_outcome[SHED]), q) for q in PERCENTILES},
        lag_max=max((s.total_lag for s in load_samples), default=0),
        lag_at_load_end=at_end[-1].total_lag if at_end else 0,
        lag_by_group_at_load_end=dict(at_end[-1].lag) if at_end else {},
        lag_trend_per_s=slope([s.at for s in second_half], [float(s.total_lag) for s in second_half]),
        outbox_backlog_max=max((s.outbox_backlog for s in load_samples), default=0),
        parts=parts,
        machine_cores_idle=machine_idle,
        machine_cores_under_load=machine_cores,
        others_cores_idle=max(machine_idle - sum(p.cores_idle for p in parts), 0.0),
        others_cores_under_load=max(machine_cores - sum(p.cores_under_load for p in parts), 0.0),
        cpu_pressure_under_load=per_second(
            cpu_seconds_between([(s.at, s.cpu_pressure_seconds) for s in run.samples], measured), measured
        ),
    )


def _part_names(samples: list[Sample]) -> list[str]:
    names: dict[str, None] = {}
    for sample in samples:
        names.update(dict.fromkeys(sample.parts))
    return list(names)


def _part_figures(
    name: str, samples: list[Sample], idle: Window, measured: Window, cost_window: Window, settled: int
) -> PartFigures:
    seen = [(s.at, s.parts[name]) for s in samples if name in s.parts]
    cumulative = [(at, usage.cpu_seconds) for at, usage in seen]
    cpu = cpu_seconds_between(cumulative, cost_window)
    before_start = [usage for at, usage in seen if at <= measured.start] or [seen[0][1]]
    before_end = [usage for at, usage in seen if at <= measured.end] or [seen[0][1]]
    return PartFigures(
        name=name,
        cpu_seconds=cpu,
        cores_idle=per_second(cpu_seconds_between(cumulative, idle), idle),
        cores_under_load=per_second(cpu_seconds_between(cumulative, measured), measured),
        cpu_ms_per_order=cpu_ms_per_order(cpu, settled),
        largest_rss_bytes=max(usage.largest_rss_bytes for _, usage in seen),
        rss_at_start=before_start[-1].largest_rss_bytes,
        rss_at_end=before_end[-1].largest_rss_bytes,
        processes=max(usage.processes for _, usage in seen),
    )


def finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))
