"""The system under attack, as real processes: payment-service API, outbox dispatcher and payment-consumers (each
`python -m ...`, supervised as `make run` or Kubernetes would: a process that exits is started again, and the
consumers are killed and started again when their `/health/live` fails), a private Apache Kafka, a private Redis, a
database of its own on the shared Postgres (or, for the faults that restart or crash the server, on a private one:
tests/fixtures/private_postgres.py), and the PSP simulator of the caller.

The services reach Postgres and Redis through TCP proxies that run on a thread of their own (tests/fixtures/
tcp_proxy.py), so a fault can cut them without touching the shared system Postgres; the private server sits behind
the same proxy, so a cut and a restart can meet in one run. The checks read Postgres and Redis directly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy.engine import make_url

from devstack.kafka import KafkaBroker
from payment_infrastructure.postgres.database import create_database_if_missing, drop_database
from tests.fixtures.broker import test_broker
from tests.fixtures.database import unique_database_url
from tests.fixtures.ports import die_with_parent, free_port
from tests.fixtures.private_postgres import PrivatePostgres, private_postgres
from tests.fixtures.psp import PspSimulatorHandle
from tests.fixtures.redis import RedisServer, start_redis_server
from tests.fixtures.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# Settings that make every path settle within seconds, and a crashed member leave its group soon.
CONSUMER_ENV = {
    "PAYMENTS_RETRY__BASE_DELAY_MS": "100",
    "PAYMENTS_RETRY__MAX_DELAY_MS": "1000",
    "PAYMENTS_RETRY__MAX_RETRIES": "6",
    "PAYMENTS_RETRY__MAX_IDLE_MS": "100",
    "PAYMENTS_STATUS_CHECKS__DELAYS_SECONDS": "[1.5, 3, 5, 10, 20, 40]",
    "PAYMENTS_STATUS_CHECKS__POLL_INTERVAL_SECONDS": "0.2",
    "PAYMENTS_PSP__CALL_GRACE_MS": "300",
    "PAYMENTS_CONSUMER__COMMIT_INTERVAL_MS": "200",
    "PAYMENTS_CONSUMER__SESSION_TIMEOUT_MS": "6000",
    "PAYMENTS_CONSUMER__HEARTBEAT_INTERVAL_MS": "500",
    "PAYMENTS_CONSUMER__REBALANCE_TIMEOUT_MS": "4000",
    "PAYMENTS_CONSUMER__STALLED_POLL_TIMEOUT_MS": "6000",
    "PAYMENTS_CONSUMER__DRAIN_TIMEOUT_SECONDS": "3",
    "PAYMENTS_PROCESS__PSP_CLAIM_LEASE_SECONDS": "8",
    "PAYMENTS_RETRY__VISIBILITY_TIMEOUT_MS": "25000",
    "PAYMENTS_SWEEPER__STALE_AFTER_SECONDS": "40",
    "PAYMENTS_SWEEPER__INTERVAL_SECONDS": "5",
}
LIVENESS_FAILURES_BEFORE_RESTART = 2  # like a kubelet's failureThreshold
SUPERVISE_EVERY_S = 0.5
RESTART_DELAY_S = 0.5
READY_WITHIN_S = 60.0
BROKER_STOP_GRACE_S = 5.0  # its data is thrown away: no need to wait for a tidy shutdown


class ProxyThread:
    """TCP proxies on an event loop of their own thread: the harness's load and checks never slow them down."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxies", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> Awaitable[T]:
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))

    async def proxy(self, host: str, port: int) -> TcpProxy:
        proxy = TcpProxy(host, port)
        await self.run(proxy.start())
        return proxy

    async def sever(self, proxy: TcpProxy) -> None:
        await self.run(proxy.sever())

    async def restore(self, proxy: TcpProxy) -> None:
        async def restore() -> None:
            proxy.restore()

        await self.run(restore())

    async def close(self, *proxies: TcpProxy) -> None:
        for proxy in proxies:
            await self.run(proxy.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@dataclass
class Service:
    """One service process, started again by the supervisor whenever it is not running (unless `held`)."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    ready_url: str
    live_url: str | None = None  # the supervisor kills the process when this fails LIVENESS_FAILURES times
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    liveness_restarts: int = 0
    held: bool = False
    fault_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)  # one fault on it at a time
    _live_failures: int = 0

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *self.args],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self.starts += 1
        self._live_failures = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    async def ready(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=1) as client:
                return (await client.get(self.ready_url)).status_code == 200
        except httpx.HTTPError:
            return False

    async def wait_ready(self, *, within: float = READY_WITHIN_S) -> None:
        deadline = time.monotonic() + within
        while not await self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready within {within}s\n{self.log_tail()}")
            await asyncio.sleep(0.1)

    async def check_alive(self) -> None:
        """One liveness probe; past the threshold the process is killed (the supervisor starts it again)."""
        if self.live_url is None or not self.running:
            return
        try:
            async with httpx.AsyncClient(timeout=1) as client:
                failed = (await client.get(self.live_url)).status_code != 200
        except httpx.HTTPError:
            failed = False  # not answering at all is the start-up's business (or a SIGSTOP), not liveness'
        self._live_failures = self._live_failures + 1 if failed else 0
        if self._live_failures >= LIVENESS_FAILURES_BEFORE_RESTART:
            self.liveness_restarts += 1
            self.signal(signal.SIGKILL)

    def stop(self) -> None:
        self.held = True
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        return f"last lines of {self.log_path}:\n" + "\n".join(text[-lines:])


@dataclass
class ChaosStack:
    database_url: str  # direct, for the checks
    redis_url: str  # direct
    broker: KafkaBroker
    redis: RedisServer
    psp: PspSimulatorHandle
    proxies: ProxyThread
    postgres_proxy: TcpProxy
    redis_proxy: TcpProxy
    api: Service
    dispatcher: Service
    consumers: Service
    log_dir: Path
    postgres: PrivatePostgres | None = None  # the stack's own server, when its faults restart or crash it
    broker_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)  # one broker fault at a time
    postgres_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)  # one server fault at a time
    _supervisor: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def services(self) -> tuple[Service, ...]:
        return (self.api, self.dispatcher, self.consumers)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api.env['PAYMENTS_API__PORT']}"

    def restarts(self) -> int:
        return sum(s.starts - 1 for s in self.services)

    async def supervise(self) -> None:
        while True:
            for service in self.services:
                if service.held:
                    continue
                if not service.running:
                    await asyncio.sleep(RESTART_DELAY_S)
                    service.spawn()
                else:
                    await service.check_alive()
            await asyncio.sleep(SUPERVISE_EVERY_S)

    async def all_ready(self, *, within: float = READY_WITHIN_S) -> None:
        for service in self.services:
            await service.wait_ready(within=within)


def _proxied(url: str, port: int) -> str:
    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def chaos_stack(
    *, psp: PspSimulatorHandle, issuer_url: str, log_dir: Path, own_postgres: bool = False
) -> AsyncIterator[ChaosStack]:
    """A fresh database, Redis and broker; the three services started and ready; everything stopped afterwards.
    `own_postgres`: the database on a private Postgres server (started first, stopped and removed last)."""
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    if not own_postgres:
        async with _chaos_stack(psp=psp, issuer_url=issuer_url, log_dir=log_dir, postgres=None) as stack:
            yield stack
        return
    async with (
        private_postgres(keep_log=log_dir / "postgres.log") as postgres,
        _chaos_stack(psp=psp, issuer_url=issuer_url, log_dir=log_dir, postgres=postgres) as stack,
    ):
        yield stack


@contextlib.asynccontextmanager
async def _chaos_stack(
    *, psp: PspSimulatorHandle, issuer_url: str, log_dir: Path, postgres: PrivatePostgres | None
) -> AsyncIterator[ChaosStack]:
    broker = test_broker(log_dir / "kafka")
    database_url = unique_database_url("payments_e2e")
    if postgres is not None:
        database_url = postgres.url(make_url(database_url).database or "payments_e2e")
    redis: RedisServer | None = None
    proxies = ProxyThread()
    pg_proxy = redis_proxy = None
    stack: ChaosStack | None = None

    async def migrated() -> None:
        await create_database_if_missing(database_url)
        migrate = [sys.executable, "-m", "payment_infrastructure.postgres.migrate", database_url]
        await asyncio.to_thread(subprocess.run, migrate, cwd=ROOT, check=True, capture_output=True)

    try:
        _, _, server = await asyncio.gather(broker.start(), migrated(), start_redis_server())
        redis = server
        db = make_url(database_url)
        pg_proxy = await proxies.proxy(db.host or "127.0.0.1", db.port or 5432)
        redis_proxy = await proxies.proxy("127.0.0.1", server.port)
        ports = {name: free_port() for name in ("api", "api_mgmt", "dispatcher", "consumers")}
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PAYMENTS_") or "__" not in k},
            "PAYMENTS_DB__URL": _proxied(database_url, pg_proxy.port),
            "PAYMENTS_DB__SSL": "disable",
            "PAYMENTS_REDIS__URL": f"redis://127.0.0.1:{redis_proxy.port}/0",
            "PAYMENTS_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "PAYMENTS_KAFKA__COMPRESSION_TYPE": "none",
            "PAYMENTS_AUTH__ISSUER_URL": issuer_url,
            "PAYMENTS_PSP__BASE_URL": psp.base_url,
            "PAYMENTS_API__PORT": str(ports["api"]),
            "PAYMENTS_API__MANAGEMENT_PORT": str(ports["api_mgmt"]),
            "PAYMENTS_OUTBOX__DISPATCHER_METRICS_PORT": str(ports["dispatcher"]),
            "PAYMENTS_OUTBOX__IDLE_MAX_WAIT_SECONDS": "0.2",
            "PAYMENTS_PROCESS__MANAGEMENT_PORT": str(ports["consumers"]),
            "PAYMENTS_LOGGING__LEVEL": "WARNING",
            **CONSUMER_ENV,
        }

        def url(port: str, path: str) -> str:
            return f"http://127.0.0.1:{ports[port]}{path}"

        stack = ChaosStack(
            database_url=database_url,
            redis_url=server.url,
            broker=broker,
            redis=server,
            psp=psp,
            proxies=proxies,
            postgres_proxy=pg_proxy,
            redis_proxy=redis_proxy,
            api=Service(
                "api", ["-m", "services.payment_service"], env, log_dir / "api.log", url("api_mgmt", "/health/ready")
            ),
            dispatcher=Service(
                "dispatcher",
                ["-m", "services.payment_service.dispatcher"],
                env,
                log_dir / "dispatcher.log",
                url("dispatcher", "/health/ready"),
            ),
            consumers=Service(
                "consumers",
                ["-m", "tests.chaos.wedgeable_consumers"],
                env,
                log_dir / "consumers.log",
                url("consumers", "/health/ready"),
                live_url=url("consumers", "/health/live"),
            ),
            log_dir=log_dir,
            postgres=postgres,
        )
        for service in stack.services:
            service.spawn()
        stack._supervisor = asyncio.create_task(stack.supervise())
        await stack.all_ready()
        yield stack
    finally:
        if stack is not None:
            if stack._supervisor is not None:
                stack._supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stack._supervisor
            await asyncio.gather(*(asyncio.to_thread(service.stop) for service in stack.services))
        await proxies.close(*(p for p in (pg_proxy, redis_proxy) if p is not None))
        if stack is not None:
            stack.redis.stop()  # the one running now: a restart fault replaces the first
        elif redis is not None:
            redis.stop()
        await broker.stop(grace=BROKER_STOP_GRACE_S)
        if postgres is None:  # a private server goes as a whole
            await drop_database(database_url)


def dump_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, default=str))


async def poll(condition: Callable[[], Awaitable[bool]], *, within: float, interval: float = 0.2) -> bool:
    """True once `condition` holds, False at the deadline."""
    deadline = time.monotonic() + within
    while True:
        if await condition():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
