"""`DB__SSL` reaches every connection: the SQLAlchemy engine, the API's plain asyncpg pool, the outbox listener."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from devstack.run import _on_loopback
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.outbox_notifications import PostgresOutboxNotifications
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


async def test_the_outbox_listener_connection_follows_the_setting_too(database_url: str) -> None:
    listener = PostgresOutboxNotifications(database_url, ssl="disable", channel="ssl_test_channel")
    await listener.start()
    try:
        assert listener.connected
        engine = create_engine(DatabaseSettings(url=database_url, ssl="disable", pool_size=1), application_name="t")
        try:
            async with engine.connect() as conn:
                encrypted = await conn.execute(
                    text(
                        "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
                        "WHERE a.datname = current_database() AND a.query = 'LISTEN \"ssl_test_channel\"'"
                    )
                )
                assert encrypted.scalars().all() == [False]
        finally:
            await engine.dispose()
    finally:
        await listener.stop()
