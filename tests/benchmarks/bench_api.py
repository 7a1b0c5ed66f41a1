"""`make bench-api`: POST /payments with real tokens against a real payment-service process.

Phase 1 saturates the API with closed-loop k6 users and reports created payments/s. Phase 2 offers half that rate
open-loop and reports latency percentiles. With `--overload RATE`, phase 3 offers RATE requests/s open-loop (past
capacity) and reports what was accepted, what was shed (503 overloaded, and how fast), and client timeouts (3 s).
Figures are printed; nothing is asserted (benchmarks are not tests).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx

from tests.benchmarks.stack import ROOT, api_stack, client_token

K6_SCRIPT = Path(__file__).with_name("k6") / "create_payment.js"
K6 = str(ROOT / ".venv" / "bin" / "k6")


def run_k6(env: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "summary.json"
        subprocess.run(
            [K6, "run", "--quiet", "--summary-export", str(summary), str(K6_SCRIPT)],
            env={**os.environ, **env},
            check=False,
            stdout=subprocess.DEVNULL,
        )
        return dict(json.loads(summary.read_text())["metrics"])


def report(title: str, metrics: dict[str, Any]) -> float:
    duration = metrics["http_req_duration"]
    reqs = metrics["http_reqs"]
    ok = metrics["checks"]["passes"]
    failed = metrics["checks"]["fails"]
    rate = float(reqs["rate"]) * ok / max(ok + failed, 1)
    print(f"{title}")
    print(f"  requests/s         {reqs['rate']:.0f}  (202 accepted: {rate:.0f}/s, non-202: {failed})")
    print(
        "  latency ms         "
        f"p50 {duration['med']:.2f}  p90 {duration['p(90)']:.2f}  p95 {duration['p(95)']:.2f}  "
        f"p99 {duration['p(99)']:.2f}  max {duration['max']:.2f}"
    )
    return rate


def server_counts(management_url: str) -> dict[str, float]:
    """Creates written and creates shed so far, from the API's own metrics (summed over its workers)."""
    text = httpx.get(f"{management_url}/metrics", timeout=5).text
    wanted = {"payments_created_total": "created", 'http_requests_shed_total{reason="queue_full"}': "shed"}
    counts = dict.fromkeys(wanted.values(), 0.0)
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in wanted:
            counts[wanted[name]] += float(value)
    return counts


def report_overload(title: str, metrics: dict[str, Any], server: dict[str, float]) -> None:
    reqs = metrics["http_reqs"]
    seconds = float(reqs["count"]) / max(float(reqs["rate"]), 1e-9)
    accepted, shed = metrics.get("accepted_ms", {}), metrics.get("shed_ms", {})
    timeouts = metrics.get("client_timeouts", {}).get("count", 0)
    other = metrics.get("other_statuses", {}).get("count", 0)
    dropped = metrics.get("dropped_iterations", {}).get("count", 0)

    def per_second(trend: dict[str, Any]) -> float:
        return float(trend.get("count", 0)) / seconds

    def latency(trend: dict[str, Any]) -> str:
        if not trend.get("count"):
            return "-"
        return f"p50 {trend['med']:.1f}  p99 {trend['p(99)']:.1f}  max {trend['max']:.1f} ms"

    print(title)
    print(f"  sent/s             {reqs['rate']:.0f}  (k6 could not start {dropped} iterations)")
    print(f"  accepted (202)/s   {per_second(accepted):.0f}  latency {latency(accepted)}")
    print(f"  shed (503/429)/s   {per_second(shed):.0f}  latency {latency(shed)}")
    print(f"  client timeouts    {timeouts}  (no answer within 3 s); other answers {other}")
    print(f"  server counted     {server['created']:.0f} created, {server['shed']:.0f} shed (queue_full)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", default="20s")
    parser.add_argument("--vus", type=int, default=16, help="closed-loop users at saturation (more only queue)")
    parser.add_argument("--workers", type=int, default=2, help="API processes (PAYMENTS_API__WORKERS)")
    parser.add_argument("--rate", type=int, default=0, help="open-loop rate for phase 2 (default: half of phase 1)")
    parser.add_argument("--idempotency-keys", action="store_true", help="a fresh Idempotency-Key on every request")
    parser.add_argument("--overload", type=int, default=0, help="phase 3: this many req/s open-loop (0: skipped)")
    args = parser.parse_args()
    with api_stack(workers=args.workers) as stack:
        token = client_token(stack.issuer_url)
        common = {
            "BASE_URL": stack.api_url,
            "TOKEN": token,
            "DURATION": args.duration,
            "IDEMPOTENCY_KEYS": "1" if args.idempotency_keys else "0",
        }
        run_k6({**common, "MODE": "saturate", "VUS": "8", "DURATION": "3s"})  # warm-up
        saturated = report(
            f"saturation ({args.vus} closed-loop users, {args.duration})",
            run_k6({**common, "MODE": "saturate", "VUS": str(args.vus)}),
        )
        half = args.rate or max(int(saturated / 2), 1)
        report(
            f"open-loop rate ({half} req/s, {args.duration})",
            run_k6({**common, "MODE": "rate", "RATE": str(half), "VUS": "50"}),
        )
        if args.overload:
            management = f"http://127.0.0.1:{stack.env['PAYMENTS_API__MANAGEMENT_PORT']}"
            before = server_counts(management)
            metrics = run_k6(
                {**common, "MODE": "overload", "RATE": str(args.overload), "VUS": "300", "MAX_VUS": "2000"}
            )
            after = server_counts(management)
            report_overload(
                f"overload ({args.overload} req/s offered open-loop, {args.duration})",
                metrics,
                {name: after[name] - before[name] for name in after},
            )


if __name__ == "__main__":
    main()
