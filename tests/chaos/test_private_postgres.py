"""The chaos stack's private Postgres server: the project's role logs in over TCP with its password, a fast restart
and a crash (every server process killed) both come back, what was committed before a crash is there after its
recovery, and the server's directory is gone once the context ends."""

from __future__ import annotations

import asyncpg
import pytest

from tests.fixtures.private_postgres import private_postgres

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_committed_rows_survive_a_restart_and_a_crash_and_the_server_is_removed_afterwards() -> None:
    async with private_postgres() as server:
        admin = await asyncpg.connect(server.url("postgres").replace("+asyncpg", ""))
        await admin.execute("CREATE DATABASE kept")  # the role may create databases, as on the shared server
        await admin.close()
        dsn = server.url("kept").replace("+asyncpg", "")
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)")
        await server.restart()
        with pytest.raises((asyncpg.PostgresConnectionError, ConnectionError, asyncpg.InterfaceError)):
            await conn.fetchval("SELECT 1")  # its backend was terminated
        conn = await asyncpg.connect(dsn)
        await conn.execute("INSERT INTO kept VALUES (2)")
        server.crash()
        await server.start()
        assert "automatic recovery in progress" in server.log_file.read_text()
        conn = await asyncpg.connect(dsn)
        assert [r["n"] for r in await conn.fetch("SELECT n FROM kept ORDER BY n")] == [1, 2]
        await conn.close()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(dsn.replace(":payments-dev-only@", ":wrong@"))
    assert not server.directory.exists()
