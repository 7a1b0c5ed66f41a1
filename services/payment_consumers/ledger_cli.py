"""`payments ledger verify`: the ledger recomputed from its postings and checked (docs/ledger.md).

    payments ledger verify [--psp-url http://127.0.0.1:8090] [--accounts]

Prints the trial balance per currency (and with --accounts every account's debits, credits and balance), then
every difference found (charges and refunds), naming the account, order or refund, the field and both values;
exits 1 if there is any, 2 if the PSP's record cannot be read. Without --psp-url only the book's own rules are checked.
Database: --database-url, else PAYMENTS_DB__URL, else the local default.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from payment_application.verify_ledger import LedgerReport
from payment_infrastructure.postgres.settings import DatabaseSettings
from payment_infrastructure.psp.charged_record import PspRecordUnavailable
from services.payment_consumers.bootstrap import build_ledger_verification


def add_parser(groups: Any) -> None:
    ledger = groups.add_parser("ledger", help="the money book")
    ledger.add_argument(
        "--database-url",
        default=os.environ.get("PAYMENTS_DB__URL", DatabaseSettings().url),
        help="SQLAlchemy URL of the payments database (default: $PAYMENTS_DB__URL or the local default)",
    )
    commands = ledger.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="recompute every balance, print the trial balance, compare")
    verify.add_argument("--psp-url", help="the PSP simulator's base URL, to compare with what it charged and refunded")
    verify.add_argument("--accounts", action="store_true", help="print every account, not only the totals")


def print_report(report: LedgerReport, *, accounts: bool) -> None:
    print("trial balance")
    print("currency\tdebits\tcredits")
    for line in report.trial_balance:
        print(f"{line.currency}\t{line.debits}\t{line.credits}")
    if accounts:
        print("accounts")
        print("kind\towner\tcurrency\tdebits\tcredits\tbalance")
        for a in report.accounts:
            account = a.account
            print(
                f"{account.kind.value}\t{account.owner}\t{account.currency.value}\t{a.debits}\t{a.credits}\t{a.balance}"
            )
    compared = "entries, orders and the PSP's record" if report.compared_with_psp else "entries and orders"
    if report.ok:
        print(f"ok: {len(report.accounts)} accounts; checked against {compared}")
        return
    print(f"{len(report.differences)} difference(s), checked against {compared}:", file=sys.stderr)
    for difference in report.differences:
        print(f"DIFFERENCE {difference}", file=sys.stderr)


async def run(args: argparse.Namespace) -> int:
    verification = build_ledger_verification(DatabaseSettings(url=args.database_url), psp_url=args.psp_url)
    try:
        report = await verification.verify()
    except PspRecordUnavailable as error:
        print(str(error), file=sys.stderr)
        return 2
    finally:
        await verification.close()
    print_report(report, accounts=args.accounts)
    return 0 if report.ok else 1
