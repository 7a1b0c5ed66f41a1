"""Composition root of payment-consumers: the only module that knows the concrete adapters."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.apply_psp_result import ApplyPspResult, ResultPolicy
from payment_application.check_payment_status import CheckPaymentStatus
from payment_application.dispatch_status_checks import DispatchStatusChecks
from payment_application.enqueue_psp_call import EnqueuePspCall
from payment_application.execute_psp_call import ExecutePspCall
from payment_application.ports.clock import Clock
from payment_application.ports.publisher import EventPublisher
from payment_application.redrive_stale_orders import RedriveStaleOrders
from payment_application.requery_parked_orders import RequeryParkedOrders
from payment_application.settle_parked_order import SettleParkedOrder
from payment_infrastructure.clock import SystemClock
from payment_infrastructure.kafka.dead_letters import DeadLetterPublisher
from payment_infrastructure.kafka.event_sink import KafkaEventSink
from payment_infrastructure.kafka.producer import KafkaEventPublisher
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.parked_orders import PostgresParkedOrders
from payment_infrastructure.postgres.payment_order_store import (
    PostgresPaymentOrderClaims,
    PostgresResultStore,
    PostgresStatusCheckQueue,
)
from payment_infrastructure.postgres.settings import DatabaseSettings
from payment_infrastructure.postgres.stale_orders import PostgresStaleOrderClaims
from payment_infrastructure.psp.gateway import AiohttpPspGateway
from payment_infrastructure.redis.client import create_redis
from payment_infrastructure.redis.retry_queue import RedisRetryQueue
from payment_infrastructure.redis.retry_settings import check_visibility_outlives_delivery
from services.payment_consumers.groups import GROUPS
from services.payment_consumers.settings import ConsumersSettings, Worker


class ManagedPublisher(EventPublisher, Protocol):
    """An event publisher with a lifecycle (KafkaEventPublisher, or a decorator around one)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Container:
    settings: ConsumersSettings
    clock: Clock
    engine: AsyncEngine
    redis: Redis
    publisher: ManagedPublisher
    dead_letters: DeadLetterPublisher
    psp: AiohttpPspGateway
    retry_queue: RedisRetryQueue
    enqueue: EnqueuePspCall
    execute: ExecutePspCall
    apply: ApplyPspResult
    check_status: CheckPaymentStatus
    dispatch_status_checks: DispatchStatusChecks
    sweep_stale_orders: RedriveStaleOrders
    requery_parked_orders: RequeryParkedOrders

    async def start(self) -> None:
        await self.publisher.start()
        await self.dead_letters.start()
        await self.psp.start()

    async def close(self) -> None:
        await self.psp.close()
        await self.dead_letters.stop()
        await self.publisher.stop()
        await self.redis.aclose()
        await self.engine.dispose()


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
    return Container(
        settings=settings,
        clock=clock,
        engine=engine,
        redis=redis,
        publisher=publisher,
        dead_letters=DeadLetterPublisher.from_settings(settings.kafka, clock=clock),
        psp=psp,
        retry_queue=retry_queue,
        enqueue=EnqueuePspCall(events=events, clock=clock),
        execute=ExecutePspCall(
            claims=PostgresPaymentOrderClaims(engine),
            psp=psp,
            events=events,
            clock=clock,
            lease_seconds=settings.process.psp_claim_lease_seconds,
            call_budget_seconds=settings.psp.call_timeout_ms / 1000,
        ),
        apply=ApplyPspResult(
            store=PostgresResultStore(
                engine,
                statement_timeout_ms=settings.db.statement_timeout_ms,
                lock_timeout_ms=settings.db.lock_timeout_ms,
            ),
            retries=retry_queue,
            policy=policy,
            randint=random.Random(seed).randint,
            consumer=GROUPS[Worker.RESULT_APPLIER][0],
        ),
        check_status=CheckPaymentStatus(psp=psp, events=events, clock=clock),
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
            parked=PostgresParkedOrders(engine),
            psp=psp,
            events=events,
            clock=clock,
            every=timedelta(seconds=settings.requery.every_seconds),
        ),
    )


@dataclass
class Reconciliation:
    """What `payments reconcile` needs: the parked orders and the settling use case, on a small pool of their own."""

    engine: AsyncEngine
    parked: PostgresParkedOrders
    settle: SettleParkedOrder

    async def close(self) -> None:
        await self.engine.dispose()


def build_reconciliation(settings: DatabaseSettings) -> Reconciliation:
    engine = create_engine(settings.model_copy(update={"pool_size": 1}), application_name="payments-reconcile")
    parked = PostgresParkedOrders(engine)
    store = PostgresResultStore(
        engine, statement_timeout_ms=settings.statement_timeout_ms, lock_timeout_ms=settings.lock_timeout_ms
    )
    return Reconciliation(engine, parked, SettleParkedOrder(parked=parked, store=store, clock=SystemClock()))
