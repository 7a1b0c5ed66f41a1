"""Background upkeep inside the API process: outbox partitions ahead of time, expired idempotency keys out.

The work itself (the SQL) comes wired from the composition root; this module paces it, logs it and counts it."""

from __future__ import annotations

import structlog

from payment_infrastructure.runtime.pacing import Worker, every
from services.payment_service.bootstrap import Container
from services.payment_service.metrics import IDEMPOTENCY_KEYS_PURGED

log = structlog.get_logger(__name__)


async def ensure_partitions(container: Container) -> list[str]:
    created = await container.create_outbox_partitions(container.clock.now())
    if created:
        log.info("outbox_partitions_created", partitions=created)
    return created


async def purge_idempotency_keys(container: Container) -> int:
    purged = await container.purge_expired_keys(container.clock.now())
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
