"""Outbox dispatcher benchmark: drain rate of a preloaded backlog, then commit-to-publish latency at a steady rate.

    python -m tests.benchmarks.bench_dispatch [--rows 100000] [--rate 1000] [--seconds 30]

Runs like production on this machine: the dispatcher is its own process (`python -m
services.payment_service.dispatcher`), Apache Kafka and Postgres are local, and this process writes outbox rows and
reads the topic. A throwaway database is created and dropped (or pass --db-url to use an existing, migrated one).
Partitions mirror a steady state: a day of past windows (retention) plus the current and next ones.

Phase 1 commits --rows rows in one transaction and times how long until the dispatcher has marked them all
sent (rows/s). Phase 2 commits rows at --rate per second in small transactions and measures, per row, the time
from the commit returning to the producer handing the record to the broker (the record's CreateTime), and to
this process receiving it (an upper bound that includes the consumer's own fetch delay).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.kafka import KafkaBroker
from devstack.process import free_port
from payment_domain.topics import Topic
from payment_infrastructure.kafka.admin import ensure_topics
from payment_infrastructure.kafka.settings import KafkaSettings
from payment_infrastructure.postgres import migrate
from payment_infrastructure.postgres.database import create_database_if_missing, drop_database
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.outbox_partitions import ensure_outbox_partitions
from payment_infrastructure.postgres.settings import DatabaseSettings
from tests.fixtures.database import unique_database_url
from tests.integration.outbox.support import NewRow, insert_rows

TOPIC = Topic.PAYMENT_ORDER_CREATED.value
ROOT = Path(__file__).resolve().parents[2]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _kafka_cpu(pid: int | None) -> float:
    """The broker this benchmark started (an external one is not measured)."""
    return _cpu_seconds(pid) if pid is not None else 0.0


def _cpu_by_name(prefix: str) -> float:
    """CPU seconds of every live process whose name starts with `prefix` (e.g. all Postgres backends)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().startswith(prefix):
                    total += _cpu_seconds(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return total


async def _metric(http: httpx.AsyncClient, url: str, name: str) -> float:
    try:
        body = (await http.get(url)).text
    except httpx.TransportError:
        return -1.0
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return -1.0


async def _history(engine: AsyncEngine, windows: int) -> None:
    """Past windows as a day of retention leaves them (they exist; their rows are long sent)."""
    now = datetime.now(UTC)
    await ensure_outbox_partitions(engine, now=now - timedelta(minutes=30 * windows), windows_ahead=windows)
    await ensure_outbox_partitions(engine, now=now, windows_ahead=4)


async def _drain_phase(
    engine: AsyncEngine, http: httpx.AsyncClient, metrics_url: str, rows: int, pid: int, kafka_pid: int | None
) -> None:
    base = datetime.now(UTC) - timedelta(seconds=5)
    batch = [NewRow(topic=TOPIC, aggregate_id=str(10_000_000 + n), created_at=base) for n in range(rows)]
    before = await _metric(http, metrics_url, "outbox_dispatched_total")
    started_load = time.perf_counter()
    async with engine.begin() as conn:
        for chunk in range(0, rows, 10_000):
            await insert_rows(conn, batch[chunk : chunk + 10_000])
    committed = time.perf_counter()
    cpu_before = _cpu_seconds(pid)
    postgres_before, kafka_before, self_before = _cpu_by_name("postgres"), _kafka_cpu(kafka_pid), time.process_time()
    print(f"preloaded {rows} rows in {committed - started_load:.1f}s (one transaction); draining...")
    deadline = time.monotonic() + 600
    while await _metric(http, metrics_url, "outbox_dispatched_total") < before + rows:
        assert time.monotonic() < deadline, "the dispatcher did not drain the backlog within 10 minutes"
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - committed
    cpu = {
        "dispatcher": _cpu_seconds(pid) - cpu_before,
        "postgres": _cpu_by_name("postgres") - postgres_before,
        "kafka": _kafka_cpu(kafka_pid) - kafka_before,
        "bench": time.process_time() - self_before,
    }
    rounds = await _metric(http, metrics_url, "outbox_dispatcher_duration_seconds_count")
    round_seconds = await _metric(http, metrics_url, "outbox_dispatcher_duration_seconds_sum")
    publishes = await _metric(http, metrics_url, "kafka_publish_batch_seconds_count")
    publish_seconds = await _metric(http, metrics_url, "kafka_publish_batch_seconds_sum")
    print(f"DRAIN: {rows} rows in {elapsed:.2f}s = {rows / elapsed:,.0f} rows/s")
    print(
        f"  {rounds:.0f} rounds, mean {1000 * round_seconds / max(rounds, 1):.1f} ms per round "
        f"of which publishing {1000 * publish_seconds / max(publishes, 1):.1f} ms"
    )
    print("  CPU, % of one core: " + ", ".join(f"{k} {100 * v / elapsed:.0f}%" for k, v in cpu.items()))


async def _steady_phase(engine: AsyncEngine, bootstrap: str, rate: int, seconds: float, partitions: int) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=5
    )
    await consumer.start()
    assigned = [TopicPartition(TOPIC, p) for p in range(partitions)]
    consumer.assign(assigned)
    # Read from the start and keep only this phase's records, recognised by event id.
    await consumer.seek_to_beginning(*assigned)
    committed_at: dict[bytes, float] = {}
    published: dict[bytes, float] = {}
    received: dict[bytes, float] = {}
    total = int(rate * seconds)
    tick = 0.01
    per_tick = max(1, round(rate * tick))

    async def consume() -> None:
        while len(received) < total:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in batch.values():
                for record in records:
                    headers = dict(record.headers or ())
                    event_id = bytes(headers.get("eventId", b""))
                    if event_id in committed_at and event_id not in received:
                        received[event_id] = now
                        published[event_id] = record.timestamp / 1000

    async def produce() -> None:
        start = time.perf_counter()
        sent = 0
        n = 0
        while sent < total:
            due = start + n * tick
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            n += 1
            rows = [
                NewRow(topic=TOPIC, aggregate_id=str(20_000_000 + sent + i), event_id=str(uuid.uuid4()))
                for i in range(min(per_tick, total - sent))
            ]
            await insert_rows(engine, rows)
            now = time.time()
            for row in rows:
                committed_at[row.event_id.encode()] = now
            sent += len(rows)

    reader = asyncio.create_task(consume())
    await produce()
    try:
        await asyncio.wait_for(reader, 60)
    except TimeoutError:
        missing = [e.decode() for e in committed_at if e not in received]
        async with engine.connect() as conn:
            statuses = (
                await conn.execute(
                    text("SELECT status, count(*) FROM outbox_event WHERE event_id::text = ANY(:ids) GROUP BY 1"),
                    {"ids": missing},
                )
            ).all()
        raise SystemExit(f"{len(missing)} of {total} records never arrived; their rows: {statuses}") from None
    finally:
        await consumer.stop()
    to_publish = [max(0.0, published[e] - committed_at[e]) * 1000 for e in received]
    to_consume = [(received[e] - committed_at[e]) * 1000 for e in received]
    for label, values in (("commit->publish", to_publish), ("commit->consume", to_consume)):
        print(
            f"STEADY {rate} rows/s x {seconds:.0f}s, {label} ms: p50={_percentile(values, 0.50):.1f} "
            f"p95={_percentile(values, 0.95):.1f} p99={_percentile(values, 0.99):.1f} "
            f"max={max(values):.1f} mean={statistics.fmean(values):.1f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--history-windows", type=int, default=48)
    parser.add_argument("--db-url", default=None)
    parser.add_argument(
        "--bootstrap", default=None, help="an existing broker (default: start Apache Kafka in a temporary directory)"
    )
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()

    url = args.db_url or unique_database_url("payments_bench")
    if args.db_url is None:
        await create_database_if_missing(url)
        migrate.upgrade(url)
    broker = None if args.bootstrap else KafkaBroker(Path(tempfile.mkdtemp(prefix="bench-kafka-")))
    if broker is not None:
        await broker.start()
    bootstrap = args.bootstrap or (broker.bootstrap_servers if broker else "")
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    await ensure_topics(kafka)
    engine = create_engine(DatabaseSettings(url=url, pool_size=4))
    port = free_port()
    env = {
        **os.environ,
        "PAYMENTS_DB__URL": url,
        "PAYMENTS_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "PAYMENTS_OUTBOX__DISPATCHER_METRICS_PORT": str(port),
        "PAYMENTS_LOGGING__LEVEL": "WARNING",
    }
    if args.batch_size:
        env["PAYMENTS_OUTBOX__BATCH_SIZE"] = str(args.batch_size)
    if args.workers:
        env["PAYMENTS_OUTBOX__WORKERS"] = str(args.workers)
    dispatcher = None
    try:
        await _history(engine, args.history_windows)
        dispatcher = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.payment_service.dispatcher", env=env, cwd=ROOT
        )
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        async with httpx.AsyncClient(timeout=2) as http:
            while await _metric(http, metrics_url, "outbox_dispatched_total") < 0:
                if dispatcher.returncode is not None:
                    raise SystemExit("dispatcher exited during start-up")
                await asyncio.sleep(0.1)
            print(f"dispatcher up (pid {dispatcher.pid}); partitions: {args.history_windows} past + 5 current/ahead")
            if args.rows:
                await _drain_phase(engine, http, metrics_url, args.rows, dispatcher.pid, broker.pid if broker else None)
        if args.rate and args.seconds:
            await _steady_phase(engine, bootstrap, args.rate, args.seconds, kafka.partitions)
    finally:
        if dispatcher is not None and dispatcher.returncode is None:
            dispatcher.send_signal(signal.SIGTERM)
            await asyncio.wait_for(dispatcher.wait(), 30)
        await engine.dispose()
        if broker is not None:
            await broker.stop()
        if args.db_url is None:
            await drop_database(url)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
