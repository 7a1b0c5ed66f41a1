"""DispatchOutbox and its loop with hand-written fakes: settle rules, pacing, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from payment_application.dispatch_outbox import DispatchOutbox
from payment_application.ports.publisher import EventHeaders, OutboundMessage
from payment_infrastructure.runtime.pacing import Pacing, Worker
from services.payment_service.outbox_relay import outbox_relay
from tests.fakes_outbox import FakeOutboxSignal, FakeOutboxStore, FakePublisher, RecordingObserver

LEASE = 30.0


def _dispatch(store: FakeOutboxStore, publisher: FakePublisher, batch_size: int = 10) -> DispatchOutbox:
    return DispatchOutbox(store, publisher, batch_size=batch_size, lease_seconds=LEASE)


def _loop(
    store: FakeOutboxStore,
    publisher: FakePublisher,
    signal: FakeOutboxSignal,
    observer: RecordingObserver,
    *,
    batch_size: int = 10,
    workers: int = 1,
    pauses: list[float] | None = None,
) -> Worker:
    async def pause(stop: asyncio.Event, seconds: float) -> None:
        if pauses is not None:
            pauses.append(seconds)

    return outbox_relay(
        _dispatch(store, publisher, batch_size),
        signal,
        observer,
        Pacing(idle_min=0.05, idle_max=0.3, failure_min=0.001, failure_max=0.004),
        workers=workers,
        sleep=pause,
    )


async def test_published_rows_are_marked_sent_and_carry_the_rows_key_value_and_headers() -> None:
    store, publisher = FakeOutboxStore(), FakePublisher()
    record = store.add("1001", topic="payment_order_created_topic", payload=b'{"eventId":"e"}')

    report = await _dispatch(store, publisher).dispatch_batch()

    assert (len(report.claimed), report.sent, report.released, report.lease_conflicts) == (1, 1, 0, 0)
    assert publisher.published == [
        OutboundMessage(
            topic="payment_order_created_topic",
            key="1001",
            value=b'{"eventId":"e"}',
            headers=EventHeaders(
                event_id=record.event_id,
                event_type="payment_order_created",
                trace_id=record.trace_id,
                parent_event_id=record.parent_event_id,
                aggregate_id="1001",
            ),
        )
    ]
    assert store.status(record.id) == "SENT"


async def test_an_empty_outbox_publishes_nothing() -> None:
    store, publisher = FakeOutboxStore(), FakePublisher()

    report = await _dispatch(store, publisher).dispatch_batch()

    assert report.claimed == ()
    assert publisher.batches == 0


async def test_failed_messages_are_released_for_a_retry_and_the_rest_marked_sent() -> None:
    store, publisher = FakeOutboxStore(), FakePublisher()
    ok, failing = store.add("1"), store.add("2")
    publisher.failing_keys = {"2"}

    report = await _dispatch(store, publisher).dispatch_batch()

    assert (len(report.claimed), report.sent, report.released) == (2, 1, 1)
    assert [f.item.id for f in report.failures] == [failing.id]
    assert isinstance(report.failures[0].error, ConnectionError)
    assert (store.status(ok.id), store.status(failing.id)) == ("SENT", "NEW")
    assert store.lease_of(failing.id) is None


async def test_rows_taken_over_by_another_dispatcher_count_as_lease_conflicts_and_stay_theirs() -> None:
    store, publisher = FakeOutboxStore(), FakePublisher()
    records = [store.add("1"), store.add("2")]
    thief: list[object] = []

    def steal(messages: Sequence[OutboundMessage]) -> None:
        thief.append(store.take_over(records))

    publisher.on_publish.append(steal)

    report = await _dispatch(store, publisher).dispatch_batch()

    assert (len(report.claimed), report.sent, report.lease_conflicts) == (2, 0, 2)
    assert {store.lease_of(r.id) for r in records} == set(thief)
    assert {store.status(r.id) for r in records} == {"NEW"}


async def test_a_cancelled_publish_gives_the_claim_back() -> None:
    store, publisher = FakeOutboxStore(), FakePublisher()
    record = store.add("1")
    publisher.gate = asyncio.Event()
    round_ = asyncio.create_task(_dispatch(store, publisher).dispatch_batch())
    await publisher.entered.wait()

    round_.cancel()
    with pytest.raises(asyncio.CancelledError):
        await round_

    assert store.status(record.id) == "NEW"
    assert store.lease_of(record.id) is None


async def test_the_next_event_of_an_order_waits_until_the_previous_one_is_sent() -> None:
    store, publisher = FakeOutboxStore(), FakePublisher()
    first, second = store.add("7"), store.add("7")
    publisher.failing_keys = {"7"}
    dispatch = _dispatch(store, publisher)

    failed = await dispatch.dispatch_batch()
    publisher.failing_keys = set()
    retried = await dispatch.dispatch_batch()
    then = await dispatch.dispatch_batch()

    assert [f.item.id for f in failed.failures] == [first.id]
    assert (len(retried.claimed), len(then.claimed)) == (1, 1)
    assert [m.value for m in publisher.published] == [first.payload, second.payload]


def test_a_batch_size_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        DispatchOutbox(FakeOutboxStore(), FakePublisher(), batch_size=0, lease_seconds=LEASE)


async def test_full_rounds_are_followed_at_once_and_a_partial_one_looks_again_within_the_idle_minimum() -> None:
    store, publisher = FakeOutboxStore(), FakePublisher()
    for n in range(25):
        store.add(str(n))
    stop = asyncio.Event()
    signal, observer = FakeOutboxSignal([False], stop=stop), RecordingObserver()

    await asyncio.wait_for(_loop(store, publisher, signal, observer)(stop), 5)

    assert [len(r.claimed) for r in observer.reports] == [10, 10, 5, 0]
    # No wait after a full batch; after the partial one at most idle_min (it may have unblocked an order's next
    # event), sooner on a wake-up; none came, so the idle wait after the empty round has doubled.
    assert signal.waits == [0.05, 0.1]
    assert signal.resets == 4  # every claim was preceded by a reset, so no wake-up is lost


async def test_after_a_wake_up_the_relay_lingers_before_its_round() -> None:
    store, publisher = FakeOutboxStore(), FakePublisher()
    stop = asyncio.Event()
    signal, pauses = FakeOutboxSignal([True], stop=stop), list[float]()
    relay = outbox_relay(
        _dispatch(store, publisher, 10),
        signal,
        RecordingObserver(),
        Pacing(idle_min=0.05, idle_max=0.3, linger=0.02),
        sleep=lambda _stop, seconds: _record(pauses, seconds),
    )

    await asyncio.wait_for(relay(stop), 5)

    assert pauses == [0.02]  # woken once: one linger, then the round


async def test_an_idle_loop_sleeps_longer_each_time_and_comes_back_at_once_when_woken() -> None:
    store, publisher = FakeOutboxStore(), FakePublisher()
    stop = asyncio.Event()
    signal = FakeOutboxSignal([False, False, False, True, False], stop=stop)

    await asyncio.wait_for(_loop(store, publisher, signal, RecordingObserver())(stop), 5)

    assert signal.waits == [0.05, 0.1, 0.2, 0.3, 0.05, 0.1]


async def test_a_failing_broker_is_backed_off_from_without_listening_to_wake_ups() -> None:
    store, publisher = FakeOutboxStore(), FakePublisher()
    record = store.add("1")
    publisher.failing_keys = {"1"}
    stop = asyncio.Event()
    signal, observer = FakeOutboxSignal(stop=stop), RecordingObserver(stop=stop, stop_after=4)
    pauses: list[float] = []

    await asyncio.wait_for(_loop(store, publisher, signal, observer, pauses=pauses)(stop), 5)

    assert [len(r.failures) for r in observer.reports] == [1, 1, 1, 1]
    assert pauses == [0.001, 0.002, 0.004, 0.004]
    assert signal.waits == []
    assert store.status(record.id) == "NEW"
    assert store.rows[record.id].record.publish_attempts == 4


async def test_a_round_that_raised_is_reported_and_the_loop_carries_on() -> None:
    store, publisher = FakeOutboxStore(), FakePublisher()
    record = store.add("1")
    store.claim_failures = [OSError("database restarting")]
    stop = asyncio.Event()
    signal, observer = FakeOutboxSignal(stop=stop), RecordingObserver()
    pauses: list[float] = []

    await asyncio.wait_for(_loop(store, publisher, signal, observer, pauses=pauses)(stop), 5)

    assert [str(e) for e in observer.errors] == ["database restarting"]
    assert pauses == [0.001]
    assert store.status(record.id) == "SENT"


async def test_stopping_lets_every_worker_finish_its_batch() -> None:
    store, publisher = FakeOutboxStore(), FakePublisher()
    records = [store.add(str(n)) for n in range(4)]
    publisher.gate = asyncio.Event()
    stop = asyncio.Event()
    loop = _loop(store, publisher, FakeOutboxSignal(stop=stop), RecordingObserver(), batch_size=2, workers=2)
    running = asyncio.create_task(loop(stop))
    for _ in range(1_000):
        if publisher.batches == 2:
            break
        await asyncio.sleep(0)
    assert publisher.batches == 2, "both workers should be publishing"

    stop.set()
    publisher.gate.set()
    await asyncio.wait_for(running, 5)

    assert {store.status(r.id) for r in records} == {"SENT"}
    assert publisher.batches == 2


async def _record(pauses: list[float], seconds: float) -> None:
    pauses.append(seconds)
