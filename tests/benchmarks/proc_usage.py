"""CPU time and resident memory per part of the stack, read from /proc (Linux) without psutil.

A part is a set of processes: a Python service and its workers, or a wrapper script and its JVM, share the session
the part was started in (devstack starts each part with `start_new_session=True`). Postgres is the server's
background processes plus the backends of the benchmark's own database; other databases' backends belong to
whoever else uses the server. CPU per part is summed per process between samples, so a process that starts or
exits in the middle is still counted for the time it was seen.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")

# "postgres: 15/main: <user> <database> <host>(<port>) <state>" (the cluster name part is optional).
_CLIENT_BACKEND = re.compile(r"^postgres: (?:\S+: )?\S+ (?P<db>\S+) (?:\[local\]|[0-9a-fA-F.:]+\(\d+\))")
_AUTOVACUUM_WORKER = re.compile(r"^postgres: (?:\S+: )?autovacuum worker (?P<db>\S+)")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    ppid: int
    session: int
    cpu_ticks: int  # utime + stime: user and system time of every thread

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_ticks / CLOCK_TICKS


def parse_stat(pid: int, text: str) -> ProcStat:
    """/proc/<pid>/stat: the command name is in parentheses and may itself hold spaces or parentheses."""
    head, _, tail = text.rpartition(")")
    comm = head.split("(", 1)[1]
    fields = tail.split()
    # fields[0] is field 3 (state): ppid is field 4, session 6, utime 14, stime 15.
    return ProcStat(pid, comm, int(fields[1]), int(fields[3]), int(fields[11]) + int(fields[12]))


def parse_vmrss_bytes(status: str) -> int:
    """VmRSS from /proc/<pid>/status (kB); 0 for kernel threads and zombies, which have none."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def machine_busy_seconds(stat: str) -> float:
    """CPU seconds all cores spent doing anything but idling, from the `cpu` line of /proc/stat."""
    values = [int(v) for v in stat.splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS  # guest time is already inside user time


def cpu_pressure_seconds(pressure: str) -> float:
    """Seconds in which some runnable task waited for a core, from the `some` line of /proc/pressure/cpu (PSI):
    how often the machine itself was the bottleneck."""
    for line in pressure.splitlines():
        if line.startswith("some "):
            for item in line.split()[1:]:
                key, _, value = item.partition("=")
                if key == "total":
                    return int(value) / 1_000_000
    return 0.0


def postgres_database(title: str) -> str | None:
    """The database a Postgres process works for, from its process title; None for the server's own background
    processes (checkpointer, WAL writer, ...), which work for every database."""
    for pattern in (_CLIENT_BACKEND, _AUTOVACUUM_WORKER):
        match = pattern.match(title)
        if match:
            return match.group("db")
    return None


@dataclass(frozen=True)
class ProcessInfo:
    stat: ProcStat
    title: str  # /proc/<pid>/cmdline with NULs as spaces
    rss_bytes: int


Selector = Callable[[ProcessInfo], bool]


def in_session(session: int) -> Selector:
    return lambda info: info.stat.session == session


def is_process(pid: int) -> Selector:
    return lambda info: info.stat.pid == pid


def postgres_serving(database: str) -> Selector:
    """The server's background processes and the backends of `database`."""

    def select(info: ProcessInfo) -> bool:
        if info.stat.comm not in ("postgres", "postmaster"):
            return False
        served = postgres_database(info.title)
        return served is None or served == database

    return select


def named(comm: str) -> Selector:
    return lambda info: info.stat.comm == comm


@dataclass(frozen=True)
class PartUsage:
    """One part at one moment: CPU seconds used since sampling began, resident memory of all its processes and of
    the largest one, and how many processes it had."""

    cpu_seconds: float
    rss_bytes: int
    largest_rss_bytes: int
    processes: int


@dataclass
class PartMeter:
    """Accumulates a part's CPU over its processes between samples (a process seen for the first time counts
    from zero only when it started after the first sample; before that, its earlier CPU is the baseline)."""

    selector: Selector
    cpu_seconds: float = 0.0
    _last: dict[int, int] = field(default_factory=dict)
    _started: bool = False

    def update(self, processes: Iterable[ProcessInfo]) -> PartUsage:
        mine = [info for info in processes if self.selector(info)]
        current = {info.stat.pid: info.stat.cpu_ticks for info in mine}
        self.cpu_seconds += ticks_since(self._last, current, new_count_in_full=self._started) / CLOCK_TICKS
        self._last, self._started = current, True
        rss = [info.rss_bytes for info in mine]
        return PartUsage(self.cpu_seconds, sum(rss), max(rss, default=0), len(mine))


def ticks_since(previous: Mapping[int, int], current: Mapping[int, int], *, new_count_in_full: bool) -> int:
    """CPU ticks used between two samples of per-process totals. A process that is new in `current` started in
    between (all its ticks count) unless this is the first sample; one that vanished is not counted again."""
    used = 0
    for pid, ticks in current.items():
        if pid in previous:
            used += max(ticks - previous[pid], 0)
        elif new_count_in_full:
            used += ticks
    return used


def read_processes(proc: Path = PROC) -> list[ProcessInfo]:
    """Every process this user may read, at this moment (processes that exit while being read are skipped)."""
    found: list[ProcessInfo] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = parse_stat(pid, (entry / "stat").read_text())
            rss = parse_vmrss_bytes((entry / "status").read_text())
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError, ValueError):
            continue
        found.append(ProcessInfo(stat, title, rss))
    return found
