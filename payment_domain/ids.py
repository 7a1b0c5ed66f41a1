"""Identifiers: numeric internally, `payment-<n>` / `paymentorder-<n>` on the wire (the original's format), and
`refund-<n>` for refunds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

MAX_ID = 2**63 - 1
"""Ids are signed 64-bit (the original's Long, a BIGINT column); a larger one cannot name anything."""


@dataclass(frozen=True, slots=True, order=True)
class _NumericId:
    value: int
    prefix: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, int) or not 0 < self.value <= MAX_ID:
            raise ValueError(f"{type(self).__name__} must be an int in 1..{MAX_ID}, got {self.value!r}")

    @property
    def public(self) -> str:
        return f"{self.prefix}-{self.value}"

    @classmethod
    def from_public(cls, public_id: str) -> Self:
        """Parse `prefix-<n>`; raises ValueError for anything else (callers answer 404, not 500)."""
        head, sep, digits = public_id.rpartition("-")
        ascii_number = digits.isascii() and digits.isdigit() and not digits.startswith("0")
        if sep != "-" or head != cls.prefix or not ascii_number:
            raise ValueError(f"not a {cls.prefix} id: {public_id!r}")
        return cls(int(digits))

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True, slots=True, order=True)
class PaymentId(_NumericId):
    prefix: ClassVar[str] = "payment"


@dataclass(frozen=True, slots=True, order=True)
class PaymentOrderId(_NumericId):
    prefix: ClassVar[str] = "paymentorder"


@dataclass(frozen=True, slots=True, order=True)
class RefundId(_NumericId):
    prefix: ClassVar[str] = "refund"
