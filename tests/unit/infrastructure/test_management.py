"""The management server: liveness fails only on its own checks, readiness on local checks, never on dependencies."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx

from payment_infrastructure.observability.management import ReadinessCheck, create_management_app


async def ok() -> None:
    return None


async def down() -> None:
    raise ConnectionRefusedError("connection refused")


def client(
    checks: Mapping[str, ReadinessCheck],
    *,
    dependencies: Mapping[str, ReadinessCheck] | None = None,
    liveness: Mapping[str, ReadinessCheck] | None = None,
    check_timeout_seconds: float = 1.0,
) -> httpx.AsyncClient:
    app = create_management_app(
        checks, dependencies=dependencies, liveness=liveness, check_timeout_seconds=check_timeout_seconds
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mgmt")


async def test_a_dependency_down_is_reported_in_the_body_and_readiness_stays_up() -> None:
    async with client(checks={}, dependencies={"postgres": down, "redis": ok}) as mgmt:
        ready = await mgmt.get("/health/ready")
        live = await mgmt.get("/health/live")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "UP",
        "components": {},
        "dependencies": {"postgres": "DOWN: ConnectionRefusedError: connection refused", "redis": "UP"},
    }
    assert live.status_code == 200


async def test_a_local_check_that_fails_unreadies_the_process_and_leaves_it_alive() -> None:
    async with client(checks={"consumers": down}, dependencies={"postgres": ok}) as mgmt:
        ready = await mgmt.get("/health/ready")
        live = await mgmt.get("/health/live")
    assert ready.status_code == 503
    assert ready.json()["components"] == {"consumers": "DOWN: ConnectionRefusedError: connection refused"}
    assert ready.json()["dependencies"] == {"postgres": "UP"}
    assert live.status_code == 200


async def test_a_liveness_check_that_fails_answers_503_on_live() -> None:
    async with client(checks={}, liveness={"poll-loops": down}) as mgmt:
        live = await mgmt.get("/health/live")
    assert live.status_code == 503
    assert live.json() == {
        "status": "DOWN",
        "components": {"poll-loops": "DOWN: ConnectionRefusedError: connection refused"},
    }


async def test_a_check_that_hangs_counts_as_down_after_the_timeout() -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    async with client(checks={}, liveness={"poll-loops": hangs}, check_timeout_seconds=0.05) as mgmt:
        live = await mgmt.get("/health/live")
    assert live.status_code == 503 and live.json()["components"]["poll-loops"].startswith("DOWN: TimeoutError")
