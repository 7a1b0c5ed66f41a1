"""RedisIdGenerator: ids handed out from blocks reserved with INCRBY, so most ids cost no round trip.

Keys are the original's (`id-generator:payment`, `id-generator:payment-order`). Redis may lose them (a restart
without persistence), so three guards stop an id from ever being reused: at start-up the counter is raised
atomically (Lua) above the highest id in Postgres; a block that comes back at or below that floor, or below an id
already handed out, means Redis lost its data while we ran and triggers the same re-sync before any id from it is
used; and a create that still meets a stored id (another process's rows, written after our last sync) calls
`recover_from_collision`, which re-syncs and drops the block held here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from payment_application.errors import DependencyUnavailable
from payment_application.ports.ids import IdNamespace

FloorProvider = Callable[[IdNamespace], Awaitable[int]]
"""Returns the highest id already persisted for a namespace (e.g. SELECT max(...) in Postgres)."""

# Raise the counter to at least ARGV[1]; return the counter afterwards. Atomic, unlike the original's GET-then-SET.
_RAISE_FLOOR = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if current < floor then
  redis.call('SET', KEYS[1], floor)
  return floor
end
return current
"""


class RedisIdGenerator:
    def __init__(self, redis: Redis, *, block_size: int, floor_provider: FloorProvider, resync_margin: int) -> None:
        self._redis = redis
        self._block_size = block_size
        self._floor_provider = floor_provider
        self._margin = resync_margin
        self._next: dict[IdNamespace, int] = {}
        self._end: dict[IdNamespace, int] = {}
        self._highest_issued: dict[IdNamespace, int] = {}
        self._synced_floor: dict[IdNamespace, int] = {}
        self._locks = {ns: asyncio.Lock() for ns in IdNamespace}
        self._raise_floor = redis.register_script(_RAISE_FLOOR)

    async def sync_with_database(self) -> None:
        """Start-up: make sure Redis is ahead of every id Postgres already holds."""
        for namespace in IdNamespace:
            await self._resync(namespace)

    async def next_ids(self, namespace: IdNamespace, count: int) -> list[int]:
        if count < 1:
            raise ValueError("count must be >= 1")
        async with self._locks[namespace]:
            ids: list[int] = []
            while len(ids) < count:
                start, end = self._next.get(namespace, 1), self._end.get(namespace, 0)
                if start > end:
                    start, end = await self._reserve(namespace, max(self._block_size, count - len(ids)))
                take = min(count - len(ids), end - start + 1)
                ids.extend(range(start, start + take))
                self._next[namespace], self._end[namespace] = start + take, end
            self._highest_issued[namespace] = ids[-1]
            return ids

    async def _reserve(self, namespace: IdNamespace, size: int) -> tuple[int, int]:
        try:
            end = int(await self._redis.incrby(namespace.value, size))
            start = end - size + 1
            if start <= max(self._highest_issued.get(namespace, 0), self._synced_floor.get(namespace, 0)):
                await self._resync(namespace)
                end = int(await self._redis.incrby(namespace.value, size))
                start = end - size + 1
        except (RedisError, OSError) as error:
            raise DependencyUnavailable("redis", f"cannot allocate ids: {error}") from error
        return start, end

    async def recover_from_collision(self) -> None:
        for namespace in IdNamespace:
            async with self._locks[namespace]:
                self._next[namespace], self._end[namespace] = 1, 0  # the block held here is spoilt
                await self._resync(namespace)

    async def _resync(self, namespace: IdNamespace) -> None:
        persisted = await self._floor_provider(namespace)
        floor = max(persisted, self._highest_issued.get(namespace, 0))
        # The margin covers blocks other processes may hold but have not written yet.
        target = floor + self._margin if floor else 0
        try:
            await self._raise_floor(keys=[namespace.value], args=[target])
        except (RedisError, OSError) as error:
            raise DependencyUnavailable("redis", f"cannot sync id counters: {error}") from error
        self._synced_floor[namespace] = max(self._synced_floor.get(namespace, 0), target)
