"""What must hold once the system has converged, read from Postgres, Kafka and the PSP simulator's ledger."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from payment_domain.status import PaymentOrderStatus, PaymentStatus, roll_up
from payment_domain.topics import Topic
from tests.integration.api.helpers import fetch

FINAL = frozenset(
    {
        PaymentOrderStatus.SUCCESSFUL_FINAL,
        PaymentOrderStatus.DECLINED_FINAL,
        PaymentOrderStatus.FAILED_FINAL,
        PaymentOrderStatus.NEEDS_RECONCILIATION,
    }
)
CONSUMED_TOPICS = (
    Topic.PAYMENT_ORDER_CREATED,
    Topic.PSP_CALL_REQUESTED,
    Topic.PSP_RESULT_UPDATED,
    Topic.STATUS_CHECK_SCHEDULER,
)
ALL_TOPICS = (*CONSUMED_TOPICS, Topic.PAYMENT_ORDER_SUCCEEDED, Topic.PAYMENT_ORDER_FAILED)
PAYMENTS_CLI = Path(sys.executable).with_name("payments")


@dataclass
class Snapshot:
    """The state the checks judge: orders and payments from Postgres, the PSP's ledger."""

    orders: dict[str, dict[str, Any]]  # public payment order id -> row
    payments: dict[str, dict[str, Any]]  # public payment id -> row
    summary: dict[str, Any]
    charged: dict[str, dict[str, Any]]  # merchant reference -> its first successful charge

    def stuck(self) -> dict[str, str]:
        return {o: r["status"] for o, r in self.orders.items() if r["status"] not in FINAL}


async def snapshot(database_url: str, psp_url: str) -> Snapshot:
    orders = await fetch(
        database_url,
        "SELECT public_payment_order_id, public_payment_id, status, amount_value, amount_currency, retry_count "
        "FROM payment_orders",
    )
    payments = await fetch(database_url, "SELECT public_payment_id, order_id, status FROM payments")
    async with httpx.AsyncClient(base_url=psp_url, timeout=30) as psp:
        summary = (await psp.get("/admin/summary")).json()
        charged = (await psp.get("/admin/charged")).json()["charged"]
    return Snapshot(
        {r["public_payment_order_id"]: dict(r) for r in orders},
        {r["public_payment_id"]: dict(r) for r in payments},
        summary,
        charged,
    )


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def check(self, holds: bool, what: str) -> None:
        if not holds:
            self.violations.append(what)

    @property
    def ok(self) -> bool:
        return not self.violations


def _sample(items: Any, n: int = 5) -> str:
    values = sorted(items) if not isinstance(items, dict) else sorted(items.items())
    return f"{len(values)}, e.g. {values[:n]}"


def check_state(snap: Snapshot, accepted: dict[str, str], orders_per_payment: dict[str, int], verdict: Verdict) -> None:
    """Accepted payments exist once; no order stuck; charged once; PSP charges are exactly our successes, to the
    cent per currency; payment statuses are their orders' roll-up."""
    by_order_id = Counter(p["order_id"] for p in snap.payments.values())
    lost = {o: p for o, p in accepted.items() if p not in snap.payments}
    doubled = {o for o, n in by_order_id.items() if n > 1}
    verdict.figures["lost"] = len(lost)
    verdict.check(not lost, f"accepted payments missing from Postgres: {_sample(lost)}")
    verdict.check(not doubled, f"orderIds with more than one payment: {_sample(doubled)}")
    counted = Counter(r["public_payment_id"] for r in snap.orders.values())
    short = {p: (counted[p], n) for o, n in orders_per_payment.items() if (p := accepted.get(o)) and counted[p] != n}
    verdict.check(not short, f"payments whose orders are not all there (found, sent): {_sample(short)}")
    unknown = set(by_order_id) - set(accepted)
    verdict.check(not unknown, f"payments the client never saw accepted: {_sample(unknown)}")

    stuck = snap.stuck()
    verdict.figures["stuck"] = len(stuck)
    verdict.check(not stuck, f"orders stuck in between: {_sample(stuck)}")
    verdict.figures["final"] = dict(Counter(r["status"] for r in snap.orders.values()))

    twice = int(snap.summary["orders_charged_more_than_once"])
    verdict.figures["charged_twice"] = twice
    verdict.check(twice == 0, f"orders charged more than once: {snap.summary['orders_charged_more_than_once_sample']}")
    verdict.check(snap.summary["idempotency_mismatches"] == 0, f"PSP idempotency mismatches: {snap.summary}")
    successful = {o for o, r in snap.orders.items() if r["status"] == PaymentOrderStatus.SUCCESSFUL_FINAL}
    charged = set(snap.charged)
    verdict.check(
        not charged - successful,
        f"charged by the PSP, not SUCCESSFUL_FINAL with us: "
        f"{_sample({o: snap.orders[o]['status'] if o in snap.orders else 'absent' for o in charged - successful})}",
    )
    verdict.check(
        not successful - charged, f"SUCCESSFUL_FINAL with no charge at the PSP: {_sample(successful - charged)}"
    )
    ours = Counter[str]()
    for order in successful:
        ours[snap.orders[order]["amount_currency"]] += snap.orders[order]["amount_value"]
    theirs = {c: v for c, v in snap.summary["charged_minor_by_currency"].items() if v}
    verdict.figures["charged_by_currency"] = dict(theirs)
    verdict.check(dict(ours) == theirs, f"totals per currency differ: ours {dict(ours)}, the PSP's {theirs}")
    for order in successful & charged:
        row, charge = snap.orders[order], snap.charged[order]
        if (row["amount_value"], row["amount_currency"]) != (charge["amount"], charge["currency"]):
            verdict.violations.append(f"{order}: ours {row['amount_value']} {row['amount_currency']}, PSP {charge}")

    per_payment: dict[str, list[PaymentOrderStatus]] = {}
    for row in snap.orders.values():
        per_payment.setdefault(row["public_payment_id"], []).append(PaymentOrderStatus(row["status"]))
    wrong = {
        p: (row["status"], str(roll_up(per_payment.get(p, []))))
        for p, row in snap.payments.items()
        if PaymentStatus(row["status"]) != roll_up(per_payment.get(p, []))
    }
    verdict.check(not wrong, f"payment status disagrees with its orders (stored, rolled up): {_sample(wrong)}")


async def check_outbox(database_url: str, verdict: Verdict) -> None:
    rows = await fetch(database_url, "SELECT status, count(*) AS n FROM outbox_event GROUP BY status")
    counts = {r["status"]: r["n"] for r in rows}
    verdict.figures["outbox"] = counts
    unsent = {s: n for s, n in counts.items() if s != "SENT"}
    verdict.check(not unsent, f"outbox rows never published: {unsent}")


async def check_ledger(database_url: str, psp_url: str, verdict: Verdict) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYMENTS_")}
    command = [str(PAYMENTS_CLI), "ledger", "--database-url", database_url, "verify", "--psp-url", psp_url]
    done = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    verdict.check(done.returncode == 0, f"payments ledger verify: exit {done.returncode}\n{done.stdout}{done.stderr}")


def _event_id(value: bytes) -> str | None:
    try:
        envelope = json.loads(value)
    except ValueError:
        return None
    return str(envelope.get("eventId")) if isinstance(envelope, dict) else None


async def consumer_topics(bootstrap: str) -> set[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        return set(await consumer.topics())
    finally:
        await consumer.stop()


async def read_topics(bootstrap: str, topics: list[str], *, within: float = 60.0) -> dict[str, list[bytes]]:
    """Every record value acknowledged on each topic before this call (one group-less consumer for all of them,
    read up to each partition's end offset; a topic that does not exist reads as empty)."""
    partitions: dict[str, set[int]] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await producer.start()
    try:
        existing = await consumer_topics(bootstrap)
        for topic in topics:
            if topic in existing:
                partitions[topic] = set(await producer.partitions_for(topic))
    finally:
        await producer.stop()
    values: dict[str, list[bytes]] = {topic: [] for topic in topics}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for topic, numbers in partitions.items() for p in sorted(numbers)]
        if not assigned:
            return values
        ends = await consumer.end_offsets(assigned)
        pending = {tp for tp, end in ends.items() if end > 0}
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        deadline = time.monotonic() + within
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up reading {sorted(map(str, pending))[:5]} after {within}s")
            for tp, records in (await consumer.getmany(*pending, timeout_ms=200)).items():
                values[tp.topic].extend(bytes(r.value or b"") for r in records if r.offset < ends[tp])
                if records and records[-1].offset >= ends[tp] - 1:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return values


async def check_kafka(database_url: str, bootstrap: str, poison: dict[str, bytes], verdict: Verdict) -> None:
    """Every outbox row on its topic (published at least once); duplicates delivered (a record whose eventId an
    earlier one of its topic carried); the dead-letter topics: exactly the injected poison, one each (a copy of
    the same poison after a crash is counted in `dead_letters_repeated`)."""
    dead_letter_topics = [f"{topic.value}.DLQ" for topic in CONSUMED_TOPICS]
    read = await read_topics(bootstrap, [*(t.value for t in ALL_TOPICS), *dead_letter_topics])
    duplicates = 0
    published: set[tuple[str, str]] = set()
    for topic in ALL_TOPICS:
        ids = [i for value in read[topic.value] if (i := _event_id(value)) is not None]
        duplicates += len(ids) - len(set(ids))
        published |= {(topic.value, i) for i in ids}
    verdict.figures["duplicates"] = duplicates
    outbox = await fetch(database_url, "SELECT topic, event_id::text AS event_id FROM outbox_event")
    missing = {(r["topic"], r["event_id"]) for r in outbox} - published
    verdict.check(not missing, f"outbox rows not on their topic: {_sample(missing)}")
    # A consumer killed between dead-lettering a record and committing its offset gets it again and dead-letters it
    # again (at least once, like every hop): the same record twice is counted, anything else breaks the check.
    redelivered = 0
    for topic in CONSUMED_TOPICS:
        dead = read[f"{topic.value}.DLQ"]
        expected = [poison[topic.value]] if topic.value in poison else []
        redelivered += len(dead) - len(set(dead))
        distinct = sorted(set(dead))
        verdict.check(distinct == expected, f"{topic.value}.DLQ holds {dead[:3]} ({len(dead)}), expected {expected}")
    verdict.figures["dead_letters_repeated"] = redelivered
