"""`make bench-e2e`: the four end-to-end cases the product is held to, one stack each, and a page that puts their
headline figures beside the targets.

| case | offered | PSP scenario | what it shows |
|---|---|---|---|
| steady | 100 payments/s | BEST_PSP_EVER | the rate users run: bounded create→final, a mostly idle machine |
| capacity | 300 payments/s | BEST_PSP_EVER | accepted ≈ settled at the target capacity |
| overload | 1,500 payments/s | BEST_PSP_EVER | what cannot be settled in the bound is refused at once |
| normal | 80 payments/s | NORMAL | the original's load-test rate with timeouts, retries and declines |

Each case writes its own page and chart (`e2e-<scenario>-<rate>.md/.png`, see bench_e2e); this writes
`<out>/suite.md`. `<out>` is a new run directory under .run/bench-e2e/ unless `--out docs/benchmarks` publishes the
pages. `--duration` applies to every case (the targets are for 300 s).

    python -m tests.benchmarks.bench_suite --duration 300 --out docs/benchmarks
    python -m tests.benchmarks.bench_suite --duration 60 --only steady,overload
    python -m tests.benchmarks.bench_suite --profile 30   # and where each case's Python processes spend their CPU
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tests.benchmarks import bench_e2e
from tests.benchmarks.e2e_report import JVM_PARTS, LOAD_PARTS, system_cpu_ms_per_order
from tests.benchmarks.e2e_summary import Summary

MB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    name: str
    rate: int
    scenario: str
    extra: tuple[str, ...] = ()


CASES = (
    Case("steady", 100, "BEST_PSP_EVER"),
    Case("capacity", 300, "BEST_PSP_EVER"),
    Case("overload", 1_500, "BEST_PSP_EVER", ("--timeout", "3s", "--max-vus", "3000")),
    Case("normal", 80, "NORMAL", ("--drain-timeout", "900")),
)


def row(case: Case, page: Path, summary: Summary) -> str:
    cpu = system_cpu_ms_per_order(summary)
    largest = max((p for p in summary.parts if p.name not in JVM_PARTS | LOAD_PARTS), key=lambda p: p.largest_rss_bytes)
    latency = summary.latency_s
    shed = summary.api_shed_ms
    profile = page.with_name(f"{page.stem}-profile.md")
    linked = f"[{case.name}]({page.name})" + (f" ([profile]({profile.name}))" if profile.exists() else "")
    return (
        f"| {linked} | {case.rate}/s {case.scenario} | {summary.accepted_per_s:.1f} "
        f"| {summary.accepted_orders_per_s:.0f} / {summary.settled_orders_per_s:.0f} "
        f"| {latency[50]:.2f} / {latency[95]:.2f} / {latency[99]:.2f} "
        f"| {summary.shed:,} ({shed.get(99, float('nan')):.0f} ms p99) | {summary.errors:,} "
        f"| {summary.orders_final:,} of {summary.orders_total:,} | {cpu:.2f} "
        f"| {summary.machine_cores_under_load:.2f} (others {summary.others_cores_under_load:.2f}) "
        f"| {largest.name} {largest.largest_rss_bytes / MB:.0f} MB |"
    )


HEADER = """# The end-to-end suite

{date} · `{command}`

Targets: create→final p95 < 1 s and p99 < 2 s for every accepted payment (BEST_PSP_EVER), what cannot be settled
in that bound refused with 503 + Retry-After (p99 < 50 ms), 0 client timeouts, accepted ≈ settled; ≥ 300
payments/s accepted and settled; at 100/s the machine mostly idle (≤ 0.8 cores); no process of ours above 200 MB.
"others" is CPU of processes that are not this benchmark (other work on a shared machine).

"""
COLUMNS = (
    "case",
    "offered",
    "accepted payments/s",
    "orders/s accepted / settled",
    "create→final p50 / p95 / p99 s",
    "shed (p99)",
    "errors",
    "final",
    "CPU ms / order (product)",
    "cores busy",
    "largest RSS (ours, JVMs aside)",
)
TABLE_HEAD = "| " + " | ".join(COLUMNS) + " |\n|---|---|" + "--:|" * (len(COLUMNS) - 2) + "\n"


async def suite(duration: int, out: Path, only: set[str], profile: int = 0) -> Path:
    rows = []
    command = "python -m tests.benchmarks.bench_suite " + " ".join(sys.argv[1:])
    for case in CASES:
        if only and case.name not in only:
            continue
        args = [
            "--rate", str(case.rate), "--scenario", case.scenario, "--duration", str(duration),
            "--warmup", "10", "--out", str(out), "--profile", str(profile), *case.extra,
        ]  # fmt: skip
        page, summary = await bench_e2e.bench(bench_e2e.parse_args(args))
        rows.append(row(case, page, summary))
    page = out / "suite.md"
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page.write_text(HEADER.format(date=date, command=command.strip()) + TABLE_HEAD + "\n".join(rows) + "\n")
    print(f"wrote {page}")
    return page


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_suite", description=__doc__)
    parser.add_argument("--duration", type=int, default=300, help="measured seconds of each case (default 300)")
    parser.add_argument(
        "--out", type=Path, default=None, help="where the pages go (default: a new .run/bench-e2e/<UTC time>)"
    )
    parser.add_argument("--only", default="", help="comma-separated case names (default: all four)")
    parser.add_argument(
        "--profile", type=int, default=0, help="py-spy each case's Python processes for N s mid-window (off)"
    )
    args = parser.parse_args(argv)
    out = args.out or bench_e2e.default_out_dir(datetime.now(UTC))
    asyncio.run(suite(args.duration, out, {n for n in args.only.split(",") if n}, args.profile))


if __name__ == "__main__":
    main()
