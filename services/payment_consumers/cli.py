"""`payments dlq list|show|replay`: inspect dead letters and send them back to their original topic.

    payments dlq list                          every .DLQ topic with its message count
    payments dlq list --topic T.DLQ            the dead letters of one DLQ
    payments dlq show T.DLQ PARTITION OFFSET   one dead letter: headers, and the value (pretty JSON if it is)
    payments dlq replay T.DLQ --partition P --offset O | --all
    payments topic read TOPIC [--key K] [--limit N]   messages of any topic (e.g. payment_order_created_topic)
    payments reconcile list | settle ID --outcome O --operator NAME --evidence TEXT   (see reconcile_cli.py)
    payments reconcile refunds | refund REFUND_ID   parked refunds; one settled by the PSP's word (reconcile_cli.py)
    payments ledger verify [--psp-url URL] [--accounts]   the trial balance, compared with the PSP (ledger_cli.py)

Broker: --bootstrap-servers, else PAYMENTS_KAFKA__BOOTSTRAP_SERVERS, else 127.0.0.1:9092. A replay does not
remove anything from the DLQ (Kafka cannot); consumers are idempotent, so replaying a letter twice is harmless.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import orjson

from payment_infrastructure.kafka.dead_letter_format import (
    ERROR_STACKTRACE,
    DeadLetter,
    Replayed,
    TopicNotFound,
    is_dlq,
)
from payment_infrastructure.kafka.records import ConsumedRecord
from services.payment_consumers import ledger_cli, reconcile_cli
from services.payment_consumers.bootstrap import build_dead_letter_inspector

_DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
_MESSAGE_PREVIEW = 100


class Inspector(Protocol):
    """What the commands read and replay with (the composition root builds it)."""

    async def counts(self, topics: Iterable[str] | None = None) -> dict[str, int]: ...

    async def records(self, topic: str) -> list[ConsumedRecord]: ...

    async def letters(self, topic: str) -> list[DeadLetter]: ...

    async def letter(self, topic: str, partition: int, offset: int) -> DeadLetter | None: ...

    async def replay(self, letters: Sequence[DeadLetter]) -> list[Replayed]: ...


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payments", description="Payments operations tools.")
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("PAYMENTS_KAFKA__BOOTSTRAP_SERVERS", _DEFAULT_BOOTSTRAP),
        help="Kafka bootstrap servers (default: $PAYMENTS_KAFKA__BOOTSTRAP_SERVERS or %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=float, default=15.0, help="seconds allowed to read a topic to its end (default %(default)s)"
    )
    groups = parser.add_subparsers(dest="group", required=True)
    dlq = groups.add_parser("dlq", help="dead-letter topics").add_subparsers(dest="command", required=True)

    listing = dlq.add_parser("list", help="DLQ topics with their counts, or the letters of one DLQ")
    listing.add_argument("--topic", help="a DLQ topic: list its letters")

    show = dlq.add_parser("show", help="one dead letter in full")
    show.add_argument("topic")
    show.add_argument("partition", type=int)
    show.add_argument("offset", type=int)

    replay = dlq.add_parser("replay", help="re-publish dead letters to their original topic")
    replay.add_argument("topic")
    replay.add_argument("--partition", type=int)
    replay.add_argument("--offset", type=int)
    replay.add_argument("--all", action="store_true", help="every letter of the DLQ")

    topics = groups.add_parser("topic", help="any topic").add_subparsers(dest="command", required=True)
    read = topics.add_parser("read", help="the messages of a topic, oldest first per partition")
    read.add_argument("name")
    read.add_argument("--key", help="only messages with this key (a paymentOrderId)")
    read.add_argument("--limit", type=int, default=50, help="at most this many, the newest (default %(default)s)")
    reconcile_cli.add_parser(groups)
    ledger_cli.add_parser(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.group in ("reconcile", "ledger"):
        code = asyncio.run((reconcile_cli if args.group == "reconcile" else ledger_cli).run(args))
        if code:
            raise SystemExit(code)
        return
    topic: str | None = getattr(args, "topic", None)
    if topic is not None and not is_dlq(topic):
        parser.error(f"{topic} is not a dead-letter topic (expected a name ending in .DLQ)")
    if args.command == "replay" and args.all == (args.partition is not None or args.offset is not None):
        parser.error("replay takes either --partition P --offset O, or --all")
    if args.command == "replay" and not args.all and (args.partition is None or args.offset is None):
        parser.error("replay of one letter needs both --partition and --offset")
    code = asyncio.run(_run(args))
    if code:
        raise SystemExit(code)


async def _run(args: argparse.Namespace) -> int:
    inspector = build_dead_letter_inspector(args.bootstrap_servers, within=args.timeout)
    try:
        if args.group == "topic":
            return await _read_topic(inspector, args.name, args.key, args.limit)
        if args.command == "list":
            return await _list(inspector, args.topic)
        if args.command == "show":
            return await _show(inspector, args.topic, args.partition, args.offset)
        return await _replay(inspector, args.topic, args.partition, args.offset)
    except (TopicNotFound, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


async def _list(inspector: Inspector, topic: str | None) -> int:
    if topic is None:
        counts = await inspector.counts()
        if not counts:
            print("no dead-letter topics")
        width = max((len(name) for name in counts), default=0)
        for name, count in counts.items():
            print(f"{name:<{width}}  {count}")
        return 0
    letters = await inspector.letters(topic)
    print("partition\toffset\tkey\terror_class\terror_message\toriginal")
    for letter in letters:
        record = letter.record
        message = (letter.error_message or "").replace("\n", " ")
        if len(message) > _MESSAGE_PREVIEW:
            message = message[: _MESSAGE_PREVIEW - 1] + "…"
        original = f"{letter.original_topic}:{letter.original_partition}@{letter.original_offset}"
        print(f"{record.partition}\t{record.offset}\t{record.key}\t{letter.error_class}\t{message}\t{original}")
    print(f"{len(letters)} dead letter(s) in {topic}")
    return 0


async def _show(inspector: Inspector, topic: str, partition: int, offset: int) -> int:
    letter = await inspector.letter(topic, partition, offset)
    if letter is None:
        print(f"error: no message at {topic}:{partition}@{offset}", file=sys.stderr)
        return 1
    record = letter.record
    timestamp = datetime.fromtimestamp(record.timestamp_ms / 1000, UTC).isoformat()
    print(f"topic:     {record.topic}")
    print(f"partition: {record.partition}")
    print(f"offset:    {record.offset}")
    print(f"key:       {record.key}")
    print(f"timestamp: {timestamp}")
    print("headers:")
    for name, value in record.headers.items():
        if name != ERROR_STACKTRACE:
            print(f"  {name}: {value.decode('utf-8', 'replace')}")
    print("value:")
    print(_pretty(record.value))
    stacktrace = record.header(ERROR_STACKTRACE)
    if stacktrace:
        print(f"{ERROR_STACKTRACE}:")
        print(stacktrace.rstrip())
    return 0


async def _replay(inspector: Inspector, topic: str, partition: int | None, offset: int | None) -> int:
    letters: list[DeadLetter]
    if partition is None or offset is None:
        letters = await inspector.letters(topic)
    else:
        letter = await inspector.letter(topic, partition, offset)
        if letter is None:
            print(f"error: no message at {topic}:{partition}@{offset}", file=sys.stderr)
            return 1
        letters = [letter]
    for done in await inspector.replay(letters):
        source = done.letter.record
        print(
            f"replayed {source.topic}:{source.partition}@{source.offset} -> {done.topic}:{done.partition}@{done.offset}"
        )
    print(f"{len(letters)} letter(s) replayed from {topic}")
    return 0


async def _read_topic(inspector: Inspector, topic: str, key: str | None, limit: int) -> int:
    records = [r for r in await inspector.records(topic) if key is None or r.key == key]
    records.sort(key=lambda r: r.timestamp_ms)
    for record in records[-limit:]:
        event_type = record.header("eventType") or "-"
        print(f"{record.partition}@{record.offset} key={record.key} eventType={event_type}")
        print(_pretty(record.value))
    print(f"{len(records[-limit:])} of {len(records)} message(s) on {topic}")
    return 0


def _pretty(value: bytes) -> str:
    try:
        return orjson.dumps(orjson.loads(value), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        pass
    if not value:
        return "(empty)"
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return repr(value)


if __name__ == "__main__":
    main()
