"""Failures the use cases report; adapters translate technology errors into these, the API maps them to HTTP."""

from __future__ import annotations


class ApplicationError(Exception):
    code = "application_error"


class DependencyUnavailable(ApplicationError):
    """A backing service (database, Redis, broker) cannot be reached or has no capacity; safe to retry."""

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


class IdempotencyKeyInFlight(ApplicationError):
    """Another request with the same key is still being processed."""

    code = "idempotency_key_in_use"


class IdempotencyKeyMismatch(ApplicationError):
    """The key was used before with a different request body."""

    code = "idempotency_key_mismatch"
