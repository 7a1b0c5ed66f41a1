"""A SIGTERM to the real payment-consumers process while the broker is paused (SIGSTOP: connections open, nothing
answers) and Postgres is cut: the process exits by itself, with status 0, within the bounds of its own stop steps
(`ConsumersSettings.stop_bound_seconds`), well before the shutdown watchdog (status 75). Records it held stay
uncommitted, so they are delivered again. Without the bounds, leaving the group alone waited for the consumer's
request timeout (40 s) after the drain and the final commit (docs/reliability.md, the combined scenario)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy.engine import make_url

from devstack.kafka import KafkaBroker
from payment_domain.events import Topic
from payment_infrastructure.postgres import migrate
from payment_infrastructure.postgres.database import create_database_if_missing, drop_database
from payment_infrastructure.serialization import envelope_to_bytes
from payment_infrastructure.server import SHUTDOWN_TIMED_OUT_EXIT
from services.payment_consumers.settings import ConsumersSettings
from tests.fakes_retry import retry_envelope
from tests.fixtures.broker import KafkaFactory
from tests.fixtures.database import unique_database_url
from tests.fixtures.ports import die_with_parent, free_port, wait_until
from tests.fixtures.redis import RedisServer
from tests.fixtures.tcp_proxy import TcpProxy

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[2]
GROUP = "payment-order-psp-call-executor-consumer-group"
RECORDS = 4
# Short bounds, so that the test is quick and a stop that ignores them cannot pass: the watchdog stays far above.
STOP = {
    "CONSUMER__DRAIN_TIMEOUT_SECONDS": "2",
    "CONSUMER__CLOSE_TIMEOUT_SECONDS": "1",
    "CONSUMER__SESSION_TIMEOUT_MS": "6000",
    "CONSUMER__HEARTBEAT_INTERVAL_MS": "500",
    "CONSUMER__COMMIT_INTERVAL_MS": "200",
    "PROCESS__CLOSE_STEP_TIMEOUT_SECONDS": "1",
    "PROCESS__SHUTDOWN_TIMEOUT_SECONDS": "45",
}


@pytest.fixture
async def database_behind_a_proxy() -> AsyncIterator[tuple[str, TcpProxy]]:
    url = unique_database_url("payments_e2e")
    await create_database_if_missing(url)
    await asyncio.to_thread(migrate.upgrade, url)
    parsed = make_url(url)
    proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    await proxy.start()
    proxied = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        yield proxied, proxy
    finally:
        await proxy.close()
        await drop_database(url)


def log_of(path: Path) -> str:
    return path.read_text(errors="replace")


async def test_a_sigterm_while_the_broker_is_paused_and_postgres_is_cut_ends_the_process_within_its_stop_bound(
    kafka_factory: KafkaFactory,
    private_redis_server: RedisServer,
    database_behind_a_proxy: tuple[str, TcpProxy],
    tmp_path: Path,
) -> None:
    database_url, postgres = database_behind_a_proxy
    broker: KafkaBroker = await kafka_factory()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PAYMENTS_")},
        "PAYMENTS_DB__URL": database_url,
        "PAYMENTS_DB__SSL": "disable",
        "PAYMENTS_REDIS__URL": private_redis_server.url,
        "PAYMENTS_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "PAYMENTS_PSP__BASE_URL": "http://127.0.0.1:9",  # never called: no claim gets through
        "PAYMENTS_PROCESS__MANAGEMENT_PORT": str(port),
        "PAYMENTS_LOGGING__LEVEL": "INFO",
        **{f"PAYMENTS_{name}": value for name, value in STOP.items()},
    }
    bound = ConsumersSettings.model_validate(
        {
            "consumer": {"drain_timeout_seconds": 2, "close_timeout_seconds": 1},
            "process": {"close_step_timeout_seconds": 1},
        }
    ).stop_bound_seconds
    log_path = tmp_path / "consumers.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.payment_consumers"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    paused = False
    try:

        async def ready_or_exited() -> bool:
            if process.poll() is not None:
                return True
            async with httpx.AsyncClient(timeout=1) as http:
                return (await http.get(f"http://127.0.0.1:{port}/health/ready")).status_code == 200

        await wait_until(ready_or_exited, timeout=90, interval=0.2, what="payment-consumers ready")
        assert process.poll() is None, log_of(log_path)[-3000:]

        # Records in hand that cannot finish: their claims wait for the database.
        await postgres.sever()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
        await producer.start()
        try:
            partitions = await producer.partitions_for(Topic.PSP_CALL_REQUESTED.value)
            for order in range(RECORDS):
                envelope = retry_envelope(7_000_000 + order, 1)
                await producer.send_and_wait(
                    Topic.PSP_CALL_REQUESTED.value, envelope_to_bytes(envelope), key=envelope.aggregate_id.encode()
                )
        finally:
            await producer.stop()

        async def records_wait_for_the_database() -> bool:
            return "record_waits_for_dependency" in log_of(log_path)

        await wait_until(records_wait_for_the_database, timeout=30, interval=0.1, what="records held")

        os.kill(broker.pid or 0, signal.SIGSTOP)
        paused = True
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            status = await asyncio.to_thread(process.wait, bound + 10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {bound + 10:g} s after SIGTERM\n{log_of(log_path)[-3000:]}")
        took = time.monotonic() - started

        output = log_of(log_path)
        assert status == 0, f"exit status {status} ({SHUTDOWN_TIMED_OUT_EXIT}: the watchdog)\n{output[-3000:]}"
        assert took < bound, f"{took:.1f} s, above the stop's own bound of {bound:g} s"
        assert "partition_drain_timed_out" in output  # the records were in hand, and cut off
        assert "kafka_consumer_closed_without_leaving_group" in output
        assert "payment_consumers_stopped" in output and "shutdown_timed_out" not in output
    finally:
        if paused:
            os.kill(broker.pid or 0, signal.SIGCONT)
        if process.poll() is None:
            process.kill()
            await asyncio.to_thread(process.wait)

    # Nothing in hand was committed: every record is delivered again to the next member.
    reader = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap_servers, group_id=GROUP, enable_auto_commit=False)
    await reader.start()
    try:
        tps = [TopicPartition(Topic.PSP_CALL_REQUESTED.value, p) for p in sorted(partitions)]
        ends = await reader.end_offsets(tps)
        committed = {tp: await reader.committed(tp) for tp in tps}
    finally:
        await reader.stop()
    assert sum(ends.values()) == RECORDS
    assert all(committed[tp] in (None, 0) for tp, end in ends.items() if end > 0), committed
