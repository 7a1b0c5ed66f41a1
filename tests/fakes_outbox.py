"""Hand-written fakes of the outbox ports (store, publisher, wake-up signal): tiny working implementations.

FakeOutboxStore follows the same rules as the Postgres store: a row is claimable when it is NEW, has no live
lease, and is the oldest NEW row of its aggregate; settling only touches rows still leased to the caller.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from payment_application.ports.outbox import OutboxClaim, OutboxRecord
from payment_application.ports.publisher import EventHeaders, OutboundMessage
from payment_application.relay_report import RelayReport
from tests.fakes import FakeClock


@dataclasses.dataclass
class FakeOutboxRow:
    record: OutboxRecord
    status: str = "NEW"
    lease_token: uuid.UUID | None = None
    lease_expires_at: datetime | None = None


class FakeOutboxStore:
    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
        self.rows: dict[int, FakeOutboxRow] = {}
        self.claim_failures: list[Exception] = []
        self.claims = 0
        self._next_id = 1

    def add(
        self,
        aggregate_id: str,
        *,
        topic: str = "topic",
        payload: bytes | None = None,
        created_at: datetime | None = None,
    ) -> OutboxRecord:
        """A committed row; ids grow in the order rows are added, `created_at` (default: now) may say otherwise."""
        row_id = self._next_id
        self._next_id += 1
        record = OutboxRecord(
            id=row_id,
            created_at=created_at or self.clock.now(),
            event_id=str(uuid.UUID(int=row_id)),
            event_type="payment_order_created",
            topic=topic,
            aggregate_id=aggregate_id,
            trace_id=f"trace-{row_id}",
            parent_event_id=str(uuid.UUID(int=row_id)),
            payload=payload if payload is not None else f'{{"row":{row_id}}}'.encode(),
            publish_attempts=0,
        )
        self.rows[row_id] = FakeOutboxRow(record)
        return record

    def status(self, row_id: int) -> str:
        return self.rows[row_id].status

    def lease_of(self, row_id: int) -> uuid.UUID | None:
        return self.rows[row_id].lease_token

    def take_over(self, records: Sequence[OutboxRecord], *, lease_seconds: float = 30.0) -> uuid.UUID:
        """Another dispatcher reclaims these rows after their lease expired, as its claim would: a new token and
        expiry, one more publish attempt."""
        token = uuid.uuid4()
        for record in records:
            row = self.rows[record.id]
            row.lease_token = token
            row.lease_expires_at = self.clock.now() + timedelta(seconds=lease_seconds)
            row.record = dataclasses.replace(row.record, publish_attempts=row.record.publish_attempts + 1)
        return token

    async def claim(self, *, lease_token: uuid.UUID, limit: int, lease_seconds: float) -> OutboxClaim:
        self.claims += 1
        if self.claim_failures:
            raise self.claim_failures.pop(0)
        now = self.clock.now()
        oldest_of: dict[str, int] = {}
        for row in sorted(self.rows.values(), key=lambda r: r.record.id):
            if row.status == "NEW":
                oldest_of.setdefault(row.record.aggregate_id, row.record.id)
        claimable = [
            row
            for row in self.rows.values()
            if row.status == "NEW"
            and (row.lease_expires_at is None or row.lease_expires_at < now)
            and oldest_of[row.record.aggregate_id] == row.record.id
        ]
        claimable.sort(key=lambda r: (r.record.created_at, r.record.id))
        records = []
        for row in claimable[:limit]:
            row.lease_token = lease_token
            row.lease_expires_at = now + timedelta(seconds=lease_seconds)
            row.record = dataclasses.replace(row.record, publish_attempts=row.record.publish_attempts + 1)
            records.append(row.record)
        return OutboxClaim(lease_token=lease_token, records=records)

    async def mark_sent(self, lease_token: uuid.UUID, records: Sequence[OutboxRecord]) -> int:
        return self._settle(lease_token, records, sent=True)

    async def release(self, lease_token: uuid.UUID, records: Sequence[OutboxRecord]) -> int:
        return self._settle(lease_token, records, sent=False)

    def _settle(self, lease_token: uuid.UUID, records: Sequence[OutboxRecord], *, sent: bool) -> int:
        count = 0
        for record in records:
            row = self.rows[record.id]
            if row.status == "NEW" and row.lease_token == lease_token:
                row.status = "SENT" if sent else "NEW"
                row.lease_token = None
                row.lease_expires_at = None
                count += 1
        return count


class FakePublisher:
    """The one fake of the EventPublisher port, held to the Kafka publisher's rules by tests/integration/contracts:
    `published` is what the broker acknowledged, in order. Knobs: keys in `failing_keys` are not acknowledged;
    `gate` (when set) holds every batch until opened; `raises` makes a batch blow up."""

    def __init__(self) -> None:
        self.published: list[OutboundMessage] = []
        self.batches = 0
        self.failing_keys: set[str] = set()
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.on_publish: list[Callable[[Sequence[OutboundMessage]], None]] = []
        self.raises: BaseException | None = None

    async def publish(self, topic: str, key: str, value: bytes, headers: EventHeaders) -> None:
        [outcome] = await self.publish_batch([OutboundMessage(topic, key, value, headers)])
        if outcome is not None:
            raise outcome

    async def publish_batch(self, messages: Sequence[OutboundMessage]) -> list[Exception | None]:
        self.batches += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.raises is not None:
            raise self.raises
        for hook in self.on_publish:
            hook(messages)
        outcomes: list[Exception | None] = []
        for message in messages:
            if message.key in self.failing_keys:
                outcomes.append(ConnectionError(f"broker unavailable for key {message.key}"))
            else:
                self.published.append(message)
                outcomes.append(None)
        return outcomes


class FakeOutboxSignal:
    """Answers wake-up waits from a script; when the script runs out it sets `stop` (ending the loop)."""

    def __init__(self, answers: Sequence[bool] = (), *, stop: asyncio.Event | None = None) -> None:
        self.answers = list(answers)
        self.stop = stop
        self.waits: list[float] = []
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    async def wait(self, max_seconds: float) -> bool:
        self.waits.append(max_seconds)
        if not self.answers:
            if self.stop is not None:
                self.stop.set()
            await asyncio.Event().wait()  # never woken: the loop stops instead
        return self.answers.pop(0)


class RecordingObserver:
    """Keeps every report; optionally sets `stop` after `stop_after` rounds (done or failed)."""

    def __init__(self, *, stop: asyncio.Event | None = None, stop_after: int | None = None) -> None:
        self.reports: list[RelayReport[OutboxRecord]] = []
        self.errors: list[Exception] = []
        self._stop = stop
        self._stop_after = stop_after

    def batch_done(self, report: RelayReport[OutboxRecord], seconds: float) -> None:
        self.reports.append(report)
        self._maybe_stop()

    def batch_failed(self, error: Exception, seconds: float) -> None:
        self.errors.append(error)
        self._maybe_stop()

    def _maybe_stop(self) -> None:
        rounds = len(self.reports) + len(self.errors)
        if self._stop is not None and self._stop_after is not None and rounds >= self._stop_after:
            self._stop.set()
