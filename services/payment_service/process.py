"""The payment-service process (`python -m services.payment_service`): the API on :8080, management on :9000.

With `PAYMENTS_API__WORKERS=N` (N > 1) the API runs in N processes sharing the port through SO_REUSEPORT, a way to
use every core of one machine; worker 0 also serves the management port (metrics aggregated across workers) and
runs the maintenance loops. On Kubernetes keep one worker per pod and scale pods instead.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import shutil
import signal
import tempfile
from types import FrameType

import structlog
import uvloop
from starlette.applications import Starlette

from payment_infrastructure.environment import settings_from_environment
from payment_infrastructure.observability.logging import configure_logging
from payment_infrastructure.observability.management import create_management_app
from payment_infrastructure.observability.tracing import configure_tracing
from payment_infrastructure.server import http_server, reuse_port_socket, run_until_stopped
from services.payment_service.api.app import create_app
from services.payment_service.bootstrap import Container, build_container
from services.payment_service.maintenance import ensure_partitions, maintenance_loops
from services.payment_service.settings import ServiceSettings

log = structlog.get_logger(__name__)


def management_app(container: Container) -> Starlette:
    """Readiness is local: the process is serving. Postgres and Redis are shared by every pod, so an outage of
    theirs is reported in /health/ready's body, not by unreadying every pod at once (creates answer 503 meanwhile)."""
    return create_management_app({}, dependencies=container.dependencies)


async def serve(settings: ServiceSettings, *, worker: int = 0) -> None:
    container = await build_container(settings)
    try:
        await container.start()
        api = http_server(
            create_app(container),
            host=settings.api.host,
            port=settings.api.port,
            keep_alive_seconds=settings.api.keep_alive_seconds,
        )
        servers, loops = [api], []
        sockets = {0: reuse_port_socket(settings.api.host, settings.api.port)} if settings.api.workers > 1 else {}
        if worker == 0:
            await ensure_partitions(container)
            management = management_app(container)
            servers.append(
                http_server(management, host=settings.api.management_host, port=settings.api.management_port)
            )
            loops = maintenance_loops(container)
        log.info("payment_service_starting", worker=worker, api_port=settings.api.port)
        _settle_garbage_collector()
        await run_until_stopped(servers, loops, sockets=sockets)
    finally:
        await container.close()
        log.info("payment_service_stopped", worker=worker)


def _settle_garbage_collector() -> None:
    """Everything built at start-up lives as long as the process: move it out of the collector's sight, so full
    collections stay short (they otherwise walk every module, model and route on the request path, a latency tail)."""
    gc.collect()
    gc.freeze()


def _run_worker(worker: int) -> None:
    settings = settings_from_environment(ServiceSettings, deployable="payment-service")
    configure_logging(service="payment-service", level=settings.logging.level, json=settings.logging.json_output)
    configure_tracing("payment-service")
    structlog.contextvars.bind_contextvars(worker=worker)
    uvloop.run(serve(settings, worker=worker))


def _run_workers(count: int) -> int:
    metrics_dir = tempfile.mkdtemp(prefix="payment-service-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_run_worker, args=(i,), name=f"api-worker-{i}") for i in range(count)]

    def forward(signum: int, _frame: FrameType | None) -> None:
        for process in workers:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        for process in workers:
            process.start()
        for process in workers:
            process.join()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return max((p.exitcode or 0) for p in workers)


def main() -> None:
    settings = settings_from_environment(ServiceSettings, deployable="payment-service")
    if settings.api.workers > 1:
        raise SystemExit(_run_workers(settings.api.workers))
    _run_worker(0)
