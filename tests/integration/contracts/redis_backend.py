"""The backend of a Redis port's contract cases: the fake, or the session's Redis."""

from __future__ import annotations

import pytest

from tests.fixtures.services import RedisEndpoint


def redis_backend_of(request: pytest.FixtureRequest) -> RedisEndpoint | None:
    """None for the fake; the session's Redis (started only for the real adapter's cases) otherwise."""
    if request.param == "fake":
        return None
    server: RedisEndpoint = request.getfixturevalue("redis_server")
    return server
