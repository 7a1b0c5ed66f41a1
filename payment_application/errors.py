"""Failures the use cases report; adapters translate technology errors into these, the API maps them to HTTP.

A failure of a write says whether anything was written: `DependencyUnavailable` and `DependencyTimeout` promise
nothing was (safe to send again as it is); `WriteOutcomeUnknown` promises nothing either way."""

from __future__ import annotations

from payment_domain.ids import PaymentId


class ApplicationError(Exception):
    code = "application_error"


class DependencyUnavailable(ApplicationError):
    """A backing service (database, Redis, broker) cannot be reached or has no capacity, known before anything was
    written; safe to retry."""

    code = "dependency_unavailable"

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(f"{dependency} unavailable: {detail}")
        self.dependency = dependency
        self.detail = detail


class IdCollision(ApplicationError):
    """A newly allocated id is already stored: the id counters went backwards (Redis lost them). Nothing was
    written; allocating again after the counters are re-synced is safe."""

    code = "id_collision"


class DependencyTimeout(ApplicationError):
    """A statement hit its timeout; the transaction was rolled back, nothing was written."""

    code = "dependency_timeout"

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(f"{dependency} timed out: {detail}")
        self.dependency = dependency
        self.detail = detail


class WriteOutcomeUnknown(ApplicationError):
    """The write was sent and its answer never came (the connection dropped, the session was ended, the wait was
    cancelled): it may have committed or not. Only a retry that the first attempt's effect would be recognised by
    (same idempotency key, same order) is safe."""

    code = "write_outcome_unknown"

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(f"{dependency} write outcome unknown: {detail}")
        self.dependency = dependency
        self.detail = detail


class OrderAlreadyHasPayment(ApplicationError):
    """The client already has a payment for this order: one order is paid by one payment, so nothing was written.
    Carries that payment, which is what a retry of an earlier create with an unknown outcome wants to find."""

    code = "order_already_has_payment"

    def __init__(self, order_id: str, payment_id: PaymentId) -> None:
        super().__init__(f"order {order_id} already has payment {payment_id.public}")
        self.order_id = order_id
        self.payment_id = payment_id


class IdempotencyKeyInFlight(ApplicationError):
    """Another request with the same key is still being processed."""

    code = "idempotency_key_in_use"


class IdempotencyKeyMismatch(ApplicationError):
    """The key was used before with a different request body."""

    code = "idempotency_key_mismatch"


class LedgerEntryExists(ApplicationError):
    """The ledger already holds an entry of this kind for the payment order: the transaction writing a second one
    is rolled back (an entry is never posted twice)."""

    code = "ledger_entry_exists"
