"""Composition roots of payment-service, one per process: the API (`build_container`) and the outbox dispatcher
(`build_dispatcher_container`). The only modules of the deployable that know the concrete adapters: they read
settings, build adapters and wire use cases, and hand out use cases, workers, upkeep jobs and dependency checks,
never an engine, a pool or a client, so nothing else can run SQL or talk to Redis or Kafka behind a port's back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import asyncpg
import httpx
import structlog
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.create_payment import CreatePayment
from payment_application.dispatch_outbox import DispatchOutbox
from payment_application.get_payment import GetPayment
from payment_application.get_seller_balance import GetSellerBalance
from payment_application.get_seller_statement import GetSellerStatement
from payment_application.ports.clock import Clock
from payment_application.ports.publisher import EventPublisher
from payment_application.refund_payment_order import RefundPaymentOrder
from payment_domain.ids import PaymentId, PaymentOrderId, RefundId
from payment_domain.refund import Refund
from payment_infrastructure.auth.verifier import JwtVerifier
from payment_infrastructure.clock import SystemClock
from payment_infrastructure.kafka.admin import ensure_topics
from payment_infrastructure.kafka.producer import KafkaEventPublisher
from payment_infrastructure.observability.management import ReadinessCheck
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.id_floor import PostgresIdFloor
from payment_infrastructure.postgres.idempotency_purge import purge_expired_idempotency_keys
from payment_infrastructure.postgres.outbox_metrics import (
    PrometheusDispatchObserver,
    outbox_default_partition_rows,
    outbox_maintenance_failed_total,
    record_pending,
)
from payment_infrastructure.postgres.outbox_notifications import PostgresOutboxNotifications
from payment_infrastructure.postgres.outbox_partitions import (
    ensure_outbox_partitions,
    hold_for_creates,
    prune_outbox_partitions,
    relocate_default_partition_rows,
)
from payment_infrastructure.postgres.outbox_settings import check_lease_outlives_delivery
from payment_infrastructure.postgres.outbox_store import PostgresOutboxStore
from payment_infrastructure.postgres.payment_repository import PostgresPaymentRepository
from payment_infrastructure.postgres.pipeline_backlog import PostgresPipelineBacklog
from payment_infrastructure.postgres.pool import acquire, create_pool
from payment_infrastructure.postgres.pool_metrics import watch_asyncpg_pool, watch_engine
from payment_infrastructure.postgres.refund_store import PostgresRefundStore
from payment_infrastructure.postgres.seller_ledger import PostgresSellerLedger
from payment_infrastructure.redis.client import create_redis
from payment_infrastructure.redis.id_generator import RedisIdGenerator
from payment_infrastructure.runtime.pacing import Pacing, Worker, every
from services.payment_service.api.admission import CreateAdmission
from services.payment_service.api.pipeline_budget import PipelineBudget
from services.payment_service.api.presenter import JsonPaymentPresenter
from services.payment_service.outbox_relay import outbox_relay
from services.payment_service.settings import ServiceSettings

log = structlog.get_logger(__name__)

# Blocks other processes may hold when Redis lost its counters: generous, ids are cheap.
RESYNC_BLOCKS = 1_000
# Creates a process admits per writer, in batches: one being written and one filling behind it, so batches still
# grow to their maximum under load while an admitted create waits about two batch writes when the writers limit.
ADMITTED_BATCHES_PER_WRITER = 2


@dataclass
class _Clients:
    """What the API process holds open; only the container closes it."""

    engine: AsyncEngine
    pool: asyncpg.Pool
    redis: Redis
    http: httpx.AsyncClient


@dataclass
class Container:
    """The API process: its use cases, its admission bound, its upkeep jobs and its dependency checks."""

    settings: ServiceSettings
    clock: Clock
    verifier: JwtVerifier
    ids: RedisIdGenerator
    payments: PostgresPaymentRepository
    create_payment: CreatePayment
    get_payment: GetPayment
    get_seller_balance: GetSellerBalance
    get_seller_statement: GetSellerStatement
    refund_payment_order: RefundPaymentOrder
    get_refund: Callable[[PaymentOrderId, RefundId], Awaitable[Refund | None]]
    refunded_by_order: Callable[[PaymentId], Awaitable[Mapping[PaymentOrderId, int]]]
    """Per order of a payment, the total of its refunds not failed."""
    admission: CreateAdmission
    pipeline: PipelineBudget | None
    """Flow control from the pipeline's backlog; None when `admission.enabled` is off."""
    dependencies: dict[str, ReadinessCheck]
    """Postgres and Redis answer: reported by /health/ready, never failing it (they are shared by every pod)."""
    create_outbox_partitions: Callable[[datetime], Awaitable[list[str]]]
    """Windows ahead of `now` that are missing; returns the names created."""
    purge_expired_keys: Callable[[datetime], Awaitable[int]]
    """Idempotency keys expired before `now`, one batch; returns how many went."""
    _clients: _Clients = field(repr=False)

    async def start(self) -> None:
        """Fail fast on a broken database or Redis; tolerate a missing issuer (tokens fail until it is back)."""
        await self.ids.sync_with_database()
        await self.verifier.warm_up()

    async def close(self) -> None:
        if self.pipeline is not None:
            await self.pipeline.close()
        await self._clients.http.aclose()
        await self.payments.close()
        await self._clients.redis.aclose()
        await self._clients.pool.close()
        await self._clients.engine.dispose()


async def build_container(settings: ServiceSettings, *, clock: Clock | None = None) -> Container:
    clock = clock or SystemClock()
    engine = create_engine(settings.db, application_name="payment-service")
    pool = await create_pool(settings.db, application_name="payment-service")
    watch_engine("engine", engine)
    watch_asyncpg_pool("creates", pool)
    redis = create_redis(settings.redis)
    http = httpx.AsyncClient(timeout=settings.auth.http_timeout_seconds)
    verifier = JwtVerifier(settings.auth, http)
    ids = RedisIdGenerator(
        redis,
        block_size=settings.redis.id_block_size,
        floor_provider=PostgresIdFloor(engine),
        resync_margin=settings.redis.id_block_size * RESYNC_BLOCKS,
    )
    writers = min(settings.api.create_writers, settings.db.pool_size)
    payments = PostgresPaymentRepository(
        pool,
        acquire_timeout_seconds=settings.db.pool_timeout_seconds,
        writers=writers,
        max_batch=settings.api.create_batch_max_payments,
    )
    create = CreatePayment(
        payments=payments,
        ids=ids,
        clock=clock,
        presenter=JsonPaymentPresenter(),
        idempotency_ttl=timedelta(hours=settings.api.idempotency_ttl_hours),
    )

    async def postgres() -> None:
        async with acquire(pool, settings.db.pool_timeout_seconds) as conn:
            await conn.fetchval("SELECT 1")

    async def redis_ping() -> None:
        await redis.ping()

    async def create_outbox_partitions(now: datetime) -> list[str]:
        return await ensure_outbox_partitions(
            engine,
            now=now,
            windows_ahead=settings.outbox.windows_ahead,
            lock_timeout_ms=settings.outbox.maintenance_lock_timeout_ms,
            hold_ms=hold_for_creates(settings.db.lock_timeout_ms),
        )

    async def purge_expired_keys(now: datetime) -> int:
        return await purge_expired_idempotency_keys(engine, now=now, batch=settings.api.idempotency_purge_batch)

    seller_ledger = PostgresSellerLedger(engine)
    refunds = PostgresRefundStore(
        engine, statement_timeout_ms=settings.db.statement_timeout_ms, lock_timeout_ms=settings.db.lock_timeout_ms
    )
    return Container(
        settings=settings,
        clock=clock,
        verifier=verifier,
        ids=ids,
        payments=payments,
        create_payment=create,
        get_payment=GetPayment(payments=payments),
        get_seller_balance=GetSellerBalance(ledger=seller_ledger),
        get_seller_statement=GetSellerStatement(ledger=seller_ledger),
        refund_payment_order=RefundPaymentOrder(refunds=refunds, clock=clock),
        get_refund=refunds.get,
        refunded_by_order=refunds.refunded_by_order,
        admission=CreateAdmission(
            settings.api.create_queue_max
            or writers * settings.api.create_batch_max_payments * ADMITTED_BATCHES_PER_WRITER
        ),
        pipeline=PipelineBudget(
            PostgresPipelineBacklog(pool, acquire_timeout_seconds=settings.db.pool_timeout_seconds),
            target_seconds=settings.admission.settle_target_seconds,
            min_in_flight=settings.admission.min_in_flight,
            max_in_flight=settings.admission.max_in_flight,
            fixed=settings.admission.in_flight_budget,
            refresh_seconds=settings.admission.refresh_seconds,
            stale_after_seconds=settings.admission.stale_after_seconds,
        )
        if settings.admission.enabled
        else None,
        dependencies={"postgres": postgres, "redis": redis_ping},
        create_outbox_partitions=create_outbox_partitions,
        purge_expired_keys=purge_expired_keys,
        _clients=_Clients(engine=engine, pool=pool, redis=redis, http=http),
    )


class ManagedPublisher(EventPublisher, Protocol):
    """An event publisher with a lifecycle (KafkaEventPublisher, or a decorator around one)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class DispatcherContainer:
    """The outbox dispatcher process: its relay, its upkeep jobs and its dependency checks."""

    settings: ServiceSettings
    relay: Worker
    ensure_topics: Callable[[], Awaitable[object]]
    maintain_partitions: Callable[[], Awaitable[None]]
    """Windows ahead created, strays moved out of DEFAULT, expired windows dropped."""
    refresh_backlog: Callable[[], Awaitable[None]]
    """The backlog gauges, from a true count of unsent rows."""
    dependencies: dict[str, ReadinessCheck]
    _engine: AsyncEngine = field(repr=False)
    _publisher: ManagedPublisher = field(repr=False)
    _notifications: PostgresOutboxNotifications = field(repr=False)

    async def start(self) -> None:
        """The publisher, then the LISTEN connection (the publisher stops again if that fails)."""
        await self._publisher.start()
        try:
            await self._notifications.start()
        except BaseException:
            await self._publisher.stop()
            raise

    async def stop(self) -> None:
        try:
            await self._notifications.stop()
        finally:
            await self._publisher.stop()

    async def close(self) -> None:
        await self._engine.dispose()


def build_dispatcher_container(
    settings: ServiceSettings, *, clock: Clock | None = None, publisher: ManagedPublisher | None = None
) -> DispatcherContainer:
    """`publisher` replaces the Kafka publisher (e.g. a decorated one); `start` and `stop` start and stop it."""
    check_lease_outlives_delivery(settings.outbox, settings.kafka.delivery_timeout_seconds)
    clock = clock or SystemClock()
    outbox = settings.outbox
    engine = create_engine(settings.db, application_name="payment-outbox-dispatcher")
    watch_engine("engine", engine)
    store = PostgresOutboxStore(engine)
    publisher = publisher or KafkaEventPublisher.from_settings(
        settings.kafka, client_id=f"{settings.kafka.client_id}-outbox"
    )
    notifications = PostgresOutboxNotifications(settings.db.url, ssl=settings.db.ssl, channel=outbox.notify_channel)
    relay = outbox_relay(
        DispatchOutbox(store, publisher, batch_size=outbox.batch_size, lease_seconds=outbox.lease_seconds),
        notifications,
        PrometheusDispatchObserver(),
        Pacing(
            idle_min=outbox.idle_min_wait_seconds,
            idle_max=max(outbox.idle_max_wait_seconds, outbox.idle_min_wait_seconds),
            failure_min=outbox.failure_min_backoff_seconds,
            failure_max=max(outbox.failure_max_backoff_seconds, outbox.failure_min_backoff_seconds),
            linger=min(outbox.linger_seconds, outbox.idle_min_wait_seconds),
        ),
        workers=outbox.workers,
    )

    async def maintain_partitions() -> None:
        try:
            locks = {
                "lock_timeout_ms": outbox.maintenance_lock_timeout_ms,
                "hold_ms": hold_for_creates(settings.db.lock_timeout_ms),
            }
            now = clock.now()
            await ensure_outbox_partitions(engine, now=now, windows_ahead=outbox.windows_ahead, **locks)
            report = await relocate_default_partition_rows(engine, now=now, **locks)
            outbox_default_partition_rows.set(report.rows_found)
            await prune_outbox_partitions(engine, now=now, retention=timedelta(hours=outbox.retention_hours), **locks)
        except Exception:
            outbox_maintenance_failed_total.inc()
            raise

    async def refresh_backlog() -> None:
        stats = await store.pending_stats()
        record_pending(stats.count, stats.oldest_created_at, now=clock.now())

    async def postgres() -> None:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    return DispatcherContainer(
        settings=settings,
        relay=relay,
        ensure_topics=lambda: ensure_topics(settings.kafka),
        maintain_partitions=maintain_partitions,
        refresh_backlog=refresh_backlog,
        dependencies={"postgres": postgres},
        _engine=engine,
        _publisher=publisher,
        _notifications=notifications,
    )


def dispatcher_workers(container: DispatcherContainer) -> dict[str, Worker]:
    """The dispatcher process's table of workers: the relay and its two timers."""
    outbox = container.settings.outbox
    return {
        "outbox-relay": container.relay,
        "outbox-partition-maintenance": every(
            "outbox-partition-maintenance", outbox.maintenance_interval_seconds, container.maintain_partitions
        ),
        "outbox-backlog": every("outbox-backlog", outbox.metrics_refresh_seconds, container.refresh_backlog),
    }
