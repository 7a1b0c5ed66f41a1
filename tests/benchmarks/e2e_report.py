"""`make bench-e2e`'s outputs: a Markdown page of the headline figures beside the targets, and a PNG of throughput,
latency, lag and CPU over time (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from tests.benchmarks.e2e_figures import (
    ACCEPTED,
    SHED,
    bucket_counts,
    bucket_percentiles,
    cpu_rates,
)
from tests.benchmarks.e2e_summary import Run, Summary, finite

MB = 2**20
RSS_LIMIT_BYTES = 200 * MB
JVM_PARTS = frozenset({"kafka", "keycloak"})
LOAD_PARTS = frozenset({"k6", "bench sampler"})  # the measuring side, not the product


def system_cpu_ms_per_order(summary: Summary) -> float:
    """The CPU the system spent per order: every part's but the measuring side's."""
    return sum(p.cpu_ms_per_order or 0.0 for p in summary.parts if p.name not in LOAD_PARTS)


@dataclass(frozen=True)
class Context:
    """Where and how the run was made, for the page's header."""

    command: str
    date: str
    machine: str
    commit: str


def stem(run: Run) -> str:
    return f"e2e-{run.settings.scenario}-{run.settings.rate}"


def _num(value: float, digits: int = 0) -> str:
    if not finite(value):
        return "not final" if math.isinf(value) else "-"
    return f"{value:,.{digits}f}"


def _seconds(value: float) -> str:
    if not finite(value):
        return _num(value)
    return f"{value * 1000:,.0f} ms" if value < 1 else f"{value:,.2f} s"


def _mb(value: int) -> str:
    return f"{value / MB:,.0f} MB"


def markdown(run: Run, summary: Summary, context: Context, chart_name: str) -> str:
    s, cfg = summary, run.settings
    orders_per_payment = s.accepted_orders_per_s / s.accepted_per_s if s.accepted_per_s else 0.0
    product = [p for p in s.parts if p.name not in JVM_PARTS and p.name not in LOAD_PARTS]
    largest = max(product, key=lambda p: p.largest_rss_bytes, default=None)
    jvms = ", ".join(f"{p.name} {_mb(p.largest_rss_bytes)}" for p in s.parts if p.name in JVM_PARTS)
    drained = (
        f"all final {s.drain_seconds:.1f} s after the load stopped"
        if s.drain_seconds is not None
        else f"**not all final** after the {cfg.drain_timeout} s drain"
    )
    lat, direct, waited = s.latency_s, s.latency_direct_s, s.latency_waited_s
    by_group = ", ".join(f"{group} {n:,}" for group, n in sorted(s.lag_by_group_at_load_end.items())) or "-"
    api, shed = s.api_accepted_ms, s.api_shed_ms
    lines = [
        f"# End to end: {cfg.scenario} at {cfg.rate} payments/s",
        "",
        f"{context.date} · {context.machine} · {context.commit}",
        "",
        f"`{context.command}`",
        "",
        f"Offered {cfg.rate} payments/s open loop (k6 constant-arrival-rate, {cfg.sellers[0]}-{cfg.sellers[1]} "
        f"orders each) for {cfg.warmup} s of warm-up plus {cfg.duration} s measured, then the pipeline drained "
        "(up to "
        f"{cfg.drain_timeout} s). The stack is `make run`'s (devstack.run) on free ports, a fresh database and a "
        "private redis-server; every part, Postgres, Kafka, Keycloak and k6 share this machine's cores.",
        "",
        f"![throughput, latency, lag and CPU over time]({chart_name})",
        "",
        "## Headline (the measured window, warm-up excluded)",
        "",
        "| figure | this run | target (BEST_PSP_EVER) |",
        "|---|---|---|",
        f"| offered | {cfg.rate} payments/s for {cfg.duration} s | ≥ 300 payments/s for 5 min |",
        f"| sent by k6 / accepted (202) | {_num(s.sent_per_s, 1)} / **{_num(s.accepted_per_s, 1)}** payments/s "
        f"| every offered payment accepted |",
        f"| shed (429/503) / errors and timeouts / not sent (k6 short of VUs) | {s.shed:,} / {s.errors:,} / "
        f"{s.dropped_iterations:,} | 0 / 0 / 0 |",
        f"| … shed by the pipeline budget (pipeline-behind) / by the API's queue (overloaded) | {_shed_by_reason(run)} "
        "| only what cannot be settled in the bound |",
        f"| accepted orders/s | {_num(s.accepted_orders_per_s, 1)} ({orders_per_payment:.2f} per payment) | ≈ 750 |",
        f"| settled orders/s (became final in the window) | **{_num(s.settled_orders_per_s, 1)}** "
        "| ≈ 750, keeping up with accepted |",
        f"| orders final | {s.orders_final:,} of {s.orders_total:,} (parked {s.orders_parked:,}); {drained} "
        "| every order final |",
        f"| create→final p50 / p95 / p99 | {_seconds(lat[50])} / **{_seconds(lat[95])}** / {_seconds(lat[99])} "
        "| p95 < 1 s |",
        f"| … of orders answered on their first call | {_seconds(direct[50])} / {_seconds(direct[95])} / "
        f"{_seconds(direct[99])} | queueing only |",
        f"| … of the {s.orders_waited:,} that took a retry or a status check | {_seconds(waited[50])} / "
        f"{_seconds(waited[95])} / {_seconds(waited[99])} | designed waits (backoff, check delays) |",
        f"| API latency of accepted p50 / p95 / p99 | {_num(api[50], 1)} / {_num(api[95], 1)} / "
        f"{_num(api[99], 1)} ms | |",
        f"| API latency of shed p50 / p99 | {_num(shed[50], 1)} / {_num(shed[99], 1)} ms | |",
        f"| consumer lag: max / at load end / trend (2nd half) | {s.lag_max:,} / {s.lag_at_load_end:,} / "
        f"{s.lag_trend_per_s:+,.1f} messages/s | flat |",
        f"| consumer lag at load end, by group | {by_group} | |",
        f"| outbox backlog max | {s.outbox_backlog_max:,} rows | |",
        (
            f"| largest process RSS, JVMs aside | {_mb(largest.largest_rss_bytes)} ({largest.name}); {jvms} "
            "| < 200 MB (JVMs: reported) |"
            if largest
            else "| largest process RSS | - | < 200 MB |"
        ),
        "",
        "## Per process",
        "",
        "CPU s: from the start of the measured window to the end of the drain; CPU per order divides it by the "
        "orders that became final in that span; cores idle: the stack before the load (its fixed cost). "
        "RSS is per process (VmRSS): the part's largest process at any sample, and "
        "at the start of the window → when the load stopped. Postgres is the server's background processes plus "
        "this database's backends (shared buffers show in each backend's RSS). k6 and the sampler are the "
        "measuring side.",
        "",
        "| part | CPU s | cores idle | cores under load | CPU ms / order | largest process RSS "
        "| its RSS start → end | processes |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for p in s.parts:
        over = " ⚠" if p.largest_rss_bytes > RSS_LIMIT_BYTES and p.name not in JVM_PARTS | LOAD_PARTS else ""
        per_order = _num(p.cpu_ms_per_order, 3) if p.cpu_ms_per_order is not None else "-"
        lines.append(
            f"| {p.name} | {p.cpu_seconds:,.1f} | {p.cores_idle:.2f} | {p.cores_under_load:.2f} | {per_order} | "
            f"{_mb(p.largest_rss_bytes)}{over} | {_mb(p.rss_at_start)} → {_mb(p.rss_at_end)} | {p.processes} |"
        )
    lines += [
        f"| **whole machine** (busy) | | {s.machine_cores_idle:.2f} | {s.machine_cores_under_load:.2f} | | | | |",
        f"| other processes (not this benchmark) | | {s.others_cores_idle:.2f} | {s.others_cores_under_load:.2f} "
        "| | | | |",
        "",
        f"CPU pressure under load: some task waited for a core {s.cpu_pressure_under_load:.0%} of the time "
        "(/proc/pressure/cpu); near 100 % the machine, not any one part, sets the pace.",
        "",
        "## Outcome",
        "",
        "Final statuses: " + ", ".join(f"{status} {n:,}" for status, n in sorted(run.statuses.items())) + ".",
    ]
    if run.psp:
        lines.append(
            f"PSP simulator: {run.psp.get('calls', '?')} calls, {run.psp.get('orders_charged', '?')} orders charged, "
            f"{run.psp.get('orders_charged_more_than_once', '?')} charged more than once."
        )
    lines.append("")
    return "\n".join(lines)


def chart(run: Run, path: Path) -> None:
    start = run.load.start
    seconds = max(math.ceil(run.drain_end - start) + 1, 1)
    xs = list(range(seconds))
    warmup_end, load_end = run.measured.start - start, run.load.end - start
    accepted = [r for r in run.requests if r.outcome == ACCEPTED]
    finals = [(o.final, o.latency * 1000) for o in run.orders if o.final is not None]

    fig, (through, latency, lag, flow, cpu, memory) = plt.subplots(
        6, 1, figsize=(14, 19), sharex=True, gridspec_kw={"height_ratios": [3, 3, 3, 3, 3, 2]}
    )
    fig.suptitle(
        f"{run.settings.scenario}: {run.settings.rate} payments/s offered for {run.settings.duration} s "
        f"(+{run.settings.warmup} s warm-up), then drain"
    )
    offered = [run.settings.rate if x < load_end else 0 for x in xs]
    through.step(xs, offered, where="post", color="grey", linestyle="--", label="offered payments/s")
    through.plot(xs, bucket_counts((r.started for r in accepted), start, seconds), label="accepted payments/s")
    through.plot(
        xs,
        bucket_counts((r.started for r in accepted), start, seconds, (r.orders for r in accepted)),
        label="accepted orders/s",
    )
    through.plot(xs, bucket_counts((f for f, _ in finals), start, seconds), label="settled orders/s", linewidth=2)
    shed = bucket_counts((r.started for r in run.requests if r.outcome == SHED), start, seconds)
    if any(shed):
        through.plot(xs, shed, label="shed (429/503)/s", color="red")
    through.set_ylabel("per second")

    for q, style in ((50, ":"), (95, "-"), (99, "--")):
        latency.plot(xs, bucket_percentiles(finals, start, seconds, q), style, label=f"create→final p{q}")
    api = bucket_percentiles(((r.started, r.duration_ms) for r in accepted), start, seconds, 99)
    latency.plot(xs, api, color="grey", label="API 202 p99")
    latency.axhline(1000, color="red", linewidth=0.8, linestyle=":", label="1 s")
    latency.set_yscale("log")
    latency.set_ylabel("ms (per completion second)")

    at = [s.at - start for s in run.samples]
    lag.plot(at, [s.total_lag for s in run.samples], label="consumer lag (messages)", linewidth=2)
    groups = sorted({group for s in run.samples for group in s.lag})
    if len(groups) > 1:
        for group in groups:
            lag.plot(at, [s.lag.get(group, 0) for s in run.samples], linewidth=0.8, label=f"  {_short(group)}")
    lag.plot(at, [s.outbox_backlog for s in run.samples], label="outbox backlog (rows)")
    lag.plot(at, [s.in_flight for s in run.samples], label="orders not final", linestyle="--")
    if any(s.retry_queue for s in run.samples):
        lag.plot(at, [s.retry_queue for s in run.samples], label="retry queue")
    lag.set_ylabel("count")

    _flow_panel(flow, run, start)

    names = _cpu_order(run)
    series = []
    for name in names:
        rates = cpu_rates([(s.at - start, s.parts[name].cpu_seconds) for s in run.samples if name in s.parts])
        series.append(rates)
    if series and series[0]:
        cpu_x = [t for t, _ in series[0]]
        cpu.stackplot(cpu_x, *[_align(cpu_x, rates) for rates in series], labels=names, alpha=0.85)
        machine = cpu_rates([(s.at - start, s.machine_busy_seconds) for s in run.samples])
        cpu.plot([t for t, _ in machine], [c for _, c in machine], color="black", linewidth=1, label="whole machine")
    cpu.set_ylabel("cores")

    for name in names:
        seen = [
            (s.at - start, s.parts[name].largest_rss_bytes / MB if s.parts[name].processes else math.nan)
            for s in run.samples
            if name in s.parts
        ]
        memory.plot([t for t, _ in seen], [mb for _, mb in seen], label=name)
    memory.axhline(RSS_LIMIT_BYTES / MB, color="red", linewidth=0.8, linestyle=":")
    memory.set_ylabel("largest process RSS, MB")
    memory.set_xlabel("seconds since the load started")

    for axis in (through, latency, lag, flow, cpu, memory):
        axis.axvspan(0, warmup_end, color="grey", alpha=0.12)
        axis.axvline(load_end, color="black", linewidth=0.8, linestyle=":")
        axis.grid(True, alpha=0.3)
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_series(run: Run, path: Path) -> None:
    """The once-a-second samples behind the chart's lag and flow-control panels, for a closer look."""
    keys = sorted({key for s in run.samples for key in s.flow})
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["seconds", "consumer_lag", "outbox_backlog", "orders_not_final", "retry_queue", *keys])
        for s in run.samples:
            flow = [s.flow.get(key, "") for key in keys]
            writer.writerow(
                [f"{s.at - run.load.start:.1f}", s.total_lag, s.outbox_backlog, s.in_flight, s.retry_queue, *flow]
            )


def _shed_by_reason(run: Run) -> str:
    """From the API's own counters over the whole run (they count every process's refusals since it started)."""
    counted = [s.flow for s in run.samples if "shed_pipeline_behind" in s.flow]
    if not counted:
        return "not read"
    first, last = counted[0], counted[-1]
    behind = last["shed_pipeline_behind"] - first["shed_pipeline_behind"]
    full = last.get("shed_queue_full", 0.0) - first.get("shed_queue_full", 0.0)
    return f"{behind:,.0f} / {full:,.0f}"


FLOW_LINES = (
    ("budget", "pipeline budget (orders queued)"),
    ("queued", "orders queued before their PSP call (API's reading)"),
    ("psp_limit", "PSP calls allowed at once"),
    ("psp_queue", "charges waiting for a PSP worker"),
)
SHED_RATES = (("shed_pipeline_behind", "503 pipeline-behind/s"), ("shed_queue_full", "503 overloaded/s"))


def _flow_panel(axis: Axes, run: Run, start: float) -> None:
    """The bounds that decide what is accepted, as the services exported them (e2e_flow)."""
    for key, label in FLOW_LINES:
        seen = [(s.at - start, s.flow[key]) for s in run.samples if key in s.flow]
        if seen:
            axis.plot([t for t, _ in seen], [v for _, v in seen], label=label)
    for key, label in SHED_RATES:
        rates = cpu_rates([(s.at - start, s.flow[key]) for s in run.samples if key in s.flow])
        if any(r for _, r in rates):
            axis.plot([t for t, _ in rates], [r for _, r in rates], label=label, linestyle="--")
    axis.set_ylabel("flow control")


def _short(group: str) -> str:
    """payment-order-psp-call-executor-consumer-group -> psp-call-executor (the legend stays readable)."""
    return group.removeprefix("payment-order-").removesuffix("-consumer-group")


def _cpu_order(run: Run) -> list[str]:
    names: dict[str, None] = {}
    for sample in run.samples:
        names.update(dict.fromkeys(sample.parts))
    return list(names)


def _align(xs: Sequence[float], rates: Sequence[tuple[float, float]]) -> list[float]:
    by_time = dict(rates)
    return [by_time.get(x, 0.0) for x in xs]
