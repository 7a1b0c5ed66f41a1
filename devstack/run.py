"""`make run`: every part of the system on this machine, kept running until Ctrl-C or SIGTERM.

Apache Kafka and Keycloak (from the cache, see devstack.kafka and devstack.keycloak), the PSP simulator, the
payment-service API, the outbox dispatcher and payment-consumers; with PAYMENTS_LOGS__OPENSEARCH_URL set, also the
log shipper (and, for an address on this machine where nothing answers yet, an OpenSearch node: devstack.opensearch).
A part that exits is started again (with a growing pause if it keeps failing). Kafka's data, Keycloak's database
and every log live under the run directory (default `.run/`), so topics, committed offsets and signing keys survive
a restart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from devstack import kafka, keycloak, opensearch
from devstack.cache import REPO_ROOT
from devstack.database import DATABASE_URL
from devstack.process import ServerProcess, die_with_parent, port_open

RESTART_PAUSE_MAX_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 60.0  # a part that ran this long starts again without a pause


def _on_loopback(database_url: str) -> bool:
    """TLS to a server on this machine protects nothing and costs CPU on both ends of every statement."""
    host = urlsplit(database_url).hostname or ""
    return host in {"localhost", "::1"} or host.startswith("127.")


@dataclass
class Ports:
    api: int = 8080
    api_management: int = 9000
    consumers_management: int = 9001
    dispatcher_management: int = 9002
    lag_exporter: int = 9003
    psp: int = 8090
    kafka: int = 9092
    kafka_controller: int = 9093
    keycloak: int = 8082
    keycloak_management: int = 9082


@dataclass
class StackConfig:
    run_dir: Path = REPO_ROOT / ".run"
    ports: Ports = field(default_factory=Ports)
    database_url: str = DATABASE_URL
    redis_url: str = "redis://127.0.0.1:6379/0"
    psp_scenario: str = "NORMAL"
    external_psp_url: str | None = None  # a PSP this stack does not own (it survives the stack's restarts)
    logs_url: str | None = None  # OpenSearch for the log shipper; None: no shipping (the default)
    extra_env: Mapping[str, str] = field(default_factory=dict)  # for every Python part (e.g. a benchmark's OTEL_*)

    @property
    def psp_url(self) -> str:
        return self.external_psp_url or f"http://127.0.0.1:{self.ports.psp}"


class Part:
    """One supervised part: how to start it, whether it still runs, how to stop it."""

    def __init__(
        self,
        name: str,
        label: str,
        where: str,
        start: Callable[[], Awaitable[float]],
        running: Callable[[], bool],
        stop: Callable[[], Awaitable[None]],
        resident_bytes: Callable[[], int],
        log_file: Path,
        pid: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.name, self.label, self.where = name, label, where
        self._start, self._running, self._stop, self.resident_bytes = start, running, stop, resident_bytes
        self.pid = pid
        self.log_file = log_file
        self.ready_seconds = 0.0
        self.started_at = 0.0
        self.restarts = 0

    async def start(self) -> None:
        self.started_at = time.monotonic()
        self.ready_seconds = await self._start()

    @property
    def running(self) -> bool:
        return self._running()

    async def stop(self) -> None:
        await self._stop()


def local_opensearch(logs_url: str | None) -> tuple[str, int] | None:
    """(host, port) of the OpenSearch node `make run` starts for `logs_url`: one on this machine where nothing
    answers yet; None for no URL, a remote one, or one already running."""
    if not logs_url:
        return None
    parts = urlsplit(logs_url)
    host, port = parts.hostname or "", parts.port or 9200
    if not (host == "localhost" or host.startswith("127.")) or port_open("127.0.0.1", port):
        return None
    return "127.0.0.1", port


def process_part(
    label: str,
    where: str,
    process: ServerProcess,
    ready: Callable[[], Awaitable[bool]],
    *,
    before_start: Callable[[], Awaitable[None]] | None = None,
) -> Part:
    """A part that is one ServerProcess, ready when `ready` holds (within 90 s of each start)."""

    async def start() -> float:
        if before_start is not None:
            await before_start()
        process.spawn()
        return await process.wait_ready(ready, within=90.0)

    return Part(
        process.name,
        label,
        where,
        start,
        lambda: process.running,
        process.stop,
        process.resident_bytes,
        process.log_file,
        lambda: process.pid,
    )


def shipper_part(files: Sequence[Path], env: dict[str, str], log_file: Path) -> Part:
    """`python -m services.log_shipper`, ready once it has installed the index template and follows the files."""
    process = ServerProcess(
        "log-shipper",
        [sys.executable, "-m", "services.log_shipper", *map(str, files)],
        log_file=log_file,
        env=env,
        cwd=REPO_ROOT,
    )
    size = 0  # where this start's lines begin: the log file is appended to across restarts

    def started() -> bool:
        with log_file.open("rb") as log:
            log.seek(size)
            return b'"log_shipper_started"' in log.read()

    async def ready() -> bool:
        return await asyncio.to_thread(started)

    async def remember_size() -> None:
        nonlocal size
        size = await asyncio.to_thread(lambda: log_file.stat().st_size if log_file.exists() else 0)

    return process_part("log shipper", env["PAYMENTS_LOGS__OPENSEARCH_URL"], process, ready, before_start=remember_size)


def python_part(
    name: str, label: str, where: str, args: Sequence[str], ready_url: str, env: dict[str, str], log_file: Path
) -> Part:
    process = ServerProcess(name, [sys.executable, *args], log_file=log_file, env=env, cwd=REPO_ROOT)

    async def ready() -> bool:
        async with httpx.AsyncClient(timeout=2.0) as client:
            return (await client.get(ready_url)).status_code == 200

    return process_part(label, where, process, ready)


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        run = config.run_dir
        p = config.ports
        self.kafka = kafka.KafkaBroker(
            run / "kafka", port=p.kafka, controller_port=p.kafka_controller, log_file=run / "kafka.log"
        )
        self.keycloak = keycloak.Keycloak(
            run / "keycloak", port=p.keycloak, management_port=p.keycloak_management, log_file=run / "keycloak.log"
        )
        env = self.service_env()
        self.infrastructure = [
            Part(
                "kafka",
                f"Apache Kafka {kafka.kafka_version()}",
                self.kafka.bootstrap_servers,
                self.kafka.start,
                lambda: self.kafka.running,
                self.kafka.stop,
                self.kafka.resident_bytes,
                run / "kafka.log",
            ),
            Part(
                "keycloak",
                f"Keycloak {keycloak.VERSION}",
                self.keycloak.issuer_url,
                self.keycloak.start,
                lambda: self.keycloak.running,
                self.keycloak.stop,
                self.keycloak.resident_bytes,
                run / "keycloak.log",
            ),
        ]
        self.psp = (
            []
            if config.external_psp_url
            else [
                python_part(
                    "psp-simulator",
                    "PSP simulator",
                    config.psp_url,
                    [
                        "-m",
                        "services.psp_simulator",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(p.psp),
                        "--scenario",
                        config.psp_scenario,
                    ],
                    f"{config.psp_url}/health/live",
                    env,
                    run / "psp-simulator.log",
                )
            ]
        )
        local = "http://127.0.0.1"
        self.opensearch: opensearch.OpenSearchNode | None = None
        if (node := local_opensearch(config.logs_url)) is not None:
            self.opensearch = opensearch.OpenSearchNode(
                run / "opensearch", port=node[1], log_file=run / "opensearch.log"
            )
            self.infrastructure.append(
                Part(
                    "opensearch",
                    f"OpenSearch {opensearch.opensearch_version()}",
                    self.opensearch.url,
                    self.opensearch.start,
                    lambda: self.opensearch is not None and self.opensearch.running,
                    self.opensearch.stop,
                    self.opensearch.resident_bytes,
                    run / "opensearch.log",
                )
            )
        self.services = [
            python_part(
                "payment-service",
                "payment-service API",
                f"{local}:{p.api}",
                ["-m", "services.payment_service"],
                f"{local}:{p.api_management}/health/ready",
                env,
                run / "payment-service.log",
            ),
            python_part(
                "outbox-dispatcher",
                "outbox dispatcher",
                f"{local}:{p.dispatcher_management}",
                ["-m", "services.payment_service.dispatcher"],
                f"{local}:{p.dispatcher_management}/health/ready",
                env,
                run / "outbox-dispatcher.log",
            ),
            python_part(
                "payment-consumers",
                "payment-consumers",
                f"{local}:{p.consumers_management}",
                ["-m", "services.payment_consumers"],
                f"{local}:{p.consumers_management}/health/ready",
                env,
                run / "payment-consumers.log",
            ),
            python_part(
                "lag-exporter",
                "consumer-group lag exporter",
                f"{local}:{p.lag_exporter}/metrics",
                ["-m", "services.payment_consumers.lag_exporter"],
                f"{local}:{p.lag_exporter}/health/live",
                env,
                run / "lag-exporter.log",
            ),
        ]
        # Our processes' JSON lines (Kafka's and Keycloak's own logs are not ours to search by id).
        self.shipped_logs = [part.log_file for part in [*self.psp, *self.services]] if config.logs_url else []
        if config.logs_url:
            shipper_env = {**env, "PAYMENTS_LOGS__OPENSEARCH_URL": config.logs_url}
            self.services.append(shipper_part(self.shipped_logs, shipper_env, run / "log-shipper.log"))

    @property
    def parts(self) -> list[Part]:
        return [*self.infrastructure, *self.psp, *self.services]

    def service_env(self) -> dict[str, str]:
        """Added to this process's own environment, which every part inherits (the OTEL_* variables included)."""
        c, p = self.config, self.config.ports
        return {
            "PAYMENTS_DB__URL": c.database_url,
            "PAYMENTS_DB__SSL": "disable" if _on_loopback(c.database_url) else "prefer",
            "PAYMENTS_REDIS__URL": c.redis_url,
            "PAYMENTS_KAFKA__BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            # The broker is this machine's: compressing for a loopback link only spends CPU in every producer, the
            # broker and every consumer (about 0.4 ms per order at 300 payments/s, measured with bench-e2e).
            "PAYMENTS_KAFKA__COMPRESSION_TYPE": "none",
            "PAYMENTS_AUTH__ISSUER_URL": self.keycloak.issuer_url,
            "PAYMENTS_PSP__BASE_URL": c.psp_url,
            "PAYMENTS_API__PORT": str(p.api),
            "PAYMENTS_API__MANAGEMENT_PORT": str(p.api_management),
            "PAYMENTS_OUTBOX__DISPATCHER_METRICS_PORT": str(p.dispatcher_management),
            "PAYMENTS_PROCESS__MANAGEMENT_PORT": str(p.consumers_management),
            "PAYMENTS_LAG_EXPORTER__PORT": str(p.lag_exporter),
            **c.extra_env,
        }

    def migrate(self) -> None:
        command = [
            sys.executable,
            "-m",
            "payment_infrastructure.postgres.migrate",
            "--create",
            self.config.database_url,
        ]
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"migrating {self.config.database_url} failed:\n{result.stdout}{result.stderr}")

    async def start(self) -> None:
        """Infrastructure and migrations side by side, then the PSP simulator, then the three services."""
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.gather(asyncio.to_thread(self.migrate), *(part.start() for part in self.infrastructure))
        await asyncio.gather(*(part.start() for part in self.psp))
        await asyncio.gather(*(part.start() for part in self.services))

    async def supervise(self, stop: asyncio.Event) -> None:
        await supervise(self.parts, stop)

    async def stop(self) -> None:
        """The services first (they finish their batches and commit offsets), the infrastructure last."""
        await asyncio.gather(*(part.stop() for part in self.services), return_exceptions=True)
        await asyncio.gather(*(part.stop() for part in self.psp), return_exceptions=True)
        await asyncio.gather(*(part.stop() for part in self.infrastructure), return_exceptions=True)

    def summary(self, seconds: float) -> str:
        lines = [f"payments is running (started in {seconds:.1f}s):"]
        for part in self.parts:
            rss = f"{part.resident_bytes() / 2**20:.0f} MB RSS"
            lines.append(
                f"  {part.label:<22} {part.where:<48} log {relative(part.log_file):<28}"
                f" ready in {part.ready_seconds:5.1f}s  {rss}"
            )
        p = self.config.ports
        lines += [
            "",
            f"  API docs            http://127.0.0.1:{p.api}/docs",
            f"  management          http://127.0.0.1:{p.api_management} /health/ready /metrics (dispatcher "
            f":{p.dispatcher_management}, consumers :{p.consumers_management})",
            f"  token               curl -s -d grant_type=client_credentials -d client_id=order-service "
            f"-d client_secret=order-service-secret {self.keycloak.token_url}",
            "Ctrl-C stops everything.",
        ]
        return "\n".join(lines)


async def supervise(parts: Sequence[Part], stop: asyncio.Event) -> None:
    """Keep every part running until `stop` is set: each is watched on its own, so one that fails to come back
    never delays another."""
    await asyncio.gather(*(keep_running(part, stop) for part in parts))


async def keep_running(part: Part, stop: asyncio.Event) -> None:
    """Start the part again whenever it exits: after 1 s, doubling (up to 30 s) while it keeps failing within a
    minute of its start."""
    pause = 0.0
    while not stop.is_set():
        if part.running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            continue
        quick_failure = time.monotonic() - part.started_at < HEALTHY_AFTER_SECONDS
        pause = min(RESTART_PAUSE_MAX_SECONDS, pause * 2) if quick_failure and pause else 1.0
        say(f"{part.name} exited; starting it again in {pause:.0f}s (log {relative(part.log_file)})")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
        if stop.is_set():
            return
        part.restarts += 1
        try:
            await part.start()
            say(f"{part.name} is back (restart {part.restarts}, ready in {part.ready_seconds:.1f}s)")
        except Exception as error:
            say(f"{part.name} did not come back: {first_line(error)}")


def relative(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def first_line(error: BaseException) -> str:
    return (str(error) or repr(error)).splitlines()[0]


def say(message: str) -> None:
    sys.stdout.write(f"{time.strftime('%H:%M:%S')} {message}\n")
    sys.stdout.flush()


async def serve(config: StackConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    stack = Stack(config)
    began = time.monotonic()
    say("installing what is missing (Kafka and Keycloak are cached after the first run)")
    installs = [kafka.install, keycloak.install, *([opensearch.install] if stack.opensearch is not None else [])]
    await asyncio.gather(*(asyncio.to_thread(install) for install in installs))
    say(f"starting Apache Kafka {kafka.kafka_version()}, Keycloak {keycloak.VERSION} and migrations")
    starting = asyncio.create_task(stack.start())
    waiting = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        say("stopping...")
        await stack.stop()
        return 130
    waiting.cancel()
    if (error := starting.exception()) is not None:
        say(f"start-up failed: {error}")
        await stack.stop()
        return 1
    say(stack.summary(time.monotonic() - began))
    await stack.supervise(stop)
    say("stopping...")
    await stack.stop()
    say("stopped")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> StackConfig:
    parser = argparse.ArgumentParser(prog="python -m devstack.run", description=__doc__)
    parser.add_argument("--run-dir", type=Path, default=Path(os.environ.get("PAYMENTS_RUN_DIR", REPO_ROOT / ".run")))
    parser.add_argument("--database-url", default=os.environ.get("PAYMENTS_DB__URL", StackConfig.database_url))
    parser.add_argument("--redis-url", default=os.environ.get("PAYMENTS_REDIS__URL", StackConfig.redis_url))
    parser.add_argument("--scenario", default=os.environ.get("PAYMENTS_PSP_SIM__SCENARIO", "NORMAL"))
    parser.add_argument("--external-psp-url", default=None, help="use this PSP instead of starting the simulator")
    parser.add_argument(
        "--logs-opensearch-url",
        default=os.environ.get("PAYMENTS_LOGS__OPENSEARCH_URL") or None,
        help="ship the processes' log lines to this OpenSearch (one on this machine is started if none answers)",
    )
    for name, default in vars(Ports()).items():
        parser.add_argument(f"--{name.replace('_', '-')}-port", dest=f"port_{name}", type=int, default=default)
    args = parser.parse_args(argv)
    ports = Ports(**{name: getattr(args, f"port_{name}") for name in vars(Ports())})
    return StackConfig(
        run_dir=args.run_dir.resolve(),
        ports=ports,
        database_url=args.database_url,
        redis_url=args.redis_url,
        psp_scenario=args.scenario,
        external_psp_url=args.external_psp_url,
        logs_url=args.logs_opensearch_url,
    )


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_args(argv)
    die_with_parent()  # `make run` killed (not just Ctrl-C): stop cleanly instead of serving on unsupervised
    sys.exit(asyncio.run(serve(config)))


if __name__ == "__main__":
    main()
