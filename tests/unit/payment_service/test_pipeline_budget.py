"""Flow control from the pipeline's backlog: creates are admitted while the orders awaiting their first PSP answer
stay under the budget, counting what this process accepted since the last reading; a create past it is refused at
once with 503 `pipeline-behind` before the app (token check, body, write) runs. The budget follows Little's law on
each reading (the rate the pipeline shows times the target wait) between its bounds. A reading that failed or grew
old refuses nothing. (Over the whole real pipeline: tests/e2e/test_flow_control.py.)"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from prometheus_client import REGISTRY

from payment_application.ports.pipeline import BacklogReading
from services.payment_service.api.admission import AdmissionMiddleware, CreateAdmission
from services.payment_service.api.pipeline_budget import PipelineBudget
from services.payment_service.settings import AdmissionSettings
from tests.fixtures.ports import wait_until
from tests.unit.payment_service.test_create_admission import App, call, payments_route


class FakeBacklog:
    """Answers `count` orders queued for `wait` and `calling` more in a PSP call (or raises `error`); `gate`, when
    set, holds each reading until it is opened."""

    def __init__(self, count: int = 0, wait: float = 0.1) -> None:
        self.count = count
        self.calling = 0
        self.wait = wait
        self.error: Exception | None = None
        self.reads = 0
        self.limits: list[int] = []
        self.gate: asyncio.Event | None = None

    async def read(self, *, limit: int) -> BacklogReading:
        self.reads += 1
        self.limits.append(limit)
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        queued = min(self.count, limit)
        return BacklogReading(min(queued + self.calling, limit), queued, self.wait if queued else 0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def budget(backlog: FakeBacklog, clock: Clock, size: int = 10) -> PipelineBudget:
    return PipelineBudget(
        backlog,
        target_seconds=0.5,
        min_in_flight=1,
        max_in_flight=1,
        fixed=size,
        refresh_seconds=0.2,
        stale_after_seconds=3.0,
        monotonic=clock,
    )


def adaptive(backlog: FakeBacklog, clock: Clock) -> PipelineBudget:
    return PipelineBudget(
        backlog,
        target_seconds=0.5,
        min_in_flight=20,
        max_in_flight=1_000,
        refresh_seconds=0.2,
        stale_after_seconds=3.0,
        monotonic=clock,
    )


async def test_creates_are_admitted_under_the_budget_and_refused_once_the_backlog_reaches_it() -> None:
    backlog, clock = FakeBacklog(count=9), Clock()
    pipeline = budget(backlog, clock)
    await pipeline.refresh()
    assert pipeline.admits()
    backlog.count = 10
    clock.now += 0.2
    await pipeline.refresh()
    assert pipeline.in_flight == 10
    assert not pipeline.admits()
    assert backlog.limits[-1] == 20  # a reading looks at twice the largest budget at most, never the whole table


async def test_orders_accepted_since_the_last_reading_count_until_the_next_reading_includes_them() -> None:
    backlog, clock = FakeBacklog(count=4), Clock()
    pipeline = budget(backlog, clock)
    await pipeline.refresh()
    pipeline.accepted(3)
    pipeline.accepted(3)
    assert pipeline.in_flight == 10
    assert not pipeline.admits()  # 4 read + 6 accepted here: at the budget before any new reading
    backlog.count = 10  # the reading now includes them
    await pipeline.refresh()
    assert pipeline.in_flight == 10
    backlog.count = 2  # the consumers caught up
    await pipeline.refresh()
    assert pipeline.in_flight == 2
    assert pipeline.admits()


async def test_what_is_accepted_while_a_reading_runs_stays_counted_after_it() -> None:
    backlog, clock = FakeBacklog(count=5), Clock()
    pipeline = budget(backlog, clock)
    backlog.gate = asyncio.Event()
    reading = asyncio.create_task(pipeline.refresh())
    await wait_until(lambda: _true(backlog.reads == 1), timeout=2, interval=0.001, what="the reading started")
    pipeline.accepted(2)  # may or may not be in the reading: counted again rather than missed
    backlog.gate.set()
    await reading
    assert pipeline.in_flight == 7


async def test_readings_happen_only_while_creates_arrive_at_most_one_at_a_time_and_at_most_every_refresh() -> None:
    backlog, clock = FakeBacklog(count=0), Clock()
    pipeline = budget(backlog, clock)
    backlog.gate = asyncio.Event()
    assert pipeline.admits()  # no reading yet: admitted, and one is asked for
    assert pipeline.admits()
    await asyncio.sleep(0)
    assert backlog.reads == 1
    clock.now += 1.0
    assert pipeline.admits()
    await asyncio.sleep(0)
    assert backlog.reads == 1  # the first is still running: no second one beside it
    backlog.gate.set()
    await wait_until(lambda: _true(pipeline.fresh), timeout=2, interval=0.001, what="the reading landed")
    clock.now += 0.1
    assert pipeline.admits()
    await asyncio.sleep(0)
    assert backlog.reads == 1  # the last one was asked for 0.1 s ago: not yet
    clock.now += 0.2
    assert pipeline.admits()
    await wait_until(lambda: _true(backlog.reads == 2), timeout=2, interval=0.001, what="the next reading")
    await pipeline.close()


async def test_a_failed_or_old_reading_refuses_nothing_and_is_counted() -> None:
    backlog, clock = FakeBacklog(count=50), Clock()
    pipeline = budget(backlog, clock)
    await pipeline.refresh()
    assert not pipeline.admits()
    failures = REGISTRY.get_sample_value("payment_pipeline_backlog_read_failures_total") or 0.0
    backlog.error = ConnectionError("database gone")
    clock.now += 0.2
    assert not pipeline.admits()  # the failed read starts here; the last reading still stands
    await wait_until(
        lambda: _true((REGISTRY.get_sample_value("payment_pipeline_backlog_read_failures_total") or 0) > failures),
        timeout=2,
        interval=0.001,
        what="the failure counted",
    )
    clock.now += 3.0
    assert pipeline.admits()  # no reading for 3 s: the create's own write says whether the database is there


async def test_the_middleware_refuses_past_the_budget_with_pipeline_behind_before_the_app_runs() -> None:
    backlog, clock = FakeBacklog(count=10), Clock()
    pipeline = budget(backlog, clock)
    await pipeline.refresh()
    app = App()
    app.release.set()
    middleware = AdmissionMiddleware(
        app,
        admission=CreateAdmission(limit=5),
        pipeline=pipeline,
        route=payments_route(),
        method="POST",
        retry_after_seconds=1,
    )
    shed = REGISTRY.get_sample_value("http_requests_shed_total", {"reason": "pipeline_behind"}) or 0.0
    start, body = await call(middleware, "POST", "/payments")
    assert start["status"] == 503
    assert (b"retry-after", b"1") in start["headers"]
    problem = orjson.loads(body["body"])
    assert problem["type"].endswith("/pipeline-behind")
    assert "nothing was written" in problem["detail"]
    assert app.calls == 0
    assert REGISTRY.get_sample_value("http_requests_shed_total", {"reason": "pipeline_behind"}) == shed + 1
    assert [m.get("status") for m in await call(middleware, "GET", "/payments/pay-1")] == [202, None]  # not gated
    backlog.count = 3
    await pipeline.refresh()
    assert (await call(middleware, "POST", "/payments"))[0]["status"] == 202
    assert REGISTRY.get_sample_value("payment_pipeline_orders_in_flight") == 3


async def settle(pipeline: PipelineBudget, backlog: FakeBacklog, count: int, wait: float) -> int:
    """The budget once the same reading has been seen for a while (the rate is smoothed over readings)."""
    backlog.count, backlog.wait = count, wait
    for _ in range(30):
        await pipeline.refresh()
    return pipeline.budget


async def test_the_budget_is_the_rate_the_readings_show_times_the_target_wait_within_its_bounds() -> None:
    backlog, clock = FakeBacklog(), Clock()
    pipeline = adaptive(backlog, clock)
    await pipeline.refresh()
    assert pipeline.budget == 1_000  # nothing has waited yet: no evidence of a shortage
    # Settling ~400 orders/s: 200 in flight keep the wait at the 0.5 s target.
    assert await settle(pipeline, backlog, 100, 0.25) in (200, 201)  # (rounded up)
    assert pipeline.admits()
    # A slow PSP: ~200 orders/s, and the oldest already wait 1.5 s.
    assert await settle(pipeline, backlog, 300, 1.5) in (100, 101)
    assert not pipeline.admits()
    # The consumers stopped: the floor, so that a few stuck orders never close the door.
    assert await settle(pipeline, backlog, 300, 60.0) == 20
    assert not pipeline.admits()
    backlog.count = 5  # a handful stuck, nothing else waiting: still admitted
    await pipeline.refresh()
    assert pipeline.admits()
    assert await settle(pipeline, backlog, 900, 0.1) == 1_000  # a fast pipeline: the ceiling
    assert REGISTRY.get_sample_value("payment_pipeline_in_flight_budget") == 1_000
    assert REGISTRY.get_sample_value("payment_pipeline_wait_p95_seconds") == 0.1


async def test_one_reading_out_of_line_moves_the_budget_only_part_of_the_way() -> None:
    backlog, clock = FakeBacklog(), Clock()
    pipeline = adaptive(backlog, clock)
    assert await settle(pipeline, backlog, 100, 0.25) in (200, 201)
    backlog.count, backlog.wait = 100, 2.5  # one burst of slow answers: the instant rate says 40 orders/s
    await pipeline.refresh()
    assert 100 < pipeline.budget < 200


async def test_a_queue_that_keeps_up_lets_the_budget_grow_instead_of_holding_it_where_it_was_sized() -> None:
    backlog, clock = FakeBacklog(), Clock()
    pipeline = adaptive(backlog, clock)
    assert await settle(pipeline, backlog, 20, 0.5) == 20  # a slow spell: 40 orders/s, the floor
    backlog.count = 0  # nothing queued: the pipeline takes all it is given, which shows no limit
    await pipeline.refresh()
    assert pipeline.budget == 25
    # Ten orders waiting 0.1 s (a fifth of the target) are the pipeline's own latency, not its rate: 100 orders/s
    # by Little's law would hold the budget at 50, and what one process accepts between readings would fill it.
    assert await settle(pipeline, backlog, 10, 0.1) == 1_000
    # Once the orders wait past half the target, Little's law sizes the budget again, within a few readings.
    backlog.count, backlog.wait = 300, 1.5
    for _ in range(8):
        await pipeline.refresh()
    assert pipeline.budget < 200
    assert await settle(pipeline, backlog, 300, 1.5) in (100, 101)


async def test_orders_in_a_psp_call_are_not_queueing_but_count_toward_the_ceiling() -> None:
    backlog, clock = FakeBacklog(), Clock()
    pipeline = adaptive(backlog, clock)
    # A PSP that makes a fifth of the calls wait out their timeout: 150 orders in calls, 100 queued for 0.25 s.
    backlog.calling = 150
    assert await settle(pipeline, backlog, 100, 0.25) in (200, 201)  # the queue's rate alone sizes the budget
    assert pipeline.queued == 100 and pipeline.in_flight == 250
    assert pipeline.admits()
    backlog.calling = 900  # but no more than max_in_flight await a first answer, in a call or not
    await pipeline.refresh()
    assert pipeline.in_flight == 1_000
    assert not pipeline.admits()
    assert REGISTRY.get_sample_value("payment_pipeline_orders_queued") == 100
    assert REGISTRY.get_sample_value("payment_pipeline_orders_in_flight") == 1_000


def test_admission_settings_are_checked() -> None:
    assert AdmissionSettings(in_flight_budget=42).in_flight_budget == 42
    with pytest.raises(ValueError, match="refresh_seconds must be below"):
        AdmissionSettings(refresh_seconds=5, stale_after_seconds=3)
    with pytest.raises(ValueError, match="min_in_flight must be at most"):
        AdmissionSettings(min_in_flight=10, max_in_flight=5)


async def _true(value: bool) -> bool:
    return value
