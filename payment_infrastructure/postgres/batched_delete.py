"""Deleting old rows in bounded batches, one short transaction each, so a purge never holds long locks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import TextClause
from sqlalchemy.ext.asyncio import AsyncEngine


async def delete_in_batches(engine: AsyncEngine, statement: TextClause, params: dict[str, Any], *, batch: int) -> int:
    """Run `statement` (which deletes at most :batch rows) until a round deletes fewer; return the total."""
    total = 0
    while True:
        async with engine.begin() as conn:
            deleted = (await conn.execute(statement, {**params, "batch": batch})).rowcount
        total += deleted
        if deleted < batch:
            return total
