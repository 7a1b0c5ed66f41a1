"""One asyncio Redis client per process, with short timeouts so an outage surfaces as a fast 503."""

from __future__ import annotations

from redis.asyncio import Redis

from payment_infrastructure.redis.settings import RedisSettings


def create_redis(settings: RedisSettings) -> Redis:
    return Redis.from_url(
        settings.url,
        socket_timeout=settings.socket_timeout_seconds,
        socket_connect_timeout=settings.connect_timeout_seconds,
        max_connections=settings.max_connections,
        health_check_interval=15,
    )
