"""How far behind the payment pipeline is, as admission control sees it."""

from __future__ import annotations

from typing import Protocol


class PipelineBacklog(Protocol):
    async def orders_awaiting_first_answer(self, *, limit: int) -> int:
        """Orders accepted and not yet answered by the PSP once (still INITIATED_PENDING: in the outbox, on a
        topic, or in a PSP call), counted up to `limit` so that reading a deep backlog stays cheap."""
        ...
