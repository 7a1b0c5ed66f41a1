"""Money in minor units: no floats anywhere near an amount."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from payment_domain.errors import UnsupportedCurrency


class Currency(StrEnum):
    """The currencies the marketplace settles in (the original's set); all have two decimals."""

    EUR = "EUR"
    USD = "USD"
    GBP = "GBP"

    @classmethod
    def parse(cls, code: str) -> Currency:
        try:
            return cls(code)
        except ValueError:
            allowed = ", ".join(c.value for c in cls)
            raise UnsupportedCurrency(f"unsupported currency {code!r}; allowed: {allowed}") from None


@dataclass(frozen=True, slots=True)
class Amount:
    """A non-negative integer count of minor units (cents) in one currency."""

    value: int
    currency: Currency

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise TypeError("Amount.value must be an int of minor units")
        if self.value < 0:
            raise ValueError("Amount.value must not be negative")
