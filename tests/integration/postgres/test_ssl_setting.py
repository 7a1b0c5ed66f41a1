"""`DB__SSL` reaches both drivers: the SQLAlchemy engine and the API's plain asyncpg pool."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from devstack.run import _on_loopback
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.pool import create_pool
from payment_infrastructure.postgres.settings import DatabaseSettings

ENCRYPTED = "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)"


async def test_disable_opens_plain_connections_on_both_drivers(database_url: str) -> None:
    settings = DatabaseSettings(url=database_url, ssl="disable", pool_size=1)
    engine = create_engine(settings, application_name="ssl-test")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text(ENCRYPTED))).scalar_one() is False
    finally:
        await engine.dispose()
    pool = await create_pool(settings, application_name="ssl-test")
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval(ENCRYPTED) is False
    finally:
        await pool.close()


async def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="ssl"):
        DatabaseSettings(ssl="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("postgresql+asyncpg://postgres@127.0.0.1:5432/payments", True),
        ("postgresql+asyncpg://postgres@localhost/payments", True),
        ("postgresql+asyncpg://user:pw@db.internal:5432/payments", False),
    ],
)
def test_the_local_stack_disables_tls_only_for_a_server_on_this_machine(url: str, loopback: bool) -> None:
    assert _on_loopback(url) is loopback
