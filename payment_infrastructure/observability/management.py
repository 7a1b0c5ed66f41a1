"""The management server every deployable runs on its own port: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ReadinessCheck = Callable[[], Awaitable[None]]
"""Raises (anything) when the dependency is not usable."""


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def create_management_app(checks: Mapping[str, ReadinessCheck], *, check_timeout_seconds: float = 1.0) -> Starlette:
    async def live(_: Request) -> Response:
        return _json({"status": "UP"})

    async def ready(_: Request) -> Response:
        async def run(name: str, check: ReadinessCheck) -> tuple[str, str]:
            try:
                await asyncio.wait_for(check(), timeout=check_timeout_seconds)
                return name, "UP"
            except Exception as error:  # every failure means "not ready"; the detail is for the operator
                return name, f"DOWN: {type(error).__name__}: {error}"[:300]

        results = dict(await asyncio.gather(*(run(n, c) for n, c in checks.items())))
        up = all(v == "UP" for v in results.values())
        return _json({"status": "UP" if up else "DOWN", "components": results}, 200 if up else 503)

    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several worker processes: aggregate every worker's samples, not just this one's.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/health/live", live),
            Route("/health/ready", ready),
            Route("/metrics", metrics),
        ]
    )
