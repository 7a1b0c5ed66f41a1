"""Persistence of payments: the atomic create (payment + orders + outbox + idempotency) and reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from payment_domain.events import AnyEnvelope
from payment_domain.ids import PaymentId
from payment_domain.payment import Payment


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """What a completed request leaves behind for its retries: scoped to the calling client."""

    client_id: str
    key: str
    request_hash: str
    response_status: int
    response_body: bytes
    payment_id: int
    created_at: datetime
    expires_at: datetime


class PaymentRepository(Protocol):
    async def create(
        self,
        payment: Payment,
        outbox: Sequence[AnyEnvelope],
        *,
        client_id: str,
        trace_id: str,
        idempotency: IdempotencyRecord | None,
    ) -> IdempotencyRecord | None:
        """Write everything in one transaction, or nothing.

        Returns None when written. When `idempotency` names a key that is already taken (and not expired), writes
        nothing and returns the existing record. Raises IdempotencyKeyInFlight if the key's first request has not
        committed yet, DependencyUnavailable / DependencyTimeout for database trouble.
        """
        ...

    async def get(self, payment_id: PaymentId) -> Payment | None: ...


class PaymentPresenter(Protocol):
    """Renders the response body a create returns, so the same bytes can be stored for replays."""

    def created(self, payment: Payment) -> bytes: ...
