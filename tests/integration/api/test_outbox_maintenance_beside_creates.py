"""Outbox partition maintenance never makes a create fail, and a create that meets a locked outbox is told the truth.

Creates write their outbox rows with a 250 ms lock_timeout. Maintenance that queued for an exclusive lock on
the outbox (behind a dispatcher's claim, say) used to make every create behind it time out, and a create that
carried an Idempotency-Key was then answered 409 "still being processed", which was false.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
from asyncpg.transaction import Transaction
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_infrastructure.postgres.outbox_partitions import (
    ensure_outbox_partitions,
    partition_name,
    prune_outbox_partitions,
)
from tests.fixtures.payment_api import ApiFactory
from tests.fixtures.ports import wait_until
from tests.integration.api.helpers import bearer, dsn, fetch, row_counts, valid_payment
from tests.integration.outbox.support import partition_names

RETENTION = timedelta(hours=24)


async def _expired_window(engine: AsyncEngine) -> str:
    """An empty window 30 hours old: the next prune's to drop."""
    old = datetime.now(UTC) - timedelta(hours=30)
    await ensure_outbox_partitions(engine, now=old, windows_ahead=0)
    return partition_name(old)


async def _outbox_reader(database_url: str) -> tuple[asyncpg.Connection, Transaction]:
    """A transaction that has read the outbox and is still open, as a dispatcher's claim is for a moment."""
    conn = await asyncpg.connect(dsn(database_url))
    tx = conn.transaction()
    await tx.start()
    await conn.fetch("SELECT id FROM outbox_event LIMIT 1")
    return conn, tx


async def _create(client: httpx.AsyncClient, token: str, *, keyed: bool) -> httpx.Response:
    headers = bearer(token) | ({"Idempotency-Key": str(uuid.uuid4())} if keyed else {})
    return await client.post("/payments", json=valid_payment(), headers=headers)


async def test_creates_made_while_a_prune_meets_a_busy_outbox_are_all_accepted(
    api_factory: ApiFactory, engine: AsyncEngine, tokens: dict[str, str], database_url: str
) -> None:
    api = await api_factory()
    expired = await _expired_window(engine)
    reader, reading = await _outbox_reader(database_url)
    try:
        prune = asyncio.create_task(prune_outbox_partitions(engine, now=datetime.now(UTC), retention=RETENTION))
        responses: list[httpx.Response] = []
        async with api.client() as client:
            # At least one create after the prune started, and more for as long as it runs.
            while True:
                responses.append(await _create(client, tokens["order-service"], keyed=len(responses) % 2 == 0))
                if prune.done():
                    break
        (dropped_while_busy,) = await asyncio.gather(prune, return_exceptions=True)
    finally:
        await reading.rollback()
        await reader.close()

    assert [(r.status_code, r.json().get("type")) for r in responses] == [(202, None)] * len(responses)
    assert dropped_while_busy == []  # it left the window for a later run instead of waiting in front of writers
    assert expired in await partition_names(engine)
    assert await prune_outbox_partitions(engine, now=datetime.now(UTC), retention=RETENTION) == [expired]


async def test_a_prune_beside_a_stream_of_creates_drops_its_window_and_every_create_is_accepted(
    api_factory: ApiFactory, engine: AsyncEngine, tokens: dict[str, str]
) -> None:
    api = await api_factory()
    expired = await _expired_window(engine)
    pruned = asyncio.Event()
    responses: list[httpx.Response] = []

    async def keep_creating(client: httpx.AsyncClient, keyed: bool) -> None:
        while not pruned.is_set():
            responses.append(await _create(client, tokens["order-service"], keyed=keyed))

    async def prune_until_dropped() -> bool:
        return expired in await prune_outbox_partitions(engine, now=datetime.now(UTC), retention=RETENTION)

    async with api.client() as client:
        creators = [asyncio.create_task(keep_creating(client, keyed=n % 2 == 0)) for n in range(4)]
        try:
            await wait_until(lambda: _at_least(responses, 4), timeout=10, what="creates under way")
            await wait_until(prune_until_dropped, timeout=20, what=f"{expired} pruned beside the creates")
        finally:
            pruned.set()
            await asyncio.gather(*creators)

    assert {r.status_code for r in responses} == {202}, [r.text for r in responses if r.status_code != 202]
    assert expired not in await partition_names(engine)


async def _at_least(responses: list[httpx.Response], count: int) -> bool:
    return len(responses) >= count


async def test_a_keyed_create_that_meets_a_locked_outbox_is_told_it_timed_out_and_its_key_stays_free(
    api_factory: ApiFactory, tokens: dict[str, str], database_url: str
) -> None:
    api = await api_factory()
    key, body = str(uuid.uuid4()), valid_payment()
    headers = bearer(tokens["order-service"]) | {"Idempotency-Key": key}
    before = await row_counts(database_url)
    locker = await asyncpg.connect(dsn(database_url))
    locking = locker.transaction()
    await locking.start()
    await locker.execute("LOCK TABLE ONLY outbox_event IN ACCESS EXCLUSIVE MODE")  # e.g. a schema migration
    try:
        async with api.client() as client:
            blocked = await client.post("/payments", json=body, headers=headers)
    finally:
        await locking.rollback()
        await locker.close()
    assert await row_counts(database_url) == before
    async with api.client() as client:
        retried = await client.post("/payments", json=body, headers=headers)

    assert blocked.status_code == 504, blocked.text  # not 409: no other request holds this key
    assert blocked.json()["type"].endswith("/timeout")
    assert "nothing was written" in blocked.json()["detail"]
    assert retried.status_code == 202 and "idempotent-replayed" not in retried.headers
    holders = await fetch(database_url, "SELECT payment_id FROM idempotency_keys WHERE idempotency_key = $1", key)
    assert len(holders) == 1
