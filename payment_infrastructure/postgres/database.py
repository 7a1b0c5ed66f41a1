"""Create a database if it is missing (start-up of `make run`, test fixtures)."""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import make_url


def admin_dsn(url: str) -> tuple[str, str]:
    """The plain DSN of the server's `postgres` database (same role and host), and the database `url` names."""
    parsed = make_url(url)
    name = parsed.database
    if not name:
        raise ValueError(f"database URL has no database name: {url}")
    admin = parsed.set(drivername="postgresql", database="postgres")
    return admin.render_as_string(hide_password=False), name


async def create_database_if_missing(url: str) -> bool:
    """Return True when the database was created."""
    server, name = admin_dsn(url)
    conn = await asyncpg.connect(server)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        await conn.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await conn.close()


async def drop_database(url: str) -> None:
    server, name = admin_dsn(url)
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
