"""The faults: each an async function that does its damage to a running ChaosStack, waits out its outage (a length
that is the fault's own parameter) and returns once the damage is repaired or the system was left to repair it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from tests.chaos.invariants import CONSUMED_TOPICS
from tests.chaos.stack import ChaosStack, Service, poll
from tests.fixtures.private_postgres import PrivatePostgres
from tests.fixtures.redis import start_redis_server

# The PSP the load meets when no fault is on: every path (success, decline, transient error, timeout past the
# caller's 500 ms wait, pending answer) and each decided within 1.5 s, before the first status check is due.
BASELINE_PSP: dict[str, Any] = {
    "timeout_percent": 10,
    "timeout_duration_ms": 1_200,
    "latency": [{"name": "busy", "percent": 100, "min_ms": 10, "max_ms": 120}],
    "success_percent": 75,
    "retryable_percent": 10,
    "declined_percent": 10,
    "pending_percent": 5,
    "pending_resolve_min_ms": 300,
    "pending_resolve_max_ms": 1_200,
}
# A PSP that fails everything it is sent (transient errors) and one too slow for any call's budget.
FAILING_PSP: dict[str, Any] = {
    **BASELINE_PSP,
    "success_percent": 0,
    "retryable_percent": 100,
    "declined_percent": 0,
    "pending_percent": 0,
}
DEGRADED_PSP: dict[str, Any] = {"timeout_duration_ms": 3_000}
# A third of new charges (and refunds) executed, then answered 503: a proxy whose upstream reset after the PSP charged.
CHARGED_THEN_503_PSP: dict[str, Any] = {**BASELINE_PSP, "charged_then_unavailable_percent": 30}
POISON_KEY = b"chaos-poison"
COPY_HEADER = "chaos-copy"  # marks the records the duplicating fault wrote, so that it never copies a copy
KAFKA_SESSION_TIMEOUT_S = 6.0  # PAYMENTS_CONSUMER__SESSION_TIMEOUT_MS in tests/chaos/stack.py
RECOVER_WITHIN_S = 90.0


@dataclass
class FaultLog:
    """What the faults did, for the report: injected faults by name, and the poison records by topic."""

    injected: list[str] = field(default_factory=list)
    poison: dict[str, bytes] = field(default_factory=dict)


Inject = Callable[[ChaosStack, FaultLog], Awaitable[None]]


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Inject
    own_postgres: bool = False  # the fault restarts or crashes the server: the stack runs on a private one


async def _restarted(stack: ChaosStack, service: Service, starts_before: int) -> None:
    async def back() -> bool:
        return service.starts > starts_before and await service.ready()

    if not await poll(back, within=RECOVER_WITHIN_S):
        raise AssertionError(f"{service.name} not started again within {RECOVER_WITHIN_S}s\n{service.log_tail()}")


async def _up(service: Service) -> int:
    """Wait until the process is up and ready (a fault hits a working process, not one still starting); its starts."""
    if not await poll(service.ready, within=RECOVER_WITHIN_S):
        raise AssertionError(f"{service.name} not ready within {RECOVER_WITHIN_S}s\n{service.log_tail()}")
    return service.starts


def _signalled(part: str, signum: signal.Signals, name: str) -> Fault:
    """Signal a service process that is up; the supervisor starts it again; done once the new one is ready."""

    async def inject(stack: ChaosStack, log: FaultLog) -> None:
        service: Service = getattr(stack, part)
        async with service.fault_lock:
            starts = await _up(service)
            service.signal(signum)
            log.injected.append(name)
            await _restarted(stack, service, starts)

    return Fault(name, inject)


def kill9(part: str) -> Fault:
    return _signalled(part, signal.SIGKILL, f"kill -9 {part}")


def sigterm(part: str) -> Fault:
    return _signalled(part, signal.SIGTERM, f"SIGTERM {part}")


async def _kill9_kafka(stack: ChaosStack, log: FaultLog) -> None:
    async with stack.broker_lock:
        await _kill9_kafka_once(stack, log)


async def _kill9_kafka_once(stack: ChaosStack, log: FaultLog) -> None:
    pid = stack.broker.pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    log.injected.append("kill -9 kafka")

    async def dead() -> bool:
        return not stack.broker.running

    await poll(dead, within=10)
    await asyncio.sleep(3.0)  # the outage: the broker stays down this long before it is started again
    await stack.broker.start(within=RECOVER_WITHIN_S)


async def _pause_kafka(stack: ChaosStack, log: FaultLog) -> None:
    async with stack.broker_lock:
        pid = stack.broker.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        log.injected.append("SIGSTOP kafka")
        try:
            await asyncio.sleep(KAFKA_SESSION_TIMEOUT_S + 6.0)  # the outage: longer than the consumers' session timeout
        finally:
            os.kill(pid, signal.SIGCONT)


def _cut(which: str, seconds: float) -> Fault:
    """Drop every connection through the proxy of `which` ("postgres" or "redis") and refuse new ones for `seconds`."""
    name = f"{'Postgres' if which == 'postgres' else 'Redis'} cut {seconds:g}s"

    async def inject(stack: ChaosStack, log: FaultLog) -> None:
        proxy = stack.postgres_proxy if which == "postgres" else stack.redis_proxy
        await stack.proxies.sever(proxy)
        log.injected.append(name)
        try:
            await asyncio.sleep(seconds)  # the outage: connections refused this long
        finally:
            await stack.proxies.restore(proxy)

    return Fault(name, inject)


def cut_postgres(seconds: float) -> Fault:
    return _cut("postgres", seconds)


def cut_redis(seconds: float) -> Fault:
    return _cut("redis", seconds)


def _private_server(stack: ChaosStack) -> PrivatePostgres:
    if stack.postgres is None:
        raise RuntimeError("a Postgres restart or crash needs a stack on its own server (Fault.own_postgres)")
    return stack.postgres


async def _restart_postgres(stack: ChaosStack, log: FaultLog) -> None:
    """`pg_ctl restart -m fast`: every backend terminated mid-transaction, a clean shutdown, the server back."""
    server = _private_server(stack)
    async with stack.postgres_lock:
        log.injected.append("Postgres restart")
        await server.restart(within=RECOVER_WITHIN_S)


async def _crash_postgres(stack: ChaosStack, log: FaultLog) -> None:
    """SIGKILL to the postmaster and its backends, then a start: crash recovery replays the WAL, and the services
    must reconnect by themselves."""
    server = _private_server(stack)
    async with stack.postgres_lock:
        server.crash()
        log.injected.append("Postgres crash")
        await server.start(within=RECOVER_WITHIN_S)


async def _flush_redis(stack: ChaosStack, log: FaultLog) -> None:
    """The test's own redis-server (nobody else's data): the retry queue and the id counters are gone."""
    client = Redis.from_url(stack.redis_url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    log.injected.append("Redis FLUSHALL")


def restart_redis(*, keep_data: bool) -> Fault:
    """Stop the test's redis-server and start a new one on its port: every connection drops, and the new server
    is empty (no persistence) or, with `keep_data`, holds what the old one held when its keys were dumped just before
    the stop (as an RDB snapshot would give it back: a write between the dump and the stop is lost, as after one)."""
    name = f"Redis restart {'with' if keep_data else 'without'} its data"

    async def inject(stack: ChaosStack, log: FaultLog) -> None:
        saved: list[tuple[bytes, int, bytes]] = []
        if keep_data:
            client = Redis.from_url(stack.redis_url)
            try:
                async for key in client.scan_iter(count=1_000):
                    dumped, ttl = await client.dump(key), await client.pttl(key)
                    if dumped is not None:
                        saved.append((key, max(ttl, 0), dumped))
            finally:
                await client.aclose()
        old = stack.redis
        await asyncio.to_thread(old.stop)
        log.injected.append(name)
        await asyncio.sleep(1.0)  # the outage: nothing listens on the port this long
        stack.redis = await start_redis_server(port=old.port)
        if saved:
            client = Redis.from_url(stack.redis_url)
            try:
                for key, ttl, dumped in saved:
                    await client.restore(key, ttl, dumped, replace=True)
            finally:
                await client.aclose()

    return Fault(name, inject)


def duplicate_deliveries(seconds: float) -> Fault:
    """For `seconds`, every record that lands on a consumed topic is written once more behind it (same partition,
    key, value and headers, and a `chaos-copy` header so that a copy is never copied): each is delivered twice, as a
    producer's retry or a replayed partition would deliver it. The poison is left alone (each DLQ must hold exactly
    one record). Holds the broker lock: the broker is not killed or paused meanwhile."""
    name = f"every message twice {seconds:g}s"

    async def inject(stack: ChaosStack, log: FaultLog) -> None:
        async with stack.broker_lock:
            bootstrap = stack.broker.bootstrap_servers
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
            await consumer.start()
            await producer.start()
            try:
                partitions = [
                    TopicPartition(topic.value, partition)
                    for topic in CONSUMED_TOPICS
                    for partition in sorted(await producer.partitions_for(topic.value))
                ]
                consumer.assign(partitions)
                await consumer.seek_to_end(*partitions)
                log.injected.append(name)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + seconds
                while (left := deadline - loop.time()) > 0:
                    batches = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000), max_records=500)
                    for tp, records in batches.items():
                        for record in records:
                            headers = list(record.headers or ())
                            if record.key == POISON_KEY or any(key == COPY_HEADER for key, _ in headers):
                                continue
                            await producer.send(
                                tp.topic,
                                record.value,
                                key=record.key,
                                partition=tp.partition,
                                headers=[*headers, (COPY_HEADER, b"1")],
                            )
                await producer.flush()
            finally:
                await producer.stop()
                await consumer.stop()

    return Fault(name, inject)


def psp(name: str, profile: dict[str, Any], seconds: float, scenario: str = "NORMAL") -> Fault:
    async def inject(stack: ChaosStack, log: FaultLog) -> None:
        await stack.psp.set_scenario(scenario, **profile)
        log.injected.append(name)
        try:
            await asyncio.sleep(seconds)  # the PSP behaves so this long
        finally:
            await stack.psp.set_scenario("NORMAL", **BASELINE_PSP)

    return Fault(name, inject)


async def _poison(stack: ChaosStack, log: FaultLog) -> None:
    """One record on each consumed topic that no decoder accepts."""
    producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for topic in CONSUMED_TOPICS:
            value = f"\x00chaos poison for {topic.value} {time.time_ns()}".encode()
            await producer.send_and_wait(topic.value, value, key=POISON_KEY)
            log.poison[topic.value] = value
    finally:
        await producer.stop()
    log.injected.append(f"poison x{len(CONSUMED_TOPICS)}")


async def _wedge_consumers(stack: ChaosStack, log: FaultLog) -> None:
    """SIGUSR1: every poll loop of the consumers process hangs (tests/chaos/wedgeable_consumers.py); liveness must
    fail and the supervisor restart it."""
    service = stack.consumers
    async with service.fault_lock:
        starts = await _up(service)
        restarts = service.liveness_restarts
        service.signal(signal.SIGUSR1)
        log.injected.append("wedged poll loop")

        async def restarted_by_liveness() -> bool:
            return service.liveness_restarts > restarts

        if not await poll(restarted_by_liveness, within=RECOVER_WITHIN_S):
            raise AssertionError(f"the wedged consumers were not restarted by liveness within {RECOVER_WITHIN_S}s")
        await _restarted(stack, service, starts)


KILL9_KAFKA = Fault("kill -9 kafka", _kill9_kafka)
POSTGRES_RESTART = Fault("Postgres restart", _restart_postgres, own_postgres=True)
POSTGRES_CRASH = Fault("Postgres crash", _crash_postgres, own_postgres=True)
PAUSE_KAFKA = Fault("SIGSTOP kafka", _pause_kafka)
FLUSH_REDIS = Fault("Redis FLUSHALL", _flush_redis)
POISON = Fault("poison", _poison)
WEDGE = Fault("wedged poll loop", _wedge_consumers)
DUPLICATES = duplicate_deliveries(20)
REDIS_RESTART_EMPTY = restart_redis(keep_data=False)
REDIS_RESTART_KEPT = restart_redis(keep_data=True)
PSP_DEGRADED = psp("PSP DEGRADED 15s", DEGRADED_PSP, 15, scenario="DEGRADED")
PSP_FAILING = psp("PSP failing 10s", FAILING_PSP, 10)
PSP_CHARGED_THEN_503 = psp("PSP charges then 503 15s", CHARGED_THEN_503_PSP, 15)


async def carry_out(fault: Fault, stack: ChaosStack, log: FaultLog, errors: list[str]) -> None:
    """Run a fault; a fault that could not be carried out (or whose recovery failed) is an error of the run."""
    try:
        await fault.inject(stack, log)
    except Exception as error:  # reported with the scenario as a violation, never swallowed
        errors.append(f"{fault.name}: {type(error).__name__}: {error}")
