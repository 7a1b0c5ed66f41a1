"""`make bench-e2e`: the whole system under a constant arrival rate, measured from the outside.

The stack is `make run`'s (devstack.run: Kafka, Keycloak, PSP simulator, payment-service API, outbox dispatcher,
payment-consumers, with their shipped settings) on free ports, a fresh database, a private redis-server and its
own run directory. k6 offers `--rate` payments/s open loop with real Keycloak tokens for `--warmup` + `--duration`
seconds; then the pipeline drains until every order is final (or `--drain-timeout`). Once a second, during the load
and the drain, the benchmark reads the consumer lag (end offset minus committed offset over every group), the outbox
backlog, the orders not final yet, and CPU and RSS per process (/proc). Afterwards it reads every order's create and
final times from Postgres.

It writes `<out>/e2e-<scenario>-<rate>.md` (headline figures beside the targets, per-process CPU and memory) and
`.png` (throughput, latency, lag and CPU over time); `<out>` is a new run directory under .run/bench-e2e/ (never a
tracked file), `--out docs/benchmarks` publishes the pages the docs link to. Nothing is asserted: benchmarks are
not tests.

`--otel-ratio R` traces the run: every Python part gets the standard OpenTelemetry variables (OTLP/HTTP to a
receiver inside the benchmark that counts and discards the spans, sampler `parentbased_traceidratio` with R), so the
per-process CPU per order can be set beside a run without it (no `OTEL_*` given: tracing off).

    make bench-e2e                                                    # 100 payments/s for 60 s
    python -m tests.benchmarks.bench_e2e --rate 300 --duration 300 --warmup 30   # the 5-minute target run
    python -m tests.benchmarks.bench_e2e --rate 1500 --duration 120 --drain-timeout 600   # overload
    python -m tests.benchmarks.bench_e2e --rate 300 --duration 120 --otel-ratio 0.01   # tracing at 1 %
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from devstack import kafka, keycloak
from devstack.process import ServerProcess, free_port
from devstack.run import Ports, Stack, StackConfig
from payment_infrastructure.postgres.database import drop_database
from payment_infrastructure.postgres.pool import plain_dsn
from tests.benchmarks import e2e_profile, e2e_statements
from tests.benchmarks.e2e_figures import Order, Request, Window, consumer_lag, parse_k6_line
from tests.benchmarks.e2e_flow import FlowReader
from tests.benchmarks.e2e_report import (
    LOAD_PARTS,
    Context,
    chart,
    markdown,
    stem,
    system_cpu_ms_per_order,
    write_series,
)
from tests.benchmarks.e2e_summary import TERMINAL, Run, Sample, Settings, Summary, summarise
from tests.benchmarks.proc_usage import (
    PartMeter,
    ProcessInfo,
    Selector,
    cpu_pressure_seconds,
    in_session,
    is_process,
    machine_busy_seconds,
    postgres_serving,
    read_processes,
)
from tests.benchmarks.stack import ROOT, SERVER
from tests.fixtures.otlp import OtlpReceiver

K6 = str(ROOT / ".venv" / "bin" / "k6")
K6_SCRIPT = Path(__file__).with_name("k6") / "e2e_rate.js"
CLIENT_ID = "order-service"
RETRY_QUEUE = "payment_retry_queue"
# The same predicate as the partial index payment_orders_in_flight_idx, so counting is an index-only scan.
IN_FLIGHT = (
    "SELECT count(*) FROM payment_orders WHERE status NOT IN "
    "('DECLINED_FINAL', 'FAILED_FINAL', 'NEEDS_RECONCILIATION', 'SUCCESSFUL_FINAL', 'UNKNOWN_FINAL')"
)
OUTBOX_BACKLOG = "SELECT count(*) FROM outbox_event WHERE status = 'NEW'"
ORDERS = (
    "SELECT status, extract(epoch FROM created_at)::float8 AS created, "
    "extract(epoch FROM updated_at)::float8 AS final, retry_count > 0 OR status_check_number > 0 AS waited "
    "FROM payment_orders"
)


@dataclass(frozen=True)
class Options:
    settings: Settings
    out: Path
    timeout: str
    keep_run_dir: bool
    idle: float = 5.0
    profile: int = 0
    ledger_verify: bool = False
    otel_ratio: float | None = None  # None: no OTEL_* of the benchmark's (tracing as the environment says: off)

    def command(self) -> str:
        s = self.settings
        args = [
            "python -m tests.benchmarks.bench_e2e",
            f"--scenario {s.scenario}",
            f"--rate {s.rate}",
            f"--duration {s.duration}",
            f"--warmup {s.warmup}",
            f"--sellers {s.sellers[0]}-{s.sellers[1]}",
            f"--drain-timeout {s.drain_timeout}",
        ]
        if self.otel_ratio is not None:
            args.append(f"--otel-ratio {self.otel_ratio:g}")
        return " ".join(args)


def otel_env(endpoint: str, ratio: float) -> dict[str, str]:
    """The standard OpenTelemetry variables every traced part gets: OTLP/HTTP to `endpoint`, 1 in 1/ratio payments
    sampled at its root and every later hop following that decision."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": f"{ratio:g}",
    }


class KafkaLag:
    """End offset minus committed offset per consumer group, asked of the broker (the members' own view can lag)."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="bench-e2e-lag")
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, client_id="bench-e2e-lag")
        self._partitions: dict[str, list[int]] = {}
        self._last: dict[str, int] = {}

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()

    async def close(self) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def read(self) -> dict[str, int]:
        try:
            groups = [str(group[0]) for group in await self._admin.list_consumer_groups()]
            committed: dict[str, dict[tuple[str, int], int]] = {}
            for group in groups:
                offsets = await self._admin.list_consumer_group_offsets(group)
                committed[group] = {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
            topics = {topic for offsets in committed.values() for topic, _ in offsets}
            await self._learn_partitions(topics - self._partitions.keys())
            wanted = [TopicPartition(t, p) for t in topics for p in self._partitions.get(t, [])]
            ends = await self._consumer.end_offsets(wanted) if wanted else {}
            self._last = consumer_lag(committed, {(tp.topic, tp.partition): end for tp, end in ends.items()})
        except Exception as error:  # a slow broker must not end the run: keep the last reading
            print(f"  (lag not read: {error!r})", file=sys.stderr)
        return self._last

    async def _learn_partitions(self, topics: set[str]) -> None:
        if not topics:
            return
        for topic in await self._admin.describe_topics(sorted(topics)):
            self._partitions[topic["topic"]] = sorted(p["partition"] for p in topic["partitions"])


class Sampler:
    """Once a second: lag, outbox backlog, orders not final, retry queue, CPU and RSS per part."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        lag: KafkaLag,
        redis: Redis,
        meters: dict[str, PartMeter],
        flow: FlowReader | None = None,
    ) -> None:
        self._conn, self._lag, self._redis, self._meters, self._flow = conn, lag, redis, meters, flow
        self.samples: list[Sample] = []

    async def sample(self) -> Sample:
        reading = await asyncio.to_thread(_read_proc)
        lag = await self._lag.read()
        backlog = int(await self._conn.fetchval(OUTBOX_BACKLOG))
        in_flight = int(await self._conn.fetchval(IN_FLIGHT))
        retry_queue = int(await self._redis.zcard(RETRY_QUEUE))
        parts = {name: meter.update(reading.processes) for name, meter in self._meters.items()}
        flow = await self._flow.read() if self._flow is not None else {}
        sample = Sample(
            reading.at,
            lag,
            backlog,
            in_flight,
            retry_queue,
            parts,
            reading.busy_seconds,
            reading.pressure_seconds,
            flow,
        )
        self.samples.append(sample)
        return sample

    async def run(self, stop: asyncio.Event) -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            await self.sample()
            next_at += 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(next_at - time.monotonic(), 0.0))


@dataclass(frozen=True)
class ProcReading:
    """Every process, the machine's busy time and CPU pressure, stamped with the moment they were read (CPU rates
    divide by the time between readings, not between the ends of samples that may wait on the broker)."""

    processes: list[ProcessInfo]
    busy_seconds: float
    pressure_seconds: float
    at: float


def _read_proc() -> ProcReading:
    busy = machine_busy_seconds(Path("/proc/stat").read_text())
    pressure = 0.0
    with contextlib.suppress(OSError):
        pressure = cpu_pressure_seconds(Path("/proc/pressure/cpu").read_text())
    at = time.time()
    return ProcReading(read_processes(), busy, pressure, at)


async def start_redis(scratch: Path) -> tuple[ServerProcess, str]:
    """A private redis-server: the benchmark shares no keys with `make run`, and its CPU is its own."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (make services)")
    port = free_port()
    server = ServerProcess(
        "redis",
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(scratch)],
        log_file=scratch / "redis.log",
    )
    url = f"redis://127.0.0.1:{port}/0"

    async def ready() -> bool:
        client = Redis.from_url(url)
        try:
            return bool(await client.ping())
        finally:
            await client.aclose()

    server.spawn()
    await server.wait_ready(ready, within=10)
    return server, url


def _meters(
    stack: Stack, redis: ServerProcess, database: str, k6_pid: Callable[[], int | None]
) -> dict[str, PartMeter]:
    def session_of(pid: int | None) -> Selector:
        if pid is None:
            raise RuntimeError("a part of the stack has no process")
        return in_session(pid)

    def k6(info: ProcessInfo) -> bool:
        return info.stat.pid == k6_pid()

    by_name = {part.name: part for part in stack.parts}
    return {
        "payment-service (API)": PartMeter(session_of(by_name["payment-service"].pid())),
        "outbox-dispatcher": PartMeter(session_of(by_name["outbox-dispatcher"].pid())),
        "payment-consumers": PartMeter(session_of(by_name["payment-consumers"].pid())),
        "psp-simulator": PartMeter(session_of(by_name["psp-simulator"].pid())),
        "postgres": PartMeter(postgres_serving(database)),
        "kafka": PartMeter(session_of(stack.kafka.pid)),
        "keycloak": PartMeter(session_of(stack.keycloak.pid)),
        "redis": PartMeter(session_of(redis.pid)),
        "k6": PartMeter(k6),
        "bench sampler": PartMeter(is_process(os.getpid())),
    }


async def measure(options: Options, stack: Stack, redis: ServerProcess, redis_url: str, scratch: Path) -> Run:
    s = options.settings
    database = stack.config.database_url.rsplit("/", 1)[1]
    token = await stack.keycloak.token(CLIENT_ID)
    issued_ms = int(time.time() * 1000)
    k6_process: asyncio.subprocess.Process | None = None
    meters = _meters(stack, redis, database, lambda: k6_process.pid if k6_process is not None else None)
    conn = await asyncpg.connect(plain_dsn(stack.config.database_url))
    lag = KafkaLag(stack.kafka.bootstrap_servers)
    await lag.start()
    redis_client = Redis.from_url(redis_url)
    ports = stack.config.ports
    flow = FlowReader(
        f"http://127.0.0.1:{ports.api_management}/metrics", f"http://127.0.0.1:{ports.consumers_management}/metrics"
    )
    sampler = Sampler(conn, lag, redis_client, meters, flow)
    stop = asyncio.Event()
    try:
        sampling = asyncio.create_task(sampler.run(stop))  # its first sample is every CPU meter's baseline
        await asyncio.sleep(options.idle)  # the stack's cost with nothing to do, for comparison
        console, summary = scratch / "k6-requests.log", scratch / "k6-summary.json"
        launched = time.time()
        k6_process = await asyncio.create_subprocess_exec(
            *_k6_command(console, summary),
            env=_k6_env(options, stack, token, issued_ms),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        print(f"  k6: {s.rate} payments/s for {s.warmup} + {s.duration} s ...")
        profiling = asyncio.create_task(_profile(options, stack, scratch)) if options.profile else None
        _, k6_errors = await k6_process.communicate()
        if k6_process.returncode not in (0, 99):  # 99: a threshold failed (there are none) — anything else: broken
            raise RuntimeError(f"k6 failed ({k6_process.returncode}): {k6_errors.decode(errors='replace')[-2000:]}")
        requests = _read_requests(console)
        load_start = min((r.started for r in requests), default=launched)
        load = Window(load_start, load_start + s.warmup + s.duration)
        print(f"  load done: {len(requests):,} requests; draining (up to {s.drain_timeout} s) ...")
        await _drain(sampler, s.drain_timeout)
        stop.set()
        await sampling
        drain_end = sampler.samples[-1].at
        rows = await conn.fetch(ORDERS)
        profiles, statements = await profiling if profiling is not None else ([], None)
    finally:
        stop.set()
        await conn.close()
        await lag.close()
        await redis_client.aclose()
        await flow.close()
    orders = [Order(r["created"], r["final"] if r["status"] in TERMINAL else None, r["waited"]) for r in rows]
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return Run(
        settings=s,
        requests=requests,
        orders=orders,
        statuses=statuses,
        samples=sampler.samples,
        load=load,
        drain_end=drain_end,
        dropped_iterations=_dropped_iterations(summary),
        psp=_psp_summary(stack.config.psp_url),
        profiles=profiles,
        statements=statements,
    )


async def _profile(
    options: Options, stack: Stack, scratch: Path
) -> tuple[list[e2e_profile.Profile], list[e2e_statements.Statement] | None]:
    """py-spy on the Python parts for `--profile` seconds, centred in the measured window, and the database's
    statements over the same seconds when the server has pg_stat_statements."""
    s = options.settings
    await asyncio.sleep(s.warmup + max(s.duration - options.profile, 0) / 2)
    by_name = {part.name: part for part in stack.parts}
    pids = {
        name: pid
        for name in ("payment-service", "outbox-dispatcher", "payment-consumers")
        if (pid := by_name[name].pid()) is not None
    }
    print(f"  profiling {', '.join(pids)} for {options.profile} s ...")
    statements = await e2e_statements.StatementProfile.open(stack.config.database_url)
    try:
        before = await statements.snapshot() if statements is not None else {}
        raw = await e2e_profile.record(pids, options.profile, scratch)
        ran = e2e_statements.difference(before, await statements.snapshot()) if statements is not None else None
    finally:
        if statements is not None:
            await statements.close()
    return [e2e_profile.summarise(part, path) for part, path in raw.items()], ran


def _k6_command(console: Path, summary: Path) -> list[str]:
    return [
        K6,
        "run",
        "--quiet",
        "--log-format",
        "raw",
        "--console-output",
        str(console),
        "--summary-export",
        str(summary),
        str(K6_SCRIPT),
    ]


def _k6_env(options: Options, stack: Stack, token: str, issued_ms: int) -> dict[str, str]:
    s = options.settings
    return {
        **os.environ,
        "BASE_URL": f"http://127.0.0.1:{stack.config.ports.api}",
        "RATE": str(s.rate),
        "DURATION": str(s.warmup + s.duration),
        "VUS": str(s.vus),
        "MAX_VUS": str(s.max_vus),
        "SELLERS_MIN": str(s.sellers[0]),
        "SELLERS_MAX": str(s.sellers[1]),
        "TIMEOUT": options.timeout,
        "TOKEN": token,
        "TOKEN_ISSUED_MS": str(issued_ms),
        "TOKEN_URL": stack.keycloak.token_url,
        "CLIENT_ID": CLIENT_ID,
        "CLIENT_SECRET": keycloak.CLIENT_SECRETS[CLIENT_ID],
        "RUN_ID": uuid.uuid4().hex[:10],
    }


async def _drain(sampler: Sampler, timeout: float) -> None:
    """Sample until every order is final and nothing waits in Kafka or the outbox (or `timeout` passes). Lag can
    trail the last order by a commit interval; a few seconds after the last order it no longer holds the run."""
    deadline = time.monotonic() + timeout
    settled_at: float | None = None
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)  # the sampler task keeps sampling; this only looks at what it found
        last = sampler.samples[-1]
        if last.in_flight:
            settled_at = None
            continue
        settled_at = settled_at or time.monotonic()
        if (last.total_lag == 0 and last.outbox_backlog == 0) or time.monotonic() - settled_at > 10:
            return


def _read_requests(console: Path) -> list[Request]:
    if not console.exists():
        return []
    with console.open() as lines:
        return [request for line in lines if (request := parse_k6_line(line)) is not None]


def _dropped_iterations(summary: Path) -> int:
    """Iterations k6 could not start because every VU was busy: offered load that was never sent."""
    try:
        metrics = json.loads(summary.read_text())["metrics"]
    except (OSError, ValueError, KeyError):
        return 0
    return int(metrics.get("dropped_iterations", {}).get("count", 0))


def _psp_summary(psp_url: str) -> dict[str, object]:
    try:
        return dict(httpx.get(f"{psp_url}/admin/summary", timeout=10).json())
    except (httpx.HTTPError, ValueError):
        return {}


def _machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    cores = os.cpu_count() or 0
    memory = f"{memory_kb / 2**20:.0f} GiB"
    return f"{cores} cores ({model or platform.machine()}), {memory}, Python {platform.python_version()}"


def _commit() -> str:
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return result.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown commit"
    dirty = git(
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "services",
        "payment_application",
        "payment_domain",
        "payment_infrastructure",
    )
    return f"commit {head}" + (" with uncommitted changes to the code" if dirty else "")


async def verify_ledger(config: StackConfig) -> None:
    """`payments ledger verify` against the run's database and PSP simulator, once every order is final: the
    trial balance and the comparison with what the PSP charged, printed as the command prints them."""
    command = [sys.executable, "-m", "services.payment_consumers.cli", "ledger", "verify", "--psp-url", config.psp_url]
    env = {**os.environ, "PAYMENTS_DB__URL": config.database_url, "PAYMENTS_DB__SSL": "disable"}
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, check=False)
    print(f"  $ payments ledger verify --psp-url {config.psp_url}  (exit {done.returncode})")
    for line in (done.stdout + done.stderr).splitlines():
        print(f"    {line}")


async def bench(options: Options) -> tuple[Path, Summary]:
    async with contextlib.AsyncExitStack() as exits:
        if options.otel_ratio is None:
            state = "set" if "OTEL_EXPORTER_OTLP_ENDPOINT" in os.environ else "unset: off"
            print(f"tracing as the environment says (OTEL_EXPORTER_OTLP_ENDPOINT {state})")
            return await _bench(options, None, {})
        receiving = OtlpReceiver.running(keep=False)
        receiver = await anext(receiving)
        exits.push_async_callback(receiving.aclose)
        print(f"tracing at ratio {options.otel_ratio:g}, spans to {receiver.endpoint} (counted, discarded)")
        return await _bench(options, receiver, otel_env(receiver.endpoint, options.otel_ratio))


async def _bench(options: Options, receiver: OtlpReceiver | None, tracing: dict[str, str]) -> tuple[Path, Summary]:
    s = options.settings
    scratch = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    database_url = f"{SERVER}/payments_bench_{uuid.uuid4().hex[:8]}"
    ports = Ports(**{name: free_port() for name in vars(Ports())})
    print(f"{s.scenario} at {s.rate} payments/s; stack logs in {scratch / 'run'}")
    await asyncio.gather(asyncio.to_thread(kafka.install), asyncio.to_thread(keycloak.install))
    redis, redis_url = await start_redis(scratch)
    config = StackConfig(
        run_dir=scratch / "run",
        ports=ports,
        database_url=database_url,
        redis_url=redis_url,
        psp_scenario=s.scenario,
        extra_env=tracing,
    )
    stack = Stack(config)
    failed = True
    try:
        started = time.monotonic()
        await stack.start()
        print(f"  stack up in {time.monotonic() - started:.0f} s")
        run = await measure(options, stack, redis, redis_url, scratch)
        if options.ledger_verify:
            await verify_ledger(config)
        failed = False
    finally:
        await stack.stop()
        await redis.stop()
        await drop_database(database_url)
        if failed or options.keep_run_dir:
            print(f"  logs kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    summary = summarise(run)
    options.out.mkdir(parents=True, exist_ok=True)
    name = stem(run)
    context = Context(
        command=options.command(),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=_machine(),
        commit=_commit(),
    )
    page = options.out / f"{name}.md"
    page.write_text(markdown(run, summary, context, f"{name}.png"))
    chart(run, options.out / f"{name}.png")
    write_series(run, options.out / f"{name}-series.csv")
    if run.profiles:
        profile_page = options.out / f"{name}-profile.md"
        profile_page.write_text(
            e2e_profile.markdown(run.profiles, options.command(), options.profile)
            + e2e_statements.markdown(run.statements, options.profile)
        )
        print(f"  wrote {profile_page}")
    print(
        f"  accepted {summary.accepted_per_s:.1f} payments/s, settled {summary.settled_orders_per_s:.1f} orders/s, "
        f"create→final p50/p95/p99 {summary.latency_s[50]:.3f}/{summary.latency_s[95]:.3f}/"
        f"{summary.latency_s[99]:.3f} s, final {summary.orders_final:,}/{summary.orders_total:,}"
    )
    print("  CPU ms per order: " + ", ".join(_cpu_per_order(summary)))
    print(f"  the system (k6 and the sampler aside): {system_cpu_ms_per_order(summary):.3f} ms per order")
    if receiver is not None:
        print(f"  spans received: {receiver.received:,}")
    print(f"  wrote {page} and {name}.png")
    return page, summary


def _cpu_per_order(summary: Summary) -> list[str]:
    return [
        f"{p.name} {p.cpu_ms_per_order:.3f}"
        for p in summary.parts
        if p.cpu_ms_per_order is not None and p.name not in LOAD_PARTS
    ]


def _sellers(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    bounds = (int(low), int(high or low))
    if not 1 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"--sellers wants N or N-M with 1 <= N <= M, not {text!r}")
    return bounds


def _ratio(text: str) -> float:
    ratio = float(text)
    if not 0.0 <= ratio <= 1.0:
        raise argparse.ArgumentTypeError(f"--otel-ratio wants a number from 0 to 1, not {text!r}")
    return ratio


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.bench_e2e",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rate", type=int, default=100, help="payments offered per second (default 100)")
    parser.add_argument("--duration", type=int, default=60, help="measured seconds of load (default 60)")
    parser.add_argument("--warmup", type=int, default=10, help="seconds of load before the measured window (10)")
    parser.add_argument("--scenario", default="BEST_PSP_EVER", help="PSP simulator scenario (default BEST_PSP_EVER)")
    parser.add_argument("--sellers", type=_sellers, default=(2, 3), help="orders per payment, N or N-M (2-3)")
    parser.add_argument("--drain-timeout", type=int, default=120, help="seconds to wait for every order (120)")
    parser.add_argument("--vus", type=int, default=0, help="k6 VUs preallocated (default: the rate, at least 20)")
    parser.add_argument("--max-vus", type=int, default=0, help="k6 VUs at most (default: 4 times the rate)")
    parser.add_argument("--timeout", default="10s", help="k6 request timeout (default 10s)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the .md/.png go (default: a new .run/bench-e2e/<UTC time>; docs/benchmarks to publish)",
    )
    parser.add_argument("--idle", type=float, default=5, help="seconds sampled before the load (default 5)")
    parser.add_argument("--keep-run-dir", action="store_true", help="keep the stack's logs after the run")
    parser.add_argument(
        "--ledger-verify", action="store_true", help="run `payments ledger verify` once every order is final"
    )
    parser.add_argument(
        "--profile", type=int, default=0, help="py-spy the API, dispatcher and consumers for N s mid-window (off)"
    )
    parser.add_argument(
        "--otel-ratio",
        type=_ratio,
        default=None,
        help="trace at this sampling ratio (0-1), spans to a receiver here that discards them (default: no OTEL_*)",
    )
    args = parser.parse_args(argv)
    vus = args.vus or max(args.rate, 20)
    settings = Settings(
        scenario=args.scenario,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        sellers=args.sellers,
        drain_timeout=args.drain_timeout,
        vus=vus,
        max_vus=max(args.max_vus or 4 * args.rate, vus),
    )
    out = args.out or default_out_dir(datetime.now(UTC))
    return Options(
        settings, out, args.timeout, args.keep_run_dir, args.idle, args.profile, args.ledger_verify, args.otel_ratio
    )


def default_out_dir(now: datetime) -> Path:
    """A run directory of its own (.run/ is ignored by git): a run never overwrites the published pages."""
    return ROOT / ".run" / "bench-e2e" / now.strftime("%Y%m%dT%H%M%SZ")


def main(argv: list[str] | None = None) -> None:
    asyncio.run(bench(parse_args(argv)))


if __name__ == "__main__":
    main()
