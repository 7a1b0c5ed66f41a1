"""Redis or Postgres down → 503 with Retry-After and nothing written; timeouts → 504; readiness stays up (the
dependencies are shared by every pod: a blip must not unready them all) and reports the dependency down. A
connection lost once the write was sent is not "nothing was written": the answer says the outcome is unknown and how
to find out."""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import make_url

from tests.fixtures.payment_api import ApiFactory
from tests.fixtures.redis import RedisServer
from tests.fixtures.tcp_proxy import TcpProxy
from tests.integration.api.helpers import bearer, dsn, fetch, row_counts, valid_payment


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
    assert ready.status_code == 200, ready.text
    assert ready.json()["dependencies"]["redis"].startswith("DOWN: ")
    assert ready.json()["dependencies"]["postgres"] == "UP"
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
            ready = await mgmt.get("/health/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["dependencies"]["postgres"].startswith("DOWN: ")
            assert (await mgmt.get("/health/live")).status_code == 200
        postgres_proxy.restore()
        back = await client.post("/payments", json=valid_payment(), headers=bearer(tokens["order-service"]))
    assert back.status_code == 202, back.text


async def test_a_connection_lost_after_the_commit_is_answered_outcome_unknown_not_nothing_written(
    api_factory: ApiFactory, postgres_proxy: TcpProxy, tokens: dict[str, str], database_url: str
) -> None:
    proxied = make_url(database_url).set(port=postgres_proxy.port).render_as_string(hide_password=False)
    # One connection, so the create statement is already prepared on it when its reply is lost: the request the
    # server then answers is the write itself, and it answers only after the commit.
    api = await api_factory(database_url=proxied, db={"pool_size": 1}, api={"create_writers": 1})
    headers, body = bearer(tokens["order-service"]), valid_payment()
    async with api.client() as client:
        assert (await client.post("/payments", json=valid_payment(), headers=headers)).status_code == 202
        postgres_proxy.lose_next_reply()
        lost = await client.post("/payments", json=body, headers=headers)
        assert postgres_proxy.replies_lost == 1
        stored = await fetch(database_url, "SELECT payment_id FROM payments WHERE order_id = $1", body["orderId"])
        assert len(stored) == 1, "the write committed before its answer was lost"

        assert lost.status_code == 504, lost.text
        problem = lost.json()
        assert problem["type"].endswith("/outcome-unknown")
        assert "nothing was written" not in problem["detail"]
        assert "may have been created" in problem["detail"]
        assert "Idempotency-Key" in problem["detail"] and "orderId" in problem["detail"]
        assert lost.headers["retry-after"] == "1"

        # Following the advice without a key finds the payment instead of creating a second one.
        retried = await client.post("/payments", json=body, headers=headers)
    assert retried.status_code == 409, retried.text
    assert retried.headers["location"] == f"/payments/payment-{stored[0]['payment_id']}"
    assert retried.json()["paymentId"] == f"payment-{stored[0]['payment_id']}"
    assert len(await fetch(database_url, "SELECT 1 FROM payments WHERE order_id = $1", body["orderId"])) == 1


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
    assert ready.status_code == 200
    assert ready.json() == {"status": "UP", "components": {}, "dependencies": {"postgres": "UP", "redis": "UP"}}
    assert "http_server_requests_seconds" in metrics.text
