"""Composition root of payment-consumers: the only module of the deployable that knows the concrete adapters.

It reads settings, builds adapters and wires use cases, and hands out use cases, workers, upkeep jobs and readiness
checks, never an engine or a client, so nothing else can run SQL or talk to Redis behind a port's back.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.apply_psp_result import ApplyPspResult, ResultPolicy
from payment_application.check_payment_status import CheckPaymentStatus
from payment_application.dispatch_status_checks import DispatchStatusChecks
from payment_application.enqueue_psp_call import EnqueuePspCall
from payment_application.execute_psp_call import ExecutePspCall
from payment_application.execute_refund import ExecuteRefund, RefundCallPolicy
from payment_application.ports.clock import Clock
from payment_application.ports.parked_orders import ParkedOrders
from payment_application.ports.publisher import EventPublisher
from payment_application.ports.refund_redrives import RefundRedriveClaims
from payment_application.redrive_refunds import RedriveRefunds
from payment_application.redrive_stale_orders import RedriveStaleOrders
from payment_application.requery_parked_orders import RequeryParkedOrders
from payment_application.settle_parked_order import SettleParkedOrder
from payment_application.settle_refund import SettleRefund
from payment_application.verify_ledger import VerifyLedger
from payment_infrastructure.clock import AsyncioSleeper, SystemClock
from payment_infrastructure.kafka.admin import ensure_topics
from payment_infrastructure.kafka.consumer import PartitionOrderedConsumer
from payment_infrastructure.kafka.dead_letter_inspector import DeadLetterInspector
from payment_infrastructure.kafka.dead_letters import DeadLetterPublisher
from payment_infrastructure.kafka.event_sink import KafkaEventSink
from payment_infrastructure.kafka.producer import KafkaEventPublisher
from payment_infrastructure.kafka.settings import STOP_FLUSH_SECONDS, KafkaSettings
from payment_infrastructure.ledger_settings import LedgerSettings
from payment_infrastructure.observability.management import ReadinessCheck
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.inbox_purge import purge_processed_events
from payment_infrastructure.postgres.ledger_audit import PostgresLedgerAudit
from payment_infrastructure.postgres.parked_orders import PostgresParkedOrders
from payment_infrastructure.postgres.payment_order_store import (
    PostgresPaymentOrderClaims,
    PostgresResultStore,
    PostgresStatusCheckQueue,
)
from payment_infrastructure.postgres.pool_metrics import watch_engine
from payment_infrastructure.postgres.refund_redrives import PostgresRefundRedriveClaims
from payment_infrastructure.postgres.refund_store import PostgresRefundStore
from payment_infrastructure.postgres.settings import DatabaseSettings
from payment_infrastructure.postgres.stale_orders import PostgresStaleOrderClaims
from payment_infrastructure.psp.charged_record import SimulatorSummaryRecord
from payment_infrastructure.psp.gateway import AiohttpPspGateway
from payment_infrastructure.redis.client import create_redis
from payment_infrastructure.redis.retry_queue import RedisRetryQueue
from payment_infrastructure.redis.retry_settings import check_visibility_outlives_delivery
from payment_infrastructure.runtime.pacing import Pacing, every, paced
from payment_infrastructure.runtime.pacing import Worker as RuntimeWorker
from services.payment_consumers import rounds
from services.payment_consumers.groups import GROUPS
from services.payment_consumers.handlers import (
    ResultBatcher,
    enqueuer_handler,
    psp_call_handler,
    refund_handler,
    result_batcher,
    result_handler,
    status_check_handler,
)
from services.payment_consumers.retry_dispatcher import retry_workers
from services.payment_consumers.settings import ConsumersSettings, Worker

INBOX_PURGE_INTERVAL_SECONDS = 3_600
RECONCILIATION_GAUGE_INTERVAL_SECONDS = 15
RESULT_BATCHES_IN_FLIGHT = 4
"""Result transactions at once (each holds a pooled connection); answers arriving meanwhile wait to form the next."""
RESULT_BATCH_MAX = 16

log = structlog.get_logger(__name__)


class ManagedPublisher(EventPublisher, Protocol):
    """An event publisher with a lifecycle (KafkaEventPublisher, or a decorator around one)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Container:
    settings: ConsumersSettings
    clock: Clock
    publisher: ManagedPublisher
    dead_letters: DeadLetterPublisher
    psp: AiohttpPspGateway
    retry_queue: RedisRetryQueue
    enqueue: EnqueuePspCall
    execute: ExecutePspCall
    apply: ApplyPspResult
    apply_results: ResultBatcher
    """The result applier's answers, coalesced into `apply.apply_many` batches."""
    check_status: CheckPaymentStatus
    execute_refund: ExecuteRefund
    dispatch_status_checks: DispatchStatusChecks
    sweep_stale_orders: RedriveStaleOrders
    requery_parked_orders: RequeryParkedOrders
    sweep_stale_refunds: RedriveRefunds
    requery_parked_refunds: RedriveRefunds
    count_stale_refunds: Callable[[], Awaitable[int]]
    """REQUESTED refunds with no sign of progress for the sweeper's stale age (the alerting gauge)."""
    purge_inbox: Callable[[datetime], Awaitable[int]]
    """Inbox (processed events) rows recorded before the given time; returns how many went."""
    count_parked: Callable[[], Awaitable[int]]
    """How many orders are parked in NEEDS_RECONCILIATION (the alerting gauge)."""
    dependencies: dict[str, ReadinessCheck]
    """Postgres and Redis answer: reported by /health/ready, never failing it (shared by every pod)."""
    _engine: AsyncEngine = field(repr=False)
    _redis: Redis = field(repr=False)
    _claims: PostgresPaymentOrderClaims = field(repr=False)

    async def start(self) -> None:
        """Topics first (idempotent; the dev broker forgets them on restart), then the clients."""
        await ensure_topics(self.settings.kafka)
        await self.publisher.start()
        await self.dead_letters.start()
        await self.psp.start()

    async def close(self) -> None:
        """Once the workers stopped: each step bounded (`ConsumersSettings.stop_bound_seconds` adds them up), in an
        order that cuts nothing off that a later step needs; a step cut off leaves only work a redelivery redoes."""
        step = self.settings.process.close_step_timeout_seconds
        failures = [
            *await _together(
                self.apply_results.drain(step),
                self._claims.drain(step),
                _bounded("psp", self.psp.close(), self.settings.psp.drain_timeout_ms / 1000 + step),
            ),
            *await _together(
                _bounded("dead-letter-producer", self.dead_letters.stop(), STOP_FLUSH_SECONDS + step),
                _bounded("event-producer", self.publisher.stop(), STOP_FLUSH_SECONDS + step),
            ),
            *await _together(
                _bounded("redis", self._redis.aclose(), step), _bounded("postgres-pool", self._engine.dispose(), step)
            ),
        ]
        if failures:
            raise failures[0]


async def _together(*steps: Awaitable[object]) -> list[BaseException]:
    """Every step runs to its end, even when another fails; the failures, for the caller to raise once all ran."""
    return [
        outcome
        for outcome in await asyncio.gather(*steps, return_exceptions=True)
        if isinstance(outcome, BaseException)
    ]


async def _bounded(step: str, closing: Awaitable[None], seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await closing
    except TimeoutError:
        log.warning("shutdown_step_timed_out", step=step, seconds=seconds)


def build_container(
    settings: ConsumersSettings,
    *,
    clock: Clock | None = None,
    seed: int | None = None,
    publisher: ManagedPublisher | None = None,
) -> Container:
    """`publisher` replaces the Kafka publisher of the workers' own events (e.g. a decorated one)."""
    clock = clock or SystemClock()
    engine = create_engine(settings.db, application_name="payment-consumers")
    watch_engine("engine", engine)
    redis = create_redis(settings.redis)
    publisher = publisher or KafkaEventPublisher.from_settings(
        settings.kafka, client_id=f"{settings.kafka.client_id}-events"
    )
    events = KafkaEventSink(publisher)
    psp = AiohttpPspGateway(settings.psp)
    check_visibility_outlives_delivery(settings.retry, settings.kafka.delivery_timeout_seconds)
    retry_queue = RedisRetryQueue.from_settings(redis, settings.retry)
    policy = ResultPolicy(
        max_retries=settings.retry.max_retries,
        retry_base_ms=settings.retry.base_delay_ms,
        retry_max_ms=settings.retry.max_delay_ms,
        status_check_delays_seconds=settings.status_checks.delays_seconds,
    )

    async def postgres() -> None:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def redis_ping() -> None:
        await redis.ping()

    parked = PostgresParkedOrders(engine)
    refunds = PostgresRefundStore(
        engine, statement_timeout_ms=settings.db.statement_timeout_ms, lock_timeout_ms=settings.db.lock_timeout_ms
    )
    unsettled_refunds = PostgresRefundRedriveClaims(
        engine, statement_timeout_ms=settings.db.statement_timeout_ms, lock_timeout_ms=settings.db.lock_timeout_ms
    )
    refund_stale_after = timedelta(seconds=settings.sweeper.stale_after_seconds)
    refund_requery_every = timedelta(seconds=settings.requery.every_seconds)
    claims = PostgresPaymentOrderClaims(
        engine,
        statement_timeout_ms=settings.process.psp_claim_statement_timeout_ms,
        lock_timeout_ms=settings.process.psp_claim_lock_timeout_ms,
    )
    apply = ApplyPspResult(
        store=PostgresResultStore(
            engine,
            statement_timeout_ms=settings.db.statement_timeout_ms,
            lock_timeout_ms=settings.db.lock_timeout_ms,
        ),
        retries=retry_queue,
        policy=policy,
        randint=random.Random(seed).randint,
        consumer=GROUPS[Worker.RESULT_APPLIER][0],
        commission=settings.ledger.commission(),
    )
    return Container(
        settings=settings,
        clock=clock,
        publisher=publisher,
        dead_letters=DeadLetterPublisher.from_settings(settings.kafka, clock=clock),
        psp=psp,
        retry_queue=retry_queue,
        enqueue=EnqueuePspCall(events=events, clock=clock),
        execute=ExecutePspCall(
            claims=claims,
            psp=psp,
            events=events,
            clock=clock,
            monotonic=SystemClock(),
            lease_seconds=settings.process.psp_claim_lease_seconds,
            call_budget_seconds=settings.psp.call_budget_seconds,
        ),
        apply=apply,
        apply_results=result_batcher(apply, concurrency=RESULT_BATCHES_IN_FLIGHT, max_batch=RESULT_BATCH_MAX),
        check_status=CheckPaymentStatus(psp=psp, events=events, clock=clock),
        execute_refund=ExecuteRefund(
            refunds=refunds,
            psp=psp,
            settle=SettleRefund(refunds=refunds, clock=clock),
            sleeper=AsyncioSleeper(),
            randint=random.Random(seed).randint,
            policy=RefundCallPolicy(
                attempts=settings.retry.max_retries,
                base_ms=settings.retry.base_delay_ms,
                max_ms=settings.retry.max_delay_ms,
            ),
        ),
        dispatch_status_checks=DispatchStatusChecks(
            checks=PostgresStatusCheckQueue(engine),
            events=events,
            clock=clock,
            lease_seconds=settings.status_checks.lease_seconds,
        ),
        sweep_stale_orders=RedriveStaleOrders(
            orders=PostgresStaleOrderClaims(engine, statement_timeout_ms=settings.db.statement_timeout_ms),
            events=events,
            retries=retry_queue,
            clock=clock,
            stale_after=timedelta(seconds=settings.sweeper.stale_after_seconds),
        ),
        requery_parked_orders=RequeryParkedOrders(
            parked=parked,
            psp=psp,
            events=events,
            clock=clock,
            every=timedelta(seconds=settings.requery.every_seconds),
        ),
        sweep_stale_refunds=RedriveRefunds(
            claim=lambda limit: unsettled_refunds.claim_stale(stale_after=refund_stale_after, limit=limit),
            events=events,
            reason="stale",
        ),
        requery_parked_refunds=RedriveRefunds(
            claim=lambda limit: unsettled_refunds.claim_parked(every=refund_requery_every, limit=limit),
            events=events,
            reason="parked",
        ),
        count_stale_refunds=lambda: unsettled_refunds.count_stale(stale_after=refund_stale_after),
        purge_inbox=lambda before: purge_processed_events(engine, before=before),
        count_parked=parked.count,
        dependencies={"postgres": postgres, "redis": redis_ping},
        _engine=engine,
        _redis=redis,
        _claims=claims,
    )


@dataclass
class Reconciliation:
    """What `payments reconcile` needs: the parked orders and the settling use case, on a small pool of their own."""

    parked: ParkedOrders
    settle: SettleParkedOrder
    _engine: AsyncEngine = field(repr=False)

    async def close(self) -> None:
        await self._engine.dispose()


def build_reconciliation(settings: DatabaseSettings, ledger: LedgerSettings) -> Reconciliation:
    engine = create_engine(settings.model_copy(update={"pool_size": 1}), application_name="payments-reconcile")
    parked = PostgresParkedOrders(engine)
    store = PostgresResultStore(
        engine, statement_timeout_ms=settings.statement_timeout_ms, lock_timeout_ms=settings.lock_timeout_ms
    )
    settle = SettleParkedOrder(parked=parked, store=store, clock=SystemClock(), commission=ledger.commission())
    return Reconciliation(parked, settle, engine)


@dataclass
class RefundReconciliation:
    """What `payments reconcile refunds|refund` needs: the parked refunds and the executor asking the PSP once
    (a status query first, a call under the same key only if the PSP has none), on a small pool of their own."""

    parked: RefundRedriveClaims
    execute: ExecuteRefund
    _psp: AiohttpPspGateway = field(repr=False)
    _engine: AsyncEngine = field(repr=False)

    async def start(self) -> None:
        await self._psp.start()

    async def close(self) -> None:
        await self._psp.close()
        await self._engine.dispose()


def build_refund_reconciliation(settings: ConsumersSettings) -> RefundReconciliation:
    db = settings.db
    engine = create_engine(db.model_copy(update={"pool_size": 1}), application_name="payments-reconcile")
    refunds = PostgresRefundStore(
        engine, statement_timeout_ms=db.statement_timeout_ms, lock_timeout_ms=db.lock_timeout_ms
    )
    psp = AiohttpPspGateway(settings.psp)
    execute = ExecuteRefund(
        refunds=refunds,
        psp=psp,
        settle=SettleRefund(refunds=refunds, clock=SystemClock()),
        sleeper=AsyncioSleeper(),
        randint=random.Random().randint,
        policy=RefundCallPolicy(attempts=0, base_ms=settings.retry.base_delay_ms, max_ms=settings.retry.max_delay_ms),
    )
    claims = PostgresRefundRedriveClaims(
        engine, statement_timeout_ms=db.statement_timeout_ms, lock_timeout_ms=db.lock_timeout_ms
    )
    return RefundReconciliation(claims, execute, psp, engine)


@dataclass
class LedgerVerification:
    """What `payments ledger verify` needs: the check, on a small pool of its own."""

    verify: VerifyLedger
    _engine: AsyncEngine = field(repr=False)

    async def close(self) -> None:
        await self._engine.dispose()


def build_ledger_verification(settings: DatabaseSettings, *, psp_url: str | None) -> LedgerVerification:
    engine = create_engine(settings.model_copy(update={"pool_size": 1}), application_name="payments-ledger")
    psp = SimulatorSummaryRecord(psp_url) if psp_url else None
    return LedgerVerification(VerifyLedger(audit=PostgresLedgerAudit(engine), psp=psp), engine)


def build_dead_letter_inspector(bootstrap_servers: str, *, within: float) -> DeadLetterInspector:
    """What `payments dlq` and `payments topic` read and replay with."""
    return DeadLetterInspector(KafkaSettings(bootstrap_servers=bootstrap_servers), within=within)


def kafka_workers(container: Container) -> dict[str, PartitionOrderedConsumer]:
    """One partition-ordered consumer per Kafka worker this process runs, by worker name."""
    settings = container.settings
    by_worker = {
        Worker.ENQUEUER: enqueuer_handler(container.enqueue),
        Worker.PSP_CALL_EXECUTOR: psp_call_handler(container.execute),
        Worker.RESULT_APPLIER: result_handler(container.apply_results.submit),
        Worker.STATUS_CHECK_EXECUTOR: status_check_handler(container.check_status),
        Worker.REFUND_EXECUTOR: refund_handler(container.execute_refund),
    }
    return {
        worker.value: PartitionOrderedConsumer(
            settings.kafka,
            settings.consumer,
            group_id=GROUPS[worker][0],
            topics=[GROUPS[worker][1].value],
            handler=by_worker[worker],
            dead_letters=container.dead_letters,
            name=worker.value,
        )
        for worker in settings.process.workers
        if worker in GROUPS
    }


def workers(container: Container, consumers: dict[str, PartitionOrderedConsumer]) -> dict[str, RuntimeWorker]:
    """The process's table of workers: the Kafka consumers, the relays and the timers it runs."""
    settings = container.settings
    table: dict[str, RuntimeWorker] = {name: c.run for name, c in consumers.items()}
    if Worker.RETRY_DISPATCHER in settings.process.workers:
        table.update(retry_workers(container.retry_queue, container.publisher, settings.retry))
    if Worker.STATUS_CHECK_SCHEDULER in settings.process.workers:
        checks = settings.status_checks
        poll = Pacing.steady(checks.poll_interval_seconds)
        table["status-check-scheduler"] = paced(
            "status-check-scheduler",
            rounds.status_checks(container.dispatch_status_checks, batch_size=checks.batch_size),
            poll,
        )
    retention = timedelta(days=settings.process.inbox_retention_days)
    table["inbox-purge"] = every(
        "inbox-purge",
        INBOX_PURGE_INTERVAL_SECONDS,
        rounds.inbox_purge(container.purge_inbox, clock=container.clock, retention=retention),
    )
    table["reconciliation-gauge"] = every(
        "reconciliation-gauge",
        RECONCILIATION_GAUGE_INTERVAL_SECONDS,
        rounds.reconciliation_gauge(container.count_parked),
    )
    table["stale-refund-gauge"] = every(
        "stale-refund-gauge",
        RECONCILIATION_GAUGE_INTERVAL_SECONDS,
        rounds.stale_refund_gauge(container.count_stale_refunds),
    )
    if settings.sweeper.enabled:
        table["stale-order-sweeper"] = paced(
            "stale-order-sweeper",
            rounds.stale_order_sweep(container.sweep_stale_orders, batch_size=settings.sweeper.batch_size),
            Pacing.steady(settings.sweeper.interval_seconds),
        )
        table["stale-refund-sweeper"] = paced(
            "stale-refund-sweeper",
            rounds.refund_redrive(
                container.sweep_stale_refunds, reason="stale", batch_size=settings.sweeper.batch_size
            ),
            Pacing.steady(settings.sweeper.interval_seconds),
        )
    if settings.requery.enabled:
        table["parked-order-requery"] = paced(
            "parked-order-requery",
            rounds.parked_order_requery(container.requery_parked_orders, batch_size=settings.requery.batch_size),
            Pacing.steady(settings.requery.poll_interval_seconds),
        )
        table["parked-refund-requery"] = paced(
            "parked-refund-requery",
            rounds.refund_redrive(
                container.requery_parked_refunds, reason="parked", batch_size=settings.requery.batch_size
            ),
            Pacing.steady(settings.requery.poll_interval_seconds),
        )
    return table


def readiness(consumers: dict[str, PartitionOrderedConsumer]) -> dict[str, ReadinessCheck]:
    """Ready: every Kafka consumer has joined its group and is consuming."""

    async def kafka_consumers() -> None:
        unhealthy = [c.group_id for c in consumers.values() if not c.healthy]
        if unhealthy:
            raise RuntimeError(f"not consuming: {', '.join(unhealthy)}")

    return {"consumers": kafka_consumers}


def liveness(consumers: dict[str, PartitionOrderedConsumer]) -> dict[str, ReadinessCheck]:
    """Alive: no consumer's poll loop has been stuck for longer than its bound (only a restart frees it)."""

    async def poll_loops() -> None:
        for consumer in consumers.values():
            consumer.check_alive()

    return {"poll-loops": poll_loops}
