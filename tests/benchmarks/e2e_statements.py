"""`bench_e2e --profile S`: where the database's time goes, from `pg_stat_statements` when the server has it.

Postgres is one of the largest costs per order, and py-spy cannot see into it. When the server loads
`pg_stat_statements` and the extension exists in the `postgres` database, the profile window's statements of the
benchmark's own database are read twice (at its start and its end) and the difference reported: calls, rows and
time per statement, largest first. Nothing is reset, so the benchmark needs no superuser; the product never depends
on the extension. To have it on this machine's server (as root):

    echo "shared_preload_libraries = 'pg_stat_statements'" > /etc/postgresql/15/main/conf.d/99-statements.conf
    su postgres -c "pg_ctlcluster 15 main restart" && su postgres -c "psql -c 'CREATE EXTENSION pg_stat_statements'"
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from payment_infrastructure.postgres.database import admin_dsn

# The view answers only when the server loaded the library (`shared_preload_libraries` itself is for superusers).
_AVAILABLE = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')"
_PROBE = "SELECT 1 FROM pg_stat_statements LIMIT 1"
_READ = """
    SELECT s.queryid, s.query, sum(s.calls)::bigint AS calls, sum(s.total_exec_time) AS ms, sum(s.rows)::bigint AS rows
      FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
     WHERE d.datname = $1 AND s.queryid IS NOT NULL
     GROUP BY s.queryid, s.query
"""
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Statement:
    query: str
    calls: int
    ms: float
    rows: int


Snapshot = dict[int, Statement]


class StatementProfile:
    """Opened on the server's `postgres` database as the benchmark's own role; `None` from `open` when the server
    has no `pg_stat_statements`."""

    def __init__(self, conn: asyncpg.Connection, database: str) -> None:
        self._conn = conn
        self._database = database

    @classmethod
    async def open(cls, database_url: str) -> StatementProfile | None:
        server, database = admin_dsn(database_url)
        conn = await asyncpg.connect(server)
        try:
            if await conn.fetchval(_AVAILABLE):
                await conn.fetchval(_PROBE)
                return cls(conn, database)
        except asyncpg.PostgresError:
            pass
        await conn.close()
        return None

    async def snapshot(self) -> Snapshot:
        rows = await self._conn.fetch(_READ, self._database)
        return {r["queryid"]: Statement(r["query"] or "", r["calls"], r["ms"], r["rows"]) for r in rows}

    async def close(self) -> None:
        await self._conn.close()


def difference(before: Snapshot, after: Snapshot) -> list[Statement]:
    """What ran between the two snapshots, largest total time first."""
    empty = Statement("", 0, 0.0, 0)
    ran = []
    for queryid, now in after.items():
        was = before.get(queryid, empty)
        if now.calls > was.calls:
            ran.append(Statement(now.query, now.calls - was.calls, now.ms - was.ms, now.rows - was.rows))
    return sorted(ran, key=lambda s: s.ms, reverse=True)


def markdown(statements: list[Statement] | None, seconds: int, *, rows: int = 15) -> str:
    lines = ["", "## postgres (pg_stat_statements)", ""]
    if statements is None:
        lines.append(
            "Not measured: the server has no `pg_stat_statements` (how to load it: the docstring of "
            "`tests/benchmarks/e2e_statements.py`)."
        )
        return "\n".join(lines) + "\n"
    total = sum(s.ms for s in statements) or 1.0  # every statement of the window, not only the rows shown
    lines += [
        f"The benchmark database's statements over the same {seconds} s, by execution time (which includes waiting "
        "for row locks; parse, protocol and commit costs are outside it).",
        "",
        "| share | total ms | calls | ms per call | rows per call | statement |",
        "|--:|--:|--:|--:|--:|---|",
    ]
    for s in statements[:rows]:
        text = _SPACES.sub(" ", s.query).strip()
        text = text if len(text) <= 110 else text[:107] + "..."
        lines.append(
            f"| {s.ms / total:.1%} | {s.ms:,.0f} | {s.calls:,} | {s.ms / s.calls:.3f} | {s.rows / s.calls:.1f} "
            f"| `{text.replace('|', '/')}` |"
        )
    return "\n".join(lines) + "\n"
