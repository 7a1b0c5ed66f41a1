"""`python -m tests.chaos` (`make chaos`): every scenario of tests/chaos/scenarios.py, one after another, each on a
fresh stack; prints the table and, with `--write`, puts it into docs/reliability.md with the command line. Exits 1
if any invariant broke in any scenario."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import tempfile
import time
from pathlib import Path

from devstack.keycloak import Keycloak
from tests.chaos.load import Tokens
from tests.chaos.scenarios import Outcome, run_scenario, scenarios, table
from tests.fixtures.psp import running_psp_simulator

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "docs" / "reliability.md"
KEYCLOAK_WITHIN_S = 300.0  # a first start imports the realm: two minutes on a busy 2-core machine


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--payments", type=int, default=2_000, help="payments per scenario (2-3 orders each)")
    parser.add_argument("--rate", type=float, default=50.0, help="payments started per second")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--outage", type=float, default=30.0, help="seconds Postgres and Redis stay cut")
    parser.add_argument("--converge-within", type=float, default=180.0, help="seconds allowed to converge")
    parser.add_argument("--only", action="append", default=[], help="run only the scenarios named (repeatable)")
    parser.add_argument("--write", action="store_true", help=f"write the table to {REPORT.relative_to(ROOT)}")
    return parser.parse_args(argv)


async def main(args: argparse.Namespace, command: str) -> int:
    chosen = [s for s in scenarios(args.outage) if not args.only or s.name in args.only]
    if not chosen:
        print(f"no scenario named {args.only}", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="chaos-"))
    keycloak = Keycloak(scratch / "keycloak", log_file=scratch / "keycloak.log")
    await keycloak.start(within=KEYCLOAK_WITHIN_S)
    outcomes: list[Outcome] = []
    started = time.monotonic()
    try:
        with running_psp_simulator() as (psp, _pid):
            token = Tokens(lambda: keycloak.token("order-service"))
            for number, scenario in enumerate(chosen):
                print(f"== {scenario.name}: {args.payments} payments at {args.rate:g}/s", flush=True)
                outcome = await run_scenario(
                    scenario,
                    psp=psp,
                    issuer_url=keycloak.issuer_url,
                    token=token,
                    payments=args.payments,
                    rate=args.rate,
                    seed=args.seed,
                    log_dir=scratch / f"{number:02d}",
                    converge_within_s=args.converge_within,
                )
                outcomes.append(outcome)
                for problem in outcome.problems():
                    print(f"   VIOLATION: {problem}", flush=True)
                print(table([outcome]).splitlines()[-1], flush=True)
                print(f"   client: {outcome.load.answers}; {outcome.verdict.figures}", flush=True)
                if args.write:  # after every scenario, so a run cut short still leaves what it found
                    write_report(table(outcomes), command, outcomes, time.monotonic() - started, of=len(chosen))
    finally:
        await keycloak.stop()
    report = table(outcomes)
    print(report)
    print(f"({time.monotonic() - started:.0f} s; logs in {scratch})")
    return 0 if all(o.ok for o in outcomes) else 1


def write_report(report: str, command: str, outcomes: list[Outcome], seconds: float, *, of: int) -> None:
    problems = [f"- {o.scenario}: {p}" for o in outcomes for p in o.problems()]
    # The sections after the table ("## ...") are written by hand (the simulation, open defects): kept as they are.
    text = REPORT.read_text() if REPORT.exists() else ""
    kept = text[text.index("\n## ") :] if "\n## " in text else ""
    REPORT.write_text(
        "# Reliability: the crash-and-fault suite\n\n"
        "Written by `make chaos` (tests/chaos/, issue 19): each scenario starts a fresh stack of real processes "
        "(payment-service API, outbox dispatcher, payment-consumers, a private Apache Kafka and Redis, a database of "
        "its own, the PSP simulator), sends the payments through the API with a careful client (same "
        "Idempotency-Key on every retry, honouring Retry-After), sets off its faults at seeded moments after 20 % of "
        "the payments were accepted, waits until no order is in between, then checks the invariants "
        "(tests/chaos/invariants.py). What an operator sees for each fault and what recovers it: "
        'docs/operations.md, "Faults and what recovers them".\n\n'
        f"Command: `{command}` ({seconds / 60:.0f} min"
        f"{'' if len(outcomes) == of else f'; {len(outcomes)} of {of} scenarios'})\n\n"
        f"{report}\n\n"
        "Columns: *duplicates delivered* counts records whose eventId an earlier record of the same topic carried "
        "(redelivery after crashes and retried publishes); *final states*: ok = SUCCESSFUL_FINAL, declined, failed "
        "(retries exhausted), parked = NEEDS_RECONCILIATION; *charged twice* is the PSP simulator's "
        "`orders_charged_more_than_once`; *lost*: accepted payments missing from Postgres; *stuck*: orders in no "
        "final state at the deadline; *time to converge*: from the end of the load and of the faults until nothing "
        "is in flight; *holds*: every invariant held.\n\n"
        + ("Violations:\n\n" + "\n".join(problems) + "\n" if problems else "Every invariant held in every scenario.\n")
        + kept
    )


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    line = "make chaos" if "--write" in sys.argv else "python -m tests.chaos " + shlex.join(sys.argv[1:])
    sys.exit(asyncio.run(main(arguments, line)))
