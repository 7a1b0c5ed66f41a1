"""Start the parts a benchmark needs as real processes (fresh database, free ports) and stop them afterwards."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from devstack.database import SERVER_URL
from devstack.kafka import KafkaBroker
from devstack.keycloak import Keycloak
from devstack.process import free_port
from payment_infrastructure.postgres.database import drop_database

ROOT = Path(__file__).resolve().parents[2]
SERVER = os.environ.get("PAYMENTS_BENCH_DB_SERVER", SERVER_URL)


@dataclass
class Stack:
    api_url: str
    issuer_url: str
    database_url: str
    env: dict[str, str]
    psp_url: str = ""


def wait_http(url: str, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextmanager
def process(args: list[str], env: dict[str, str], log_name: str) -> Iterator[subprocess.Popen[bytes]]:
    log_dir = ROOT / ".run"
    log_dir.mkdir(exist_ok=True)
    with open(log_dir / f"{log_name}.log", "wb") as log:
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def api_stack(
    *, redis_url: str = "redis://127.0.0.1:6379/0", workers: int = 2, pipeline: str | None = None
) -> Iterator[Stack]:
    """Keycloak + payment-service on free ports against a fresh database that is dropped afterwards.

    `pipeline="NORMAL"` (a PSP scenario) also starts a broker, the PSP simulator, the outbox dispatcher and
    payment-consumers, so payments settle end to end."""
    database_url = f"{SERVER}/payments_bench_{uuid.uuid4().hex[:8]}"
    api_port, mgmt_port = free_port(), free_port()
    psp_port, consumers_port, dispatcher_port = free_port(), free_port(), free_port()
    scratch = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    identity = Keycloak(scratch / "keycloak", log_file=ROOT / ".run" / "bench-keycloak.log")
    broker = KafkaBroker(scratch / "kafka", log_file=ROOT / ".run" / "bench-kafka.log")
    issuer_base = identity.base_url
    env = {
        **os.environ,
        "PAYMENTS_DB__URL": database_url,
        "PAYMENTS_DB__POOL_SIZE": os.environ.get("BENCH_POOL_SIZE", "4"),
        "PAYMENTS_REDIS__URL": redis_url,
        "PAYMENTS_API__PORT": str(api_port),
        "PAYMENTS_API__MANAGEMENT_PORT": str(mgmt_port),
        "PAYMENTS_AUTH__ISSUER_URL": identity.issuer_url,
        "PAYMENTS_LOGGING__LEVEL": "WARNING",
        "PAYMENTS_API__WORKERS": str(workers),
        "PAYMENTS_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "PAYMENTS_OUTBOX__DISPATCHER_METRICS_PORT": str(dispatcher_port),
        "PAYMENTS_PROCESS__MANAGEMENT_PORT": str(consumers_port),
        "PAYMENTS_PSP__BASE_URL": f"http://127.0.0.1:{psp_port}",
    }
    py = sys.executable
    subprocess.run(
        [py, "-m", "payment_infrastructure.postgres.migrate", "--create", database_url], check=True, cwd=ROOT
    )
    try:
        with ExitStack() as parts:
            asyncio.run(identity.start())
            parts.callback(lambda: asyncio.run(identity.stop()))
            if pipeline is not None:
                asyncio.run(broker.start())
                parts.callback(lambda: asyncio.run(broker.stop()))
                parts.enter_context(
                    process(
                        [py, "-m", "services.psp_simulator", "--port", str(psp_port), "--scenario", pipeline],
                        env,
                        "bench-psp",
                    )
                )
                wait_http(f"http://127.0.0.1:{psp_port}/health/live")
            parts.enter_context(process([py, "-m", "services.payment_service"], env, "bench-payment-service"))
            wait_http(f"http://127.0.0.1:{mgmt_port}/health/ready")
            if pipeline is not None:
                parts.enter_context(process([py, "-m", "services.payment_service.dispatcher"], env, "bench-dispatcher"))
                parts.enter_context(process([py, "-m", "services.payment_consumers"], env, "bench-consumers"))
                wait_http(f"http://127.0.0.1:{dispatcher_port}/metrics")
                wait_http(f"http://127.0.0.1:{consumers_port}/health/ready", timeout=60)
            yield Stack(f"http://127.0.0.1:{api_port}", issuer_base, database_url, env, f"http://127.0.0.1:{psp_port}")
    finally:
        asyncio.run(drop_database(database_url))
        shutil.rmtree(scratch, ignore_errors=True)


def client_token(issuer_base: str, client_id: str = "order-service", secret: str = "order-service-secret") -> str:
    response = httpx.post(
        f"{issuer_base}/realms/ecommerce-platform/protocol/openid-connect/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    response.raise_for_status()
    return str(response.json()["access_token"])
