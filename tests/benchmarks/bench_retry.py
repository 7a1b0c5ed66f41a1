"""Retry queue benchmark: due retries moved per second.

    python -m tests.benchmarks.bench_retry [--items 20000] [--batch 300] [--redis-url URL] [--skip-kafka]

Starts a private redis-server (or uses --redis-url, on throwaway keys it deletes afterwards). Phase 1 schedules
--items retries (one Lua call each, `--concurrency` at a time). Phase 2 drains them with claim_due + ack alone
(the Redis side of a round). Phase 3 schedules them again and runs the real dispatcher loop against a local
Apache Kafka broker, timing until the queue and the in-flight set are both empty (claim → publish → ack).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from redis.asyncio import Redis

from devstack.kafka import KafkaBroker
from payment_domain.topics import Topic
from payment_infrastructure.kafka.admin import create_topics
from payment_infrastructure.kafka.producer import KafkaEventPublisher
from payment_infrastructure.kafka.settings import KafkaSettings
from payment_infrastructure.redis.retry_queue import RedisRetryQueue
from payment_infrastructure.redis.retry_settings import RetrySettings
from services.payment_consumers.retry_dispatcher import run_retry_dispatcher
from tests.fakes_retry import retry_envelope
from tests.fixtures.ports import wait_until
from tests.fixtures.redis import start_redis_server


async def _schedule(queue: RedisRetryQueue, items: int, concurrency: int, base: int) -> float:
    started = time.perf_counter()
    pending = iter(range(items))

    async def worker() -> None:
        for i in pending:
            await queue.schedule(retry_envelope(base + i, 1), delay_ms=0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def _drain_redis_only(queue: RedisRetryQueue, batch: int) -> tuple[int, float]:
    moved, started = 0, time.perf_counter()
    while claimed := await queue.claim_due(batch):
        await queue.ack([c.member for c in claimed])
        moved += len(claimed)
    return moved, time.perf_counter() - started


async def _drain_with_dispatcher(queue: RedisRetryQueue, settings: RetrySettings, items: int) -> float:
    broker = KafkaBroker(Path(tempfile.mkdtemp(prefix="bench-kafka-")))
    await broker.start()
    try:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, linger_ms=5)
        await create_topics(kafka, {Topic.PSP_CALL_REQUESTED.value: 48})
        async with KafkaEventPublisher.from_settings(kafka) as publisher:
            stop = asyncio.Event()
            started = time.perf_counter()
            task = asyncio.create_task(run_retry_dispatcher(queue, publisher, settings, stop))

            async def drained() -> bool:
                return await queue.sizes() == (0, 0)

            await wait_until(drained, timeout=600, interval=0.01, what="the retry queue to drain")
            elapsed = time.perf_counter() - started
            stop.set()
            await task
    finally:
        await broker.stop()
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--skip-kafka", action="store_true")
    args = parser.parse_args()

    server = None if args.redis_url else await start_redis_server()
    url = args.redis_url or (server.url if server else "")
    tag = uuid.uuid4().hex[:8]
    settings = RetrySettings(
        batch_size=args.batch,
        queue_key=f"bench:{tag}:payment_retry_queue",
        inflight_key=f"bench:{tag}:payment_retry_inflight",
        payloads_key=f"bench:{tag}:payment_retry_payloads",
    )
    redis = Redis.from_url(url, max_connections=args.concurrency + 4)
    queue = RedisRetryQueue.from_settings(redis, settings)
    try:
        seconds = await _schedule(queue, args.items, args.concurrency, base=10**9)
        print(f"schedule:            {args.items / seconds:>9,.0f} retries/s ({args.concurrency} concurrent callers)")
        moved, seconds = await _drain_redis_only(queue, args.batch)
        print(f"claim+ack (Redis):   {moved / seconds:>9,.0f} retries/s (batch {args.batch})")
        if not args.skip_kafka:
            await _schedule(queue, args.items, args.concurrency, base=2 * 10**9)
            seconds = await _drain_with_dispatcher(queue, settings, args.items)
            print(f"dispatcher (Kafka):  {args.items / seconds:>9,.0f} retries/s (claim → publish → ack)")
    finally:
        await redis.delete(settings.queue_key, settings.inflight_key, settings.payloads_key)
        await redis.aclose()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
