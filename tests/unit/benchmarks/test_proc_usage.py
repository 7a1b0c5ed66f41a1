"""Reading CPU and memory per part from /proc: the parsers, the Postgres split, and CPU summed per process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.proc_usage import (
    CLOCK_TICKS,
    PartMeter,
    ProcessInfo,
    ProcStat,
    cpu_pressure_seconds,
    in_session,
    machine_busy_seconds,
    parse_stat,
    parse_vmrss_bytes,
    postgres_database,
    postgres_serving,
    read_processes,
    ticks_since,
)

STAT = "4242 (python3 (api) x) S 1 4242 4242 0 -1 4194304 100 0 0 0 1500 250 0 0 20 0 3 0 12345 1000 2000"


def test_stat_fields_are_read_after_the_command_name_even_when_it_holds_parentheses() -> None:
    stat = parse_stat(4242, STAT)
    assert stat == ProcStat(pid=4242, comm="python3 (api) x", ppid=1, session=4242, cpu_ticks=1750)
    assert stat.cpu_seconds == pytest.approx(1750 / CLOCK_TICKS)


def test_vmrss_is_read_in_kilobytes_and_missing_means_zero() -> None:
    assert parse_vmrss_bytes("Name:\tpython\nVmRSS:\t  2048 kB\nVmSwap: 0 kB\n") == 2048 * 1024
    assert parse_vmrss_bytes("Name:\tkthreadd\n") == 0


def test_machine_busy_time_leaves_out_idle_and_iowait() -> None:
    stat = f"cpu  {CLOCK_TICKS * 3} 0 {CLOCK_TICKS} {CLOCK_TICKS * 50} {CLOCK_TICKS * 2} 0 0 0 0 0\ncpu0 ...\n"
    assert machine_busy_seconds(stat) == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("title", "database"),
    [
        ("postgres: 15/main: postgres payments_bench_ab12 127.0.0.1(50122) idle", "payments_bench_ab12"),
        ("postgres: postgres payments [local] idle in transaction", "payments"),
        ("postgres: 15/main: app payments ::1(4711) SELECT", "payments"),
        ("postgres: 15/main: autovacuum worker payments_bench_ab12", "payments_bench_ab12"),
        ("postgres: 15/main: checkpointer ", None),
        ("postgres: 15/main: walwriter ", None),
        ("/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main", None),
    ],
)
def test_a_postgres_process_title_names_its_database_unless_it_serves_them_all(
    title: str, database: str | None
) -> None:
    assert postgres_database(title) == database


def _info(
    pid: int, ticks: int, *, comm: str = "python", session: int = 1, title: str = "", rss: int = 0
) -> ProcessInfo:
    return ProcessInfo(ProcStat(pid, comm, 1, session, ticks), title, rss)


def test_postgres_of_a_database_is_its_backends_and_the_servers_background_processes() -> None:
    select = postgres_serving("mine")
    assert select(_info(1, 0, comm="postgres", title="postgres: 15/main: checkpointer "))
    assert select(_info(2, 0, comm="postgres", title="postgres: 15/main: u mine 127.0.0.1(1) idle"))
    assert not select(_info(3, 0, comm="postgres", title="postgres: 15/main: u theirs 127.0.0.1(2) idle"))
    assert not select(_info(4, 0, comm="python", title="postgres: 15/main: checkpointer "))


def test_ticks_since_counts_growth_new_processes_in_full_and_forgets_the_ones_that_left() -> None:
    previous = {1: 100, 2: 50}
    current = {1: 130, 3: 20}
    assert ticks_since(previous, current, new_count_in_full=True) == 30 + 20
    assert ticks_since(previous, current, new_count_in_full=False) == 30


def test_a_part_meter_starts_from_zero_and_adds_each_process_cpu_since_the_last_sample() -> None:
    meter = PartMeter(in_session(7))
    first = meter.update([_info(70, 1000, session=7, rss=10), _info(80, 999, session=8, rss=500)])
    assert first.cpu_seconds == 0.0
    assert (first.rss_bytes, first.largest_rss_bytes, first.processes) == (10, 10, 1)
    # pid 70 used 50 more ticks; pid 71 (a worker) started meanwhile with 25; pid 80 is another part's.
    second = meter.update(
        [_info(70, 1050, session=7, rss=10), _info(71, 25, session=7, rss=30), _info(80, 5000, session=8)]
    )
    assert second.cpu_seconds == pytest.approx(75 / CLOCK_TICKS)
    assert (second.rss_bytes, second.largest_rss_bytes, second.processes) == (40, 30, 2)
    # the worker exits: what it used is kept
    third = meter.update([_info(70, 1060, session=7, rss=10)])
    assert third.cpu_seconds == pytest.approx(85 / CLOCK_TICKS)


def test_read_processes_skips_what_is_not_a_process(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    process = tmp_path / "12"
    process.mkdir()
    (process / "stat").write_text(STAT.replace("4242 (", "12 (", 1))
    (process / "status").write_text("VmRSS:\t100 kB\n")
    (process / "cmdline").write_bytes(b"python\0-m\0services.payment_service\0")
    gone = tmp_path / "13"
    gone.mkdir()  # exited while being read: no files
    (info,) = read_processes(tmp_path)
    assert info.stat.pid == 12
    assert info.rss_bytes == 100 * 1024
    assert info.title == "python -m services.payment_service"


def test_cpu_pressure_is_the_some_total_in_seconds() -> None:
    pressure = "some avg10=22.31 avg60=65.17 avg300=67.43 total=3281104219\nfull avg10=0.00 total=0\n"
    assert cpu_pressure_seconds(pressure) == pytest.approx(3281.104219)
    assert cpu_pressure_seconds("") == 0.0
