"""The retry dispatcher loop (payment-consumers): due retries → payment_order_psp_call_requested_topic.

Paced by the queue, not by a fixed poll (the original ticked every 5 s, adding up to 5 s to every retry): after a
round it asks Redis how long until the earliest item is due and sleeps that long, never more than `max_idle_ms`
so an item scheduled earlier than the known next one (or by another pod) is still picked up promptly. A full
round is followed at once by another. Expired in-flight items are reclaimed on a timer of their own, the first time
at start (whatever a crashed predecessor left). Every pod may run these: claims are atomic, so pods never share an
item. A failed round (Redis or broker down) backs off, doubling up to `failure_max_backoff_ms`. Both run on the
runtime's paced loop (`payment_infrastructure.runtime`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import structlog

from payment_application.dispatch_retries import DispatchRetries
from payment_application.ports.publisher import EventPublisher
from payment_application.ports.retry_queue import ClaimedRetry, RetryQueue
from payment_application.relay_report import RelayReport
from payment_domain.topics import Topic
from payment_infrastructure.redis.retry_metrics import (
    redis_retry_batch_size,
    redis_retry_dispatch_batch_seconds,
    redis_retry_events_total,
    redis_retry_inflight_size,
    redis_retry_reclaimed_total,
    redis_retry_zset_size,
)
from payment_infrastructure.redis.retry_settings import RetrySettings
from payment_infrastructure.runtime.pacing import BUSY, FAILED, Pacing, Round, Worker, every, paced

log = structlog.get_logger(__name__)

RETRY_TOPIC = Topic.PSP_CALL_REQUESTED.value
MAX_LOGGED_MEMBERS = 50


def retry_workers(queue: RetryQueue, publisher: EventPublisher, settings: RetrySettings) -> dict[str, Worker]:
    """The relay and its reclaim timer. The caller starts and stops the publisher; stopping lets a round in
    progress finish (bounded by the publisher's delivery timeout)."""
    dispatch = DispatchRetries(queue, publisher)
    idle = settings.max_idle_ms / 1000
    pacing = Pacing(
        idle_min=idle, idle_max=idle, failure_min=idle, failure_max=max(settings.failure_max_backoff_ms / 1000, idle)
    )

    async def relay() -> Round:
        started = time.perf_counter()
        report = await dispatch.dispatch_batch(limit=settings.batch_size)
        _record(report, time.perf_counter() - started)
        if report.failures:
            return FAILED
        if report.busy:
            return BUSY
        due_in_ms = await queue.next_due_in_ms()
        return Round(due_in=None if due_in_ms is None else due_in_ms / 1000)

    return {
        "retry-dispatcher": paced("retry-dispatcher", relay, pacing),
        "retry-reclaim": every(
            "retry-reclaim",
            settings.reclaim_interval_ms / 1000,
            lambda: _reclaim_and_measure(dispatch, queue, settings),
        ),
    }


async def run_retry_dispatcher(
    queue: RetryQueue, publisher: EventPublisher, settings: RetrySettings, stop: asyncio.Event
) -> None:
    """Both retry workers until `stop` (for tools and tests that run the relay on its own)."""
    log.info("retry_dispatcher_started", batch_size=settings.batch_size, max_idle_ms=settings.max_idle_ms)
    async with asyncio.TaskGroup() as group:
        for worker in retry_workers(queue, publisher, settings).values():
            group.create_task(worker(stop))
    log.info("retry_dispatcher_stopped")


async def _reclaim_and_measure(dispatch: DispatchRetries, queue: RetryQueue, settings: RetrySettings) -> None:
    reclaimed = await dispatch.reclaim(visibility_timeout_ms=settings.visibility_timeout_ms)
    if reclaimed:
        redis_retry_reclaimed_total.inc(reclaimed)
        log.warning("retry_inflight_reclaimed", items=reclaimed, visibility_timeout_ms=settings.visibility_timeout_ms)
    queued, inflight = await queue.sizes()
    redis_retry_zset_size.set(queued)
    redis_retry_inflight_size.set(inflight)


def _record(report: RelayReport[ClaimedRetry], seconds: float) -> None:
    claimed = Counter(c.message.topic for c in report.claimed)
    redis_retry_batch_size.labels(RETRY_TOPIC).set(claimed.get(RETRY_TOPIC, 0))
    for topic, count in claimed.items():
        if topic != RETRY_TOPIC:
            redis_retry_batch_size.labels(topic).set(count)
        redis_retry_dispatch_batch_seconds.labels(topic).observe(seconds)
    for topic, count in Counter(c.message.topic for c in report.published).items():
        redis_retry_events_total.labels("processed", topic).inc(count)
    if not report.failures:
        return
    for topic, count in Counter(f.item.message.topic for f in report.failures).items():
        redis_retry_events_total.labels("failed", topic).inc(count)
    members = [f.item.member for f in report.failures]
    first = report.failures[0]
    log.warning(
        "retry_publish_failed",
        items=len(members),
        members=members[:MAX_LOGGED_MEMBERS],
        event_id=first.item.message.headers.event_id,
        topic=first.item.message.topic,
        error=repr(first.error),
        note="left in flight; back on the queue after the visibility timeout",
    )
