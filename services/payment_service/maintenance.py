"""Background upkeep inside the API process: outbox partitions ahead of time, expired idempotency keys out."""

from __future__ import annotations

import structlog

from payment_infrastructure.postgres.idempotency_purge import purge_expired_idempotency_keys
from payment_infrastructure.postgres.outbox_partitions import ensure_outbox_partitions, hold_for_creates
from payment_infrastructure.runtime.pacing import Worker, every
from services.payment_service.bootstrap import Container
from services.payment_service.metrics import IDEMPOTENCY_KEYS_PURGED

log = structlog.get_logger(__name__)


async def ensure_partitions(container: Container) -> list[str]:
    outbox = container.settings.outbox
    created = await ensure_outbox_partitions(
        container.engine,
        now=container.clock.now(),
        windows_ahead=outbox.windows_ahead,
        lock_timeout_ms=outbox.maintenance_lock_timeout_ms,
        hold_ms=hold_for_creates(container.settings.db.lock_timeout_ms),
    )
    if created:
        log.info("outbox_partitions_created", partitions=created)
    return created


async def purge_idempotency_keys(container: Container) -> int:
    purged = await purge_expired_idempotency_keys(
        container.engine, now=container.clock.now(), batch=container.settings.api.idempotency_purge_batch
    )
    if purged:
        IDEMPOTENCY_KEYS_PURGED.inc(purged)
        log.info("idempotency_keys_purged", count=purged)
    return purged


def maintenance_loops(container: Container) -> list[Worker]:
    api = container.settings.api
    return [
        every("outbox-partitions", api.partition_maintenance_interval_seconds, lambda: ensure_partitions(container)),
        every("idempotency-purge", api.idempotency_purge_interval_seconds, lambda: purge_idempotency_keys(container)),
    ]
