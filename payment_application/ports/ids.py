"""Numeric id allocation, one namespace per aggregate (the original's Redis keys)."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol


class IdNamespace(StrEnum):
    PAYMENT = "id-generator:payment"
    PAYMENT_ORDER = "id-generator:payment-order"


class IdGenerator(Protocol):
    async def next_ids(self, namespace: IdNamespace, count: int) -> list[int]:
        """`count` fresh, never-reused, increasing ids; raises DependencyUnavailable if it cannot allocate."""
        ...

    async def recover_from_collision(self) -> None:
        """Ids handed out were already stored: drop what is held locally and move every counter above what the
        database holds, so the next ids are fresh."""
        ...
