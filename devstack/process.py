"""A child server process: started with its output in a log file, stopped with SIGTERM then SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn`: the kernel sends SIGTERM to the child if its parent dies, even by SIGKILL (Linux)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ServerProcess:
    """One child process. `tie_to_parent=False` for children that must outlive a supervisor's restart."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        log_file: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        tie_to_parent: bool = True,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log_file = log_file
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.tie_to_parent = tie_to_parent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def spawn(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env is not None else None,
                cwd=self.cwd,
                preexec_fn=die_with_parent if self.tie_to_parent else None,
                start_new_session=True,
            )

    async def wait_ready(self, ready: Callable[[], Awaitable[bool]], *, within: float) -> float:
        """Poll `ready` until it holds; fail early if the process exits, with the log's tail. Returns seconds."""
        started = time.monotonic()
        deadline = started + within
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.process.returncode}\n{self.log_tail()}")
            try:
                if await ready():
                    return time.monotonic() - started
            except Exception:  # not ready yet: connection refused, 404 while importing, ...
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready within {within}s\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    def terminate(self, *, grace: float = 20.0) -> None:
        """SIGTERM, wait up to `grace` seconds (Kafka flushes and closes its logs), then SIGKILL."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # kc.sh forwards it to its java child
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the child's whole session (start_new_session=True)
            process.wait(timeout=10)

    def resident_bytes(self) -> int:
        """Resident memory of the process and everything in its session (a wrapper script and its JVM)."""
        if not self.running or self.process is None:
            return 0
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == self.process.pid:  # session id (field 6 of /proc/<pid>/stat)
                    total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # rss in pages (field 24)
            except (OSError, IndexError, ValueError):
                continue
        return total

    async def stop(self, *, grace: float = 20.0) -> None:
        await asyncio.to_thread(self.terminate, grace=grace)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"(no log at {self.log_file})"
        return f"last lines of {self.log_file}:\n" + "\n".join(text[-lines:])


class RunsOneProcess:
    """Mixin for a server run as one ServerProcess at a time (Kafka, Keycloak): launch, watch, stop."""

    _process: ServerProcess | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def resident_bytes(self) -> int:
        return self._process.resident_bytes() if self._process is not None else 0

    async def _launch(self, process: ServerProcess, ready: Callable[[], Awaitable[bool]], *, within: float) -> float:
        """Spawn and wait until `ready`; a start that fails leaves nothing running. Returns the seconds it took."""
        self._process = process
        process.spawn()
        try:
            return await process.wait_ready(ready, within=within)
        except BaseException:
            await self.stop()
            raise

    async def stop(self, *, grace: float = 20.0) -> None:
        if self._process is not None:
            await self._process.stop(grace=grace)
