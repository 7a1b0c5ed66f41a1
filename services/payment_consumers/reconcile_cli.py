"""`payments reconcile list|settle`: the operator's way out of NEEDS_RECONCILIATION.

    payments reconcile list [--limit N]
    payments reconcile settle PAYMENT_ORDER_ID --outcome SUCCESSFUL_FINAL|DECLINED_FINAL|FAILED_FINAL \\
        --operator NAME --evidence "what the PSP says (charge id, report, ticket)"

Most parked orders leave on their own (a late PSP answer, or the hourly re-query); `settle` is for the rest, with
the PSP's word found by a person. It writes the final status, the succeeded/failed event (through the outbox),
the payment's roll-up and an audit line (table `reconciliation_audit`) in one transaction.
Database: --database-url, else PAYMENTS_DB__URL, else the local default. The commission of a settled charge comes
from PAYMENTS_LEDGER__* as in the consumers.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from payment_application.settle_parked_order import NotParked
from payment_domain.ids import PaymentOrderId
from payment_domain.status import FINAL_OUTCOMES, PaymentOrderStatus
from payment_infrastructure.postgres.settings import DatabaseSettings
from services.payment_consumers.bootstrap import build_reconciliation
from services.payment_consumers.settings import ConsumersSettings


def add_parser(groups: Any) -> None:
    reconcile = groups.add_parser("reconcile", help="orders parked in NEEDS_RECONCILIATION")
    reconcile.add_argument(
        "--database-url",
        default=os.environ.get("PAYMENTS_DB__URL", DatabaseSettings().url),
        help="SQLAlchemy URL of the payments database (default: $PAYMENTS_DB__URL or the local default)",
    )
    commands = reconcile.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="parked orders, longest parked first")
    listing.add_argument("--limit", type=int, default=100)
    settle = commands.add_parser("settle", help="settle one parked order with what the PSP says")
    settle.add_argument("payment_order_id", help="numeric id, or the public id (paymentorder-…)")
    settle.add_argument("--outcome", required=True, choices=sorted(s.value for s in FINAL_OUTCOMES))
    settle.add_argument("--operator", required=True, help="who settles it (kept in the audit line)")
    settle.add_argument("--evidence", required=True, help="what the PSP says, e.g. its charge id or report")


def _order_id(raw: str) -> int:
    text = raw.strip()
    if text.isdigit():
        return int(text)
    return PaymentOrderId.from_public(text).value


async def run(args: argparse.Namespace) -> int:
    reconciliation = build_reconciliation(DatabaseSettings(url=args.database_url), ConsumersSettings().ledger)
    try:
        if args.command == "list":
            parked = await reconciliation.parked.list_parked(limit=args.limit)
            print("payment_order_id\tpublic_id\tattempt\tparked_since\treason\ttrace_id")
            for p in parked:
                order = p.order
                print(
                    f"{order.payment_order_id.value}\t{order.public_id}\t{order.retry_count}\t"
                    f"{p.parked_since.isoformat()}\t{p.reason or '-'}\t{p.trace_id}"
                )
            print(f"{len(parked)} order(s) in NEEDS_RECONCILIATION")
            return 0
        try:
            order_id = _order_id(args.payment_order_id)
        except ValueError:
            print(f"error: {args.payment_order_id!r} is not a payment order id", file=sys.stderr)
            return 2
        try:
            settled = await reconciliation.settle(
                order_id, outcome=PaymentOrderStatus(args.outcome), operator=args.operator, evidence=args.evidence
            )
        except (NotParked, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(
            f"settled {settled.order.public_id} as {settled.order.status.value}; "
            f"payment {settled.order.payment_id.public} is {settled.payment_status.value}"
        )
        return 0
    finally:
        await reconciliation.close()
