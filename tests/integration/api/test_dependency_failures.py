"""Redis or Postgres down → 503 with Retry-After and nothing written; timeouts → 504; readiness follows."""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import make_url

from tests.fixtures.payment_api import ApiFactory
from tests.fixtures.redis import RedisServer
from tests.fixtures.tcp_proxy import TcpProxy
from tests.integration.api.helpers import bearer, dsn, row_counts, valid_payment


async def test_redis_down_is_503_and_nothing_is_written(
    api_factory: ApiFactory, private_redis_server: RedisServer, tokens: dict[str, str], database_url: str
) -> None:
    # Block size 1: every payment needs Redis, so the outage is seen on the very next request.
    api = await api_factory(redis={"url": private_redis_server.url, "id_block_size": 1})
    async with api.client() as client:
        ok = await client.post("/payments", json=valid_payment(), headers=bearer(tokens["order-service"]))
        assert ok.status_code == 202
        private_redis_server.stop()
        before = await row_counts(database_url)
        down = await client.post("/payments", json=valid_payment(), headers=bearer(tokens["order-service"]))
    assert down.status_code == 503, down.text
    assert down.headers["retry-after"] == "1"
    assert "redis" in down.json()["detail"]
    assert await row_counts(database_url) == before
    async with api.client(base_url=api.management_url) as mgmt:
        ready = await mgmt.get("/health/ready")
        live = await mgmt.get("/health/live")
    assert ready.status_code == 503 and ready.json()["components"]["redis"].startswith("DOWN")
    assert live.status_code == 200


async def test_postgres_down_is_503_and_recovers(
    api_factory: ApiFactory, postgres_proxy: TcpProxy, tokens: dict[str, str], database_url: str
) -> None:
    proxied = make_url(database_url).set(port=postgres_proxy.port).render_as_string(hide_password=False)
    api = await api_factory(database_url=proxied)
    async with api.client() as client:
        assert (
            await client.post("/payments", json=valid_payment(), headers=bearer(tokens["order-service"]))
        ).status_code == 202
        before = await row_counts(database_url)
        await postgres_proxy.sever()
        down = await client.post("/payments", json=valid_payment(), headers=bearer(tokens["order-service"]))
        assert down.status_code == 503, down.text
        assert down.headers["retry-after"] == "1"
        assert await row_counts(database_url) == before
        async with api.client(base_url=api.management_url) as mgmt:
            assert (await mgmt.get("/health/ready")).status_code == 503
        postgres_proxy.restore()
        back = await client.post("/payments", json=valid_payment(), headers=bearer(tokens["order-service"]))
    assert back.status_code == 202, back.text


async def _lock_payments(database_url: str) -> tuple[asyncpg.Connection, object]:
    conn = await asyncpg.connect(dsn(database_url))
    tx = conn.transaction()
    await tx.start()
    await conn.execute("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE")
    return conn, tx


async def test_lock_timeout_is_504_and_nothing_is_written(
    api_factory: ApiFactory, tokens: dict[str, str], database_url: str
) -> None:
    api = await api_factory(db={"lock_timeout_ms": 100, "statement_timeout_ms": 2000})
    before = await row_counts(database_url)
    conn, tx = await _lock_payments(database_url)
    try:
        async with api.client() as client:
            response = await client.post("/payments", json=valid_payment(), headers=bearer(tokens["order-service"]))
    finally:
        await tx.rollback()  # type: ignore[attr-defined]
        await conn.close()
    assert response.status_code == 504, response.text
    assert await row_counts(database_url) == before


async def test_statement_timeout_is_504(api_factory: ApiFactory, tokens: dict[str, str], database_url: str) -> None:
    api = await api_factory(db={"lock_timeout_ms": 5000, "statement_timeout_ms": 150})
    conn, tx = await _lock_payments(database_url)
    try:
        async with api.client() as client:
            response = await client.post("/payments", json=valid_payment(), headers=bearer(tokens["order-service"]))
    finally:
        await tx.rollback()  # type: ignore[attr-defined]
        await conn.close()
    assert response.status_code == 504
    assert response.json()["type"].endswith("timeout")


async def test_readiness_is_up_when_dependencies_answer(api_factory: ApiFactory) -> None:
    api = await api_factory()
    async with api.client(base_url=api.management_url) as mgmt:
        ready = await mgmt.get("/health/ready")
        metrics = await mgmt.get("/metrics")
    assert ready.status_code == 200 and ready.json()["components"] == {"postgres": "UP", "redis": "UP"}
    assert "http_server_requests_seconds" in metrics.text
