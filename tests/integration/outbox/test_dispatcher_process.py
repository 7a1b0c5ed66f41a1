"""`python -m services.payment_service.dispatcher` as a process: publishes, exposes metrics, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.process import free_port
from payment_domain.topics import Topic
from payment_infrastructure.postgres.outbox_partitions import partition_name
from payment_infrastructure.postgres.settings import DatabaseSettings
from services.payment_service.bootstrap import build_dispatcher_container
from services.payment_service.settings import ServiceSettings
from tests.fixtures.broker import TopicReader
from tests.integration.outbox.support import NewRow, insert_rows, partition_names, row_states


async def _eventually(check: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


PROJECT_ROOT = Path(__file__).resolve().parents[3]


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def test_the_dispatcher_process_publishes_committed_rows_and_exits_cleanly_on_sigterm(
    outbox: AsyncEngine, database_url: str, kafka_broker: str, topic_reader: TopicReader, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PAYMENTS_DB__URL": database_url,
        "PAYMENTS_KAFKA__BOOTSTRAP_SERVERS": kafka_broker,
        "PAYMENTS_OUTBOX__DISPATCHER_METRICS_PORT": str(port),
        "PAYMENTS_OUTBOX__METRICS_REFRESH_SECONDS": "0.2",
    }
    log_path = tmp_path / "dispatcher.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.payment_service.dispatcher",
            env=env,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    try:
        async with httpx.AsyncClient(timeout=2) as http:

            async def metrics() -> str:
                try:
                    return (await http.get(metrics_url)).text
                except httpx.TransportError:
                    return ""

            async def started() -> bool:
                assert process.returncode is None, log_path.read_text()
                return "outbox_dispatched_total" in await metrics()

            await _eventually(started, within=20, what="the metrics endpoint")
            rows = [NewRow(topic=Topic.PAYMENT_ORDER_CREATED.value, aggregate_id=str(9_000_000 + n)) for n in range(25)]
            await insert_rows(outbox, rows)

            async def all_sent() -> bool:
                states = await row_states(outbox)
                return all(states[r.event_id].status == "SENT" for r in rows)

            await _eventually(all_sent, within=20, what="the rows to be sent")

            async def backlog_refreshed() -> bool:
                text = await metrics()
                return _metric(text, "outbox_event_backlog") == 0.0 and _metric(text, "outbox_dispatched_total") == 25.0

            await _eventually(backlog_refreshed, within=10, what="the metrics to catch up")
        published = {m.headers["eventId"].decode() for m in await topic_reader.read_all(Topic.PAYMENT_ORDER_CREATED)}

        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(process.wait(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert {r.event_id for r in rows} <= published
    assert exit_code == 0, log_path.read_text()
    assert "outbox_dispatcher_stopped" in log_path.read_text()


def _sample(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


async def test_maintenance_counts_default_partition_rows_and_moves_them_out(
    outbox: AsyncEngine, database_url: str
) -> None:
    settings = ServiceSettings(db=DatabaseSettings(url=database_url, pool_size=2))
    stray = NewRow(topic="t", aggregate_id="1", created_at=datetime.now(UTC) - timedelta(hours=3))
    await insert_rows(outbox, [stray])
    dispatcher = build_dispatcher_container(settings)
    try:
        await dispatcher.maintain_partitions()
        counted = _sample("outbox_default_partition_rows")
        await dispatcher.maintain_partitions()
        counted_after_move = _sample("outbox_default_partition_rows")
    finally:
        await dispatcher.close()

    assert (counted, counted_after_move) == (1.0, 0.0)
    assert partition_name(stray.created_at) in await partition_names(outbox)


async def test_backlog_gauges_are_a_true_count_of_unsent_rows(outbox: AsyncEngine, database_url: str) -> None:
    settings = ServiceSettings(db=DatabaseSettings(url=database_url, pool_size=2))
    minute_ago = datetime.now(UTC) - timedelta(seconds=60)
    rows = [NewRow(topic="t", aggregate_id=str(n), created_at=minute_ago) for n in range(3)]
    await insert_rows(outbox, rows)
    dispatcher = build_dispatcher_container(settings)
    try:
        await dispatcher.refresh_backlog()
    finally:
        await dispatcher.close()

    assert _sample("outbox_event_backlog") == 3.0
    age = _sample("outbox_oldest_pending_age_seconds")
    assert age is not None and 59 <= age < 600
