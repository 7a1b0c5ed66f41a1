"""The benchmark's database profile against this machine's real server, with or without pg_stat_statements."""

from __future__ import annotations

import asyncpg

from payment_infrastructure.postgres.database import admin_dsn
from payment_infrastructure.postgres.pool import plain_dsn
from tests.benchmarks.e2e_statements import StatementProfile, difference

MARKER = "SELECT 42 AS statement_profile_marker"


async def test_a_server_with_the_view_profiles_the_window_and_one_without_gives_none(database_url: str) -> None:
    profile = await StatementProfile.open(database_url)
    conn = await asyncpg.connect(plain_dsn(database_url))
    try:
        if profile is None:
            # None must mean the view cannot answer on this server, not that the check went wrong.
            server = await asyncpg.connect(admin_dsn(database_url)[0])
            try:
                await server.fetchval("SELECT 1 FROM pg_stat_statements LIMIT 1")
            except asyncpg.PostgresError:
                return  # no extension in `postgres`, or the library not loaded
            finally:
                await server.close()
            raise AssertionError("pg_stat_statements answers, yet no profile was opened")
        try:
            before = await profile.snapshot()
            for _ in range(3):
                await conn.fetchval(MARKER)
            ran = difference(before, await profile.snapshot())
        finally:
            await profile.close()
    finally:
        await conn.close()
    marker = [s for s in ran if "statement_profile_marker" in s.query]
    assert [s.calls for s in marker] == [3]
