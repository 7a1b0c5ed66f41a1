"""What one relay round did: claim up to `limit` items, publish them as one batch, settle each by its outcome.

The outbox, the retry queue and the status checks are relays of the same shape, so they report alike and the
runtime paces them alike: `busy` (a full batch: more is probably waiting, go again at once), `failures` (back off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class RelayFailure(Generic[Item]):
    item: Item
    error: Exception


@dataclass(frozen=True, slots=True)
class RelayReport(Generic[Item]):
    """`published`: acknowledged by the broker; `sent`: of those, how many were settled (marked sent, acknowledged)
    while the claim was still ours; `released`: failed items handed back at once (the others wait for their claim
    to run out)."""

    limit: int
    claimed: tuple[Item, ...] = ()
    published: tuple[Item, ...] = ()
    failures: tuple[RelayFailure[Item], ...] = ()
    sent: int = 0
    released: int = 0

    @property
    def busy(self) -> bool:
        """A full batch: more may be waiting already."""
        return len(self.claimed) >= self.limit

    @property
    def lease_conflicts(self) -> int:
        """Published under a claim that another relay had taken over by the time we settled."""
        return len(self.published) - self.sent


def split_outcomes(
    items: tuple[Item, ...], outcomes: list[Exception | None]
) -> tuple[tuple[Item, ...], tuple[RelayFailure[Item], ...]]:
    """A batch publish's per-item outcomes (None: acknowledged) as the published items and the failures."""
    published = tuple(item for item, error in zip(items, outcomes, strict=True) if error is None)
    failures = tuple(
        RelayFailure(item, error) for item, error in zip(items, outcomes, strict=True) if error is not None
    )
    return published, failures
