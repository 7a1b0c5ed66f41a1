"""Domain errors: each carries a stable code that the API maps to a problem response."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: a JSON-pointer-like location and a human message."""

    field: str
    message: str


class DomainError(Exception):
    """Base class; `code` is stable and machine-readable."""

    code = "domain_error"


@dataclass
class InvalidPayment(DomainError):
    """A payment request that breaks an invariant; lists every violation, not only the first."""

    violations: list[FieldViolation] = field(default_factory=list)
    code = "invalid_payment"

    def __str__(self) -> str:
        return "; ".join(f"{v.field}: {v.message}" for v in self.violations)


class UnsupportedCurrency(DomainError):
    code = "unsupported_currency"


class IllegalTransition(DomainError):
    """A status move the transition table does not list."""

    code = "illegal_transition"
