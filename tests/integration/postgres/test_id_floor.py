"""The id floor against a real Postgres: what it reads, and how it fails when the server closed its connection.

It runs on the create path when the Redis counters must be resynced (after Redis lost them). In the combined chaos
run (Redis flushed, Postgres restarted) a pooled connection the server had closed reached it, and the driver's
"connection is closed" came out of the create as a 500; it must be "database unavailable" (503) like the rest of
that path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text

from payment_application.errors import DependencyUnavailable
from payment_application.ports.ids import IdNamespace
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.id_floor import PostgresIdFloor
from payment_infrastructure.postgres.settings import DatabaseSettings
from tests.fixtures.database import migrated_database
from tests.fixtures.ports import wait_until
from tests.integration.api.helpers import dsn

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def database() -> AsyncIterator[str]:
    async with migrated_database() as url:
        yield url


async def test_a_connection_the_server_closed_is_database_unavailable_and_the_next_read_works(database: str) -> None:
    engine = create_engine(DatabaseSettings(url=database, pool_size=1, max_overflow=0), application_name="floor-test")
    floor = PostgresIdFloor(engine)
    try:
        assert await floor(IdNamespace.PAYMENT_ORDER) == 0  # an empty table: nothing to stay ahead of
        async with engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            pooled = (await conn.get_raw_connection()).driver_connection
        assert isinstance(pooled, asyncpg.Connection)
        admin = await asyncpg.connect(dsn(database))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()

        async def noticed() -> bool:
            return pooled.is_closed()

        await wait_until(noticed, what="the pooled connection sees the server closed it")  # as after a restart

        with pytest.raises(DependencyUnavailable):
            await floor(IdNamespace.PAYMENT_ORDER)
        assert await floor(IdNamespace.PAYMENT) == 0  # the pool dropped the dead connection and opened a new one
    finally:
        await engine.dispose()
