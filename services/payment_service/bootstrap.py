"""Composition root of the payment-service API: the only module that knows the concrete adapters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import httpx
import structlog
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.create_payment import CreatePayment
from payment_application.ports.clock import Clock
from payment_infrastructure.auth import JwtVerifier
from payment_infrastructure.clock import SystemClock
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.id_floor import PostgresIdFloor
from payment_infrastructure.postgres.payment_repository import PostgresPaymentRepository
from payment_infrastructure.postgres.pool import create_pool
from payment_infrastructure.redis.client import create_redis
from payment_infrastructure.redis.id_generator import RedisIdGenerator
from services.payment_service.api.admission import CreateAdmission
from services.payment_service.api.presenter import JsonPaymentPresenter
from services.payment_service.settings import ServiceSettings

log = structlog.get_logger(__name__)

# Blocks other processes may hold when Redis lost its counters: generous, ids are cheap.
RESYNC_BLOCKS = 1_000
# Creates a process admits per writer, in batches: one being written and one filling behind it, so batches still
# grow to their maximum under load while an admitted create waits about two batch writes when the writers limit.
ADMITTED_BATCHES_PER_WRITER = 2


@dataclass
class Container:
    settings: ServiceSettings
    clock: Clock
    engine: AsyncEngine
    pool: asyncpg.Pool
    redis: Redis
    http: httpx.AsyncClient
    verifier: JwtVerifier
    ids: RedisIdGenerator
    payments: PostgresPaymentRepository
    create_payment: CreatePayment
    admission: CreateAdmission

    async def start(self) -> None:
        """Fail fast on a broken database or Redis; tolerate a missing issuer (tokens fail until it is back)."""
        await self.ids.sync_with_database()
        await self.verifier.warm_up()

    async def close(self) -> None:
        await self.http.aclose()
        await self.payments.close()
        await self.redis.aclose()
        await self.pool.close()
        await self.engine.dispose()


async def build_container(settings: ServiceSettings, *, clock: Clock | None = None) -> Container:
    clock = clock or SystemClock()
    engine = create_engine(settings.db, application_name="payment-service")
    pool = await create_pool(settings.db, application_name="payment-service")
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
    return Container(
        settings=settings,
        clock=clock,
        engine=engine,
        pool=pool,
        redis=redis,
        http=http,
        verifier=verifier,
        ids=ids,
        payments=payments,
        create_payment=create,
        admission=CreateAdmission(
            settings.api.create_queue_max
            or writers * settings.api.create_batch_max_payments * ADMITTED_BATCHES_PER_WRITER
        ),
    )
