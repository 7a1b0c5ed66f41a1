"""`make run`'s supervisor over real processes: a part that dies is started again, one that keeps dying waits
longer each time, and a stop ends the watch."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from pathlib import Path

import httpx

from devstack import run
from devstack.process import free_port
from tests.fixtures.ports import wait_until


def toy_part(tmp_path: Path, name: str = "toy") -> tuple[run.Part, int]:
    port = free_port()
    part = run.python_part(
        name, "a toy HTTP server", f"http://127.0.0.1:{port}",
        ["-m", "http.server", str(port), "--bind", "127.0.0.1"],
        f"http://127.0.0.1:{port}/", {}, tmp_path / f"{name}.log",
    )  # fmt: skip
    return part, port


async def answers(port: int) -> bool:
    async with httpx.AsyncClient(timeout=1) as client:
        return (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200


async def test_a_part_killed_by_a_crash_is_started_again_and_serves(tmp_path: Path) -> None:
    part, port = toy_part(tmp_path)
    await part.start()
    stop = asyncio.Event()
    watching = asyncio.create_task(run.supervise([part], stop))
    try:
        first_pid = part.pid()
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)

        await wait_until(lambda: answers(port), timeout=20, what="the toy server to come back")
        second_pid = part.pid()
    finally:
        stop.set()
        await asyncio.wait_for(watching, 10)
        await part.stop()

    assert second_pid not in (None, first_pid)
    assert part.restarts == 1
    assert not part.running


async def test_a_part_that_keeps_failing_is_retried_with_growing_pauses(tmp_path: Path) -> None:
    log_file = tmp_path / "broken.log"
    attempts: list[float] = []
    loop = asyncio.get_running_loop()

    async def start() -> float:
        attempts.append(loop.time())
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", "raise SystemExit(3)")
        await process.wait()
        raise RuntimeError("exited with code 3")

    broken = run.Part("broken", "always fails", "-", start, lambda: False, asyncio.sleep, lambda: 0, log_file)
    broken.started_at = loop.time()  # it has just failed once
    stop = asyncio.Event()
    watching = asyncio.create_task(run.supervise([broken], stop))

    async def three_attempts() -> bool:
        return len(attempts) >= 3

    try:
        await wait_until(three_attempts, timeout=20, what="three restart attempts")
    finally:
        stop.set()
        await asyncio.wait_for(watching, 10)

    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert broken.restarts >= 3
    assert gaps[1] > gaps[0] * 1.5  # 2 s after the 1 s pause: it backs off instead of spinning
