"""`payments reconcile list|settle|refunds|refund`: the operator's way out of NEEDS_RECONCILIATION.

    payments reconcile list [--limit N]
    payments reconcile settle PAYMENT_ORDER_ID --outcome SUCCESSFUL_FINAL|DECLINED_FINAL|FAILED_FINAL \\
        --operator NAME --evidence "what the PSP says (charge id, report, ticket)"
    payments reconcile refunds [--limit N]              parked refunds, longest parked first
    payments reconcile refund REFUND_ID [--psp-url URL] ask the PSP now and settle the refund by its answer

Most parked orders leave on their own (a late PSP answer, or the hourly re-query); `settle` is for the rest, with
the PSP's word found by a person. It writes the final status, the succeeded/failed event (through the outbox),
the payment's roll-up and an audit line (table `reconciliation_audit`) in one transaction.
Database: --database-url, else PAYMENTS_DB__URL, else the local default. The commission of a settled charge comes
from PAYMENTS_LEDGER__* as in the consumers. A parked refund needs no operator's outcome: `refund` asks the PSP
for the refund's status under its key (and sends it under the same key only if the PSP has none), as the hourly
re-query does; an answer still unknown leaves it parked (exit 1).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from payment_application.settle_parked_order import NotParked
from payment_domain.ids import PaymentOrderId, RefundId
from payment_domain.refund import RefundStatus
from payment_domain.status import FINAL_OUTCOMES, PaymentOrderStatus
from payment_infrastructure.postgres.settings import DatabaseSettings
from services.payment_consumers.bootstrap import build_reconciliation, build_refund_reconciliation
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
    refunds = commands.add_parser("refunds", help="parked refunds, longest parked first")
    refunds.add_argument("--limit", type=int, default=100)
    refund = commands.add_parser("refund", help="ask the PSP about one parked refund and settle it by the answer")
    refund.add_argument("refund_id", help="numeric id, or the public id (refund-…)")
    refund.add_argument(
        "--psp-url",
        default=os.environ.get("PAYMENTS_PSP__BASE_URL", "http://127.0.0.1:8090"),
        help="the PSP's base URL (default: $PAYMENTS_PSP__BASE_URL or the local simulator)",
    )


def _order_id(raw: str) -> int:
    text = raw.strip()
    if text.isdigit():
        return int(text)
    return PaymentOrderId.from_public(text).value


def _refund_id(raw: str) -> RefundId:
    text = raw.strip()
    return RefundId(int(text)) if text.isdigit() else RefundId.from_public(text)


async def run(args: argparse.Namespace) -> int:
    if args.command in ("refunds", "refund"):
        return await _run_refunds(args)
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


async def _run_refunds(args: argparse.Namespace) -> int:
    defaults = ConsumersSettings()
    settings = defaults.model_copy(
        update={
            "db": defaults.db.model_copy(update={"url": args.database_url}),
            "psp": defaults.psp.model_copy(update={"base_url": getattr(args, "psp_url", defaults.psp.base_url)}),
        }
    )
    reconciliation = build_refund_reconciliation(settings)
    await reconciliation.start()
    try:
        if args.command == "refunds":
            parked = await reconciliation.parked.list_parked(limit=args.limit)
            print("refund_id\tpublic_id\tpayment_order\tamount\tparked_since\ttrace_id")
            for p in parked:
                refund = p.refund
                print(
                    f"{refund.refund_id.value}\t{refund.public_id}\t{p.order.public_id}\t"
                    f"{refund.amount.value} {refund.amount.currency.value}\t{refund.updated_at.isoformat()}\t"
                    f"{p.trace_id}"
                )
            print(f"{len(parked)} refund(s) in NEEDS_RECONCILIATION")
            return 0
        try:
            refund_id = _refund_id(args.refund_id)
        except ValueError:
            print(f"error: {args.refund_id!r} is not a refund id", file=sys.stderr)
            return 2
        unsettled = await reconciliation.parked.get_parked(refund_id)
        if unsettled is None:
            print(f"error: {refund_id.public} is not in NEEDS_RECONCILIATION (or does not exist)", file=sys.stderr)
            return 1
        settled = await reconciliation.execute(unsettled.request())
        print(f"{settled.public_id} of {unsettled.order.public_id} is {settled.status.value}")
        return 0 if settled.status is not RefundStatus.NEEDS_RECONCILIATION else 1
    finally:
        await reconciliation.close()
