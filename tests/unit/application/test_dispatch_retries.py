"""DispatchRetries with hand-written fakes: what is acked, what stays in flight, what comes back."""

from __future__ import annotations

import pytest

from payment_application.dispatch_retries import DispatchRetries
from tests.fakes_outbox import FakePublisher
from tests.fakes_retry import FakeRetryQueue, message_of, retry_envelope

VISIBILITY_MS = 30_000


async def _queue_with(*orders: int, delay_ms: int = 0) -> FakeRetryQueue:
    queue = FakeRetryQueue()
    for order in orders:
        assert await queue.schedule(retry_envelope(order, 1), delay_ms=delay_ms)
    return queue


async def test_acknowledged_items_are_acked_and_leave_the_queue_for_good() -> None:
    queue, publisher = await _queue_with(101, 102), FakePublisher()

    report = await DispatchRetries(queue, publisher).dispatch_batch(limit=10)

    assert (len(report.published), report.sent) == (2, 2)
    assert sorted(queue.acked) == ["101:1", "102:1"]
    assert await queue.sizes() == (0, 0)


async def test_the_stored_envelope_is_published_keyed_by_payment_order_id() -> None:
    envelope = retry_envelope(555, 3)
    queue, publisher = FakeRetryQueue(), FakePublisher()
    await queue.schedule(envelope, delay_ms=0)

    await DispatchRetries(queue, publisher).dispatch_batch(limit=10)

    assert publisher.published == [message_of(envelope)]
    assert publisher.published[0].key == "555"
    assert publisher.published[0].topic == "payment_order_psp_call_requested_topic"


async def test_publish_failures_stay_in_flight_and_only_the_successes_are_acked() -> None:
    queue, publisher = await _queue_with(201, 202, 203), FakePublisher()
    publisher.failing_keys = {"202"}

    report = await DispatchRetries(queue, publisher).dispatch_batch(limit=10)

    assert [c.member for c in report.published] == ["201:1", "203:1"]
    assert [f.item.member for f in report.failures] == ["202:1"]
    assert isinstance(report.failures[0].error, ConnectionError)
    assert sorted(queue.acked) == ["201:1", "203:1"]
    assert list(queue.inflight) == ["202:1"]
    assert queue.queued == {}


async def test_a_failed_item_is_not_claimed_again_before_the_visibility_timeout() -> None:
    queue, publisher = await _queue_with(301), FakePublisher()
    publisher.failing_keys = {"301"}
    dispatch = DispatchRetries(queue, publisher)
    await dispatch.dispatch_batch(limit=10)
    publisher.failing_keys = set()

    queue.now_ms += VISIBILITY_MS
    assert await dispatch.reclaim(visibility_timeout_ms=VISIBILITY_MS) == 0
    assert len((await dispatch.dispatch_batch(limit=10)).published) == 0

    queue.now_ms += 1
    assert await dispatch.reclaim(visibility_timeout_ms=VISIBILITY_MS) == 1
    assert len((await dispatch.dispatch_batch(limit=10)).published) == 1
    assert [m.key for m in publisher.published] == ["301"]
    assert await queue.sizes() == (0, 0)


async def test_a_publisher_that_raises_leaves_the_whole_batch_in_flight() -> None:
    queue, publisher = await _queue_with(401, 402), FakePublisher()
    publisher.raises = RuntimeError("publisher bug")

    with pytest.raises(RuntimeError, match="publisher bug"):
        await DispatchRetries(queue, publisher).dispatch_batch(limit=10)

    assert queue.acked == []
    assert sorted(queue.inflight) == ["401:1", "402:1"]


async def test_nothing_due_means_no_publish_call() -> None:
    queue, publisher = await _queue_with(501, delay_ms=1_000), FakePublisher()

    report = await DispatchRetries(queue, publisher).dispatch_batch(limit=10)

    assert report.claimed == () and not report.busy
    assert publisher.batches == 0
    assert await queue.sizes() == (1, 0)


async def test_a_round_takes_at_most_limit_items_earliest_first_and_reports_full() -> None:
    queue, publisher = FakeRetryQueue(), FakePublisher()
    for order, delay in ((601, 30), (602, 10), (603, 20)):
        await queue.schedule(retry_envelope(order, 1), delay_ms=delay)
    queue.now_ms += 100

    report = await DispatchRetries(queue, publisher).dispatch_batch(limit=2)

    assert report.busy
    assert [m.key for m in publisher.published] == ["602", "603"]
    assert list(queue.queued) == ["601:1"]
