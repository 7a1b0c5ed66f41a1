"""Run several uvicorn servers and background loops in one process, with one SIGTERM handling for all.

uvicorn's own signal capture is per server and re-raises the signal afterwards; with two servers (API and
management) that would kill the process mid-drain, so this runner owns the signals instead.

A graceful stop is bounded: with a ShutdownWatchdog, a thread ends the process (exit status 75) if the stop has not
finished `seconds` after it began. A client close that waits on a broker that does not answer must not leave a
process that has closed its management server (nothing left to fail its liveness) and does no work: exiting lets
the supervisor or Kubernetes start it again, and whatever it had not committed is delivered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any

import structlog
import uvicorn
from starlette.types import ASGIApp

log = structlog.get_logger(__name__)


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening address several worker processes can bind at once; the kernel spreads connections."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def http_server(
    app: ASGIApp, *, host: str, port: int, backlog: int = 2048, keep_alive_seconds: int = 30
) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        access_log=False,
        log_config=None,
        loop="uvloop",
        http="httptools",
        backlog=backlog,
        timeout_keep_alive=keep_alive_seconds,
    )
    return _QuietServer(config)


async def run_until_stopped(
    servers: Sequence[uvicorn.Server],
    loops: Sequence[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = (),
    *,
    stop: asyncio.Event | None = None,
    sockets: dict[int, socket.socket] | None = None,
    watchdog: ShutdownWatchdog | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or `stop` is set); then stop accepting, drain, and wait for the loops.
    `sockets` maps a server's index to a pre-bound socket (e.g. a SO_REUSEPORT one). `watchdog` is armed when the
    stop begins; the caller disarms it once everything it closes after this is closed too."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    sockets = sockets or {}
    tasks = [
        asyncio.create_task(s.serve(sockets=[sockets[i]] if i in sockets else None), name=f"http:{s.config.port}")
        for i, s in enumerate(servers)
    ]
    tasks += [asyncio.create_task(fn(stop), name=getattr(fn, "__name__", "loop")) for fn in loops]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not stopper and task.exception() is not None:
            log.error("component_failed", component=task.get_name(), error=repr(task.exception()))
    stop.set()
    if watchdog is not None:
        watchdog.arm()
    for server in servers:
        server.should_exit = True
    results = await asyncio.gather(*tasks, return_exceptions=True)
    stopper.cancel()
    failures = [r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
    if failures:
        raise failures[0]


SHUTDOWN_TIMED_OUT_EXIT = 75  # EX_TEMPFAIL: start me again


class ShutdownWatchdog:
    """Ends the process `seconds` after `arm()` unless `disarm()` came first; a thread, so that it fires even when
    the event loop itself is stuck."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self.seconds, self._give_up)
            self._timer.daemon = True
            self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _give_up(self) -> None:
        log.error("shutdown_timed_out", seconds=self.seconds, exit_status=SHUTDOWN_TIMED_OUT_EXIT)
        os._exit(SHUTDOWN_TIMED_OUT_EXIT)
