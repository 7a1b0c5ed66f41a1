"""The management server every deployable runs on its own port: liveness, readiness and Prometheus metrics.

Three kinds of check, each `async () -> None` that raises (anything) when it fails:
- `liveness`: this process is wedged and only a restart helps (a consumer's poll loop that stopped turning);
  /health/live answers 503 when one fails. Never a shared dependency: a database outage must not restart every pod.
- `readiness`: this process cannot do its work even though its dependencies may be fine (local state only);
  /health/ready answers 503 when one fails.
- `dependencies`: shared services (Postgres, Redis) reported in /health/ready's body, never failing it: a 15 s
  database blip would otherwise unready every pod at once, and the load balancer's "no endpoints" would hide the
  5xx answers the alerts count.
"""

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
"""Raises (anything) when the check fails; used for liveness, readiness and dependency checks alike."""


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def create_management_app(
    checks: Mapping[str, ReadinessCheck],
    *,
    dependencies: Mapping[str, ReadinessCheck] | None = None,
    liveness: Mapping[str, ReadinessCheck] | None = None,
    check_timeout_seconds: float = 1.0,
) -> Starlette:
    """`checks` decide readiness; `dependencies` are only reported; `liveness` decide liveness (see above)."""
    dependencies = dependencies or {}
    liveness = liveness or {}

    async def run(name: str, check: ReadinessCheck) -> tuple[str, str]:
        try:
            await asyncio.wait_for(check(), timeout=check_timeout_seconds)
            return name, "UP"
        except Exception as error:  # every failure means "down"; the detail is for the operator
            return name, f"DOWN: {type(error).__name__}: {error}"[:300]

    async def run_all(group: Mapping[str, ReadinessCheck]) -> dict[str, str]:
        return dict(await asyncio.gather(*(run(n, c) for n, c in group.items())))

    async def live(_: Request) -> Response:
        results = await run_all(liveness)
        up = all(v == "UP" for v in results.values())
        return _json({"status": "UP" if up else "DOWN", "components": results}, 200 if up else 503)

    async def ready(_: Request) -> Response:
        results, reported = await asyncio.gather(run_all(checks), run_all(dependencies))
        up = all(v == "UP" for v in results.values())
        body: dict[str, object] = {"status": "UP" if up else "DOWN", "components": results}
        if dependencies:
            body["dependencies"] = reported
        return _json(body, 200 if up else 503)

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
