"""Use case: move committed outbox rows to the broker, at least once, in per-order order.

claim (short tx, lease) → publish with no transaction open → mark sent where the lease is still ours, or give
back our own claim on failure. A crash anywhere leaves leased rows that come back when the lease expires, so a
row can be published twice but never lost; consumers recognise the duplicate by its deterministic eventId.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from payment_application.ports.outbox import OutboxRecord, OutboxStore
from payment_application.ports.publisher import EventHeaders, EventPublisher, OutboundMessage
from payment_application.relay_report import RelayReport, split_outcomes


def message_of(record: OutboxRecord) -> OutboundMessage:
    return OutboundMessage(
        topic=record.topic,
        key=record.aggregate_id,
        value=record.payload,
        headers=EventHeaders(
            event_id=record.event_id,
            event_type=record.event_type,
            trace_id=record.trace_id,
            parent_event_id=record.parent_event_id,
            aggregate_id=record.aggregate_id,
            traceparent=record.traceparent,
        ),
    )


class DispatchOutbox:
    """One round: claim a batch, publish it, settle it."""

    def __init__(
        self,
        store: OutboxStore,
        publisher: EventPublisher,
        *,
        batch_size: int,
        lease_seconds: float,
        new_lease_token: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self._store = store
        self._publisher = publisher
        self._batch_size = batch_size
        self._lease_seconds = lease_seconds
        self._new_lease_token = new_lease_token

    async def dispatch_batch(self) -> RelayReport[OutboxRecord]:
        token = self._new_lease_token()
        claim = await self._store.claim(lease_token=token, limit=self._batch_size, lease_seconds=self._lease_seconds)
        records = tuple(claim.records)
        if not records:
            return RelayReport(limit=self._batch_size)
        try:
            outcomes = await self._publisher.publish_batch([message_of(r) for r in records])
        except BaseException:
            # Forced shutdown or a publisher bug: hand the rows back now rather than make them wait for the lease.
            await asyncio.shield(self._store.release(token, records))
            raise
        delivered, failures = split_outcomes(records, outcomes)
        marked = await self._store.mark_sent(token, delivered) if delivered else 0
        released = await self._store.release(token, [f.item for f in failures]) if failures else 0
        return RelayReport(
            limit=self._batch_size,
            claimed=records,
            published=delivered,
            failures=failures,
            sent=marked,
            released=released,
        )
