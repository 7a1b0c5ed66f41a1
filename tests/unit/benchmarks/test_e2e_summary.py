"""The headline figures of one run: rates over the measured window, latency of the orders created in it, CPU per
order per part, lag trend and memory."""

from __future__ import annotations

import math

import pytest

from tests.benchmarks.e2e_figures import Order, Request, Window
from tests.benchmarks.e2e_summary import Run, Sample, Settings, summarise
from tests.benchmarks.proc_usage import PartUsage

SETTINGS = Settings(
    scenario="BEST_PSP_EVER", rate=2, duration=10, warmup=2, sellers=(2, 2), drain_timeout=30, vus=2, max_vus=8
)


def _sample(at: float, cpu: float, lag: int, rss: int = 100, busy: float = 0.0, pressure: float = 0.0) -> Sample:
    return Sample(
        at=at,
        lag={"g": lag},
        outbox_backlog=lag // 2,
        in_flight=0,
        retry_queue=0,
        parts={"api": PartUsage(cpu, rss, rss, 1)},
        machine_busy_seconds=busy,
        cpu_pressure_seconds=pressure,
    )


def _run(orders: list[Order]) -> Run:
    # Load from t=100 to t=112: 2 s warm-up, measured window [102, 112); two payments a second, one shed at 105.
    requests = [Request(100 + i / 2, 202, 5.0, 2) for i in range(24)] + [Request(105.2, 429, 1.0, 2)]
    # The API uses 0.1 core, the machine 0.5, tasks wait for a core 80 % of the time; lag rises 1 message a
    # second in the 2nd half.
    samples = [
        _sample(
            at,
            cpu=0.1 * (at - 95),
            lag=max(int(at) - 107, 0),
            rss=100 + int(at),
            busy=0.5 * (at - 95),
            pressure=0.8 * (at - 95),
        )
        for at in range(95, 116)
    ]
    return Run(
        settings=SETTINGS,
        requests=requests,
        orders=orders,
        statuses={"SUCCESSFUL_FINAL": sum(o.final is not None for o in orders)},
        samples=samples,
        load=Window(100.0, 112.0),
        drain_end=115.0,
    )


def test_rates_are_over_the_measured_window_without_the_warm_up() -> None:
    orders = [Order(100 + i / 4, 100 + i / 4 + 0.5) for i in range(48)]
    summary = summarise(_run(orders))
    assert summary.measured_seconds == 10
    assert summary.accepted_per_s == pytest.approx(2.0)
    assert summary.accepted_orders_per_s == pytest.approx(4.0)
    assert summary.sent_per_s == pytest.approx(2.1)
    assert summary.shed == 1
    assert summary.errors == 0
    # finals at 100.5 .. 112.25: those in [102, 112) are i = 6 .. 45
    assert summary.settled_orders_per_s == pytest.approx(4.0)
    assert summary.latency_s[50] == pytest.approx(0.5)
    assert summary.orders_final == summary.orders_total == 48
    assert summary.drain_seconds == pytest.approx(0.25)


def test_cpu_per_order_is_the_parts_cpu_from_the_window_start_to_the_drain_end_over_orders_settled_then() -> None:
    orders = [Order(100 + i / 4, 100 + i / 4 + 0.5) for i in range(48)]
    (api,) = summarise(_run(orders)).parts
    # CPU 102 → 115 at 0.1 core: 1.3 s; orders final in [102, 115): i = 6 .. 47, 42 orders.
    assert api.cpu_seconds == pytest.approx(1.3)
    assert api.cpu_ms_per_order == pytest.approx(1300 / 42)
    assert api.cores_under_load == pytest.approx(0.1)
    assert api.cores_idle == pytest.approx(0.1)
    assert (api.rss_at_start, api.rss_at_end, api.largest_rss_bytes) == (202, 212, 215)


def test_lag_trend_and_the_machine_beside_our_parts() -> None:
    summary = summarise(_run([Order(103.0, 103.1)]))
    assert summary.lag_trend_per_s == pytest.approx(1.0)
    assert summary.lag_max == 4  # samples 102 .. 111 inside the window
    assert summary.lag_at_load_end == 5  # the sample at 112 is the load's end
    assert summary.machine_cores_under_load == pytest.approx(0.5)
    assert summary.others_cores_under_load == pytest.approx(0.4)
    assert summary.machine_cores_idle == pytest.approx(0.5)
    assert summary.others_cores_idle == pytest.approx(0.4)
    assert summary.cpu_pressure_under_load == pytest.approx(0.8)
    assert summary.lag_by_group_at_load_end == {"g": 5}


def test_orders_never_final_leave_no_drain_time_and_an_infinite_tail() -> None:
    orders = [Order(103.0, 103.2), Order(104.0, None)]
    summary = summarise(_run(orders))
    assert summary.drain_seconds is None
    assert summary.orders_final == 1
    assert summary.latency_s[50] == math.inf  # interpolates halfway to an order that never finished
    assert summary.latency_s[95] == math.inf
