"""A graceful stop is bounded: a process whose stop hangs (a client close waiting on a broker that never answers)
exits with status 75 once the watchdog's time is up, so that a supervisor starts it again; one that stops in time
exits normally and the disarmed watchdog never fires."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from payment_infrastructure.server import SHUTDOWN_TIMED_OUT_EXIT
from services.payment_consumers.settings import ConsumersSettings
from tests.deploy.charts import REPO

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from payment_infrastructure.server import ShutdownWatchdog, run_until_stopped

    async def loop(stop):
        print("ready", flush=True)  # the runner's signal handlers are in place by now
        await stop.wait()
        if sys.argv[1] == "hangs":
            await asyncio.Event().wait()  # a close that never returns

    async def main():
        watchdog = ShutdownWatchdog(1.0)
        try:
            await run_until_stopped([], [loop], watchdog=watchdog)
        finally:
            watchdog.disarm()
        await asyncio.sleep(1.5)  # past the watchdog's time: it must not fire once disarmed
        print("stopped", flush=True)

    asyncio.run(main())
    """
)


def run_and_stop(mode: str) -> tuple[int, str, float]:
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, mode], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    return process.returncode, output, time.monotonic() - started


def test_a_stop_that_hangs_ends_the_process_with_status_75_when_the_watchdog_fires() -> None:
    status, output, took = run_and_stop("hangs")
    assert status == SHUTDOWN_TIMED_OUT_EXIT
    assert "shutdown_timed_out" in output and "stopped" not in output
    assert 1.0 <= took < 20


def test_a_stop_in_time_exits_normally_and_the_disarmed_watchdog_never_fires() -> None:
    status, output, _took = run_and_stop("stops")
    assert status == 0, output
    assert "stopped" in output and "shutdown_timed_out" not in output


def test_the_consumers_shutdown_bound_outlasts_the_bounds_of_every_stop_step() -> None:
    with pytest.raises(
        ValueError, match=r"must exceed the stop's own bounds \(41 s\): consumer\.drain_timeout_seconds"
    ):
        ConsumersSettings.model_validate({"process": {"shutdown_timeout_seconds": 40}})
    defaults = ConsumersSettings()
    assert defaults.stop_bound_seconds == 10 + 2 * 3 + (5 + 5) + (5 + 5) + 5
    assert defaults.process.shutdown_timeout_seconds == 45 > defaults.stop_bound_seconds
