"""How many Postgres connections each of a process's pools holds, read at scrape time.

Every process has one or two pools (the SQLAlchemy engine; the API also its plain asyncpg pool for creates), each
bounded by `DB__POOL_SIZE` (+ `DB__MAX_OVERFLOW` for the engine): the sum over every pod is what the release may
open against the server's `max_connections` (docs/operations.md, "Postgres connections"). Exported as
`db_pool_connections{pool,state}` (in_use, idle) and `db_pool_max_connections{pool}`; a pool saturated at its
maximum is where creates start answering 503 "connection pool exhausted" and records wait. The server's own
`max_connections` is exported too (`db_server_max_connections`), read by the engine's first connections, so that
a dashboard compares what the release holds and may open with what the server allows (behind PgBouncer it is the
server's value, not the bouncer's).

A collector on the default registry: with several API worker processes (PROMETHEUS_MULTIPROC_DIR) it is not
aggregated, and each process's pools are then not shown (one process per pod is the default).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PoolReading:
    in_use: int
    idle: int
    maximum: int


def asyncpg_reading(pool: asyncpg.Pool) -> PoolReading:
    size, idle = pool.get_size(), pool.get_idle_size()
    return PoolReading(in_use=size - idle, idle=idle, maximum=pool.get_max_size())


def engine_reading(engine: AsyncEngine) -> PoolReading:
    pool = engine.sync_engine.pool
    if not isinstance(pool, QueuePool):  # NullPool and friends hold nothing between uses
        return PoolReading(in_use=0, idle=0, maximum=0)
    return PoolReading(
        in_use=pool.checkedout(), idle=pool.checkedin(), maximum=pool.size() + max(pool._max_overflow, 0)
    )


class PoolCollector(Collector):
    def __init__(self) -> None:
        self._pools: dict[str, Callable[[], PoolReading]] = {}
        self.server_max_connections: int | None = None
        """The server's `max_connections` as last read; None until a connection has read it."""

    def watch(self, name: str, read: Callable[[], PoolReading]) -> None:
        self._pools[name] = read

    def forget(self, name: str) -> None:
        self._pools.pop(name, None)

    def collect(self) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "db_pool_connections", "Postgres connections a pool holds, by state", labels=["pool", "state"]
        )
        maximum = GaugeMetricFamily(
            "db_pool_max_connections", "The most Postgres connections a pool may open", labels=["pool"]
        )
        for name, read in sorted(self._pools.items()):
            reading = read()
            connections.add_metric([name, "in_use"], reading.in_use)
            connections.add_metric([name, "idle"], reading.idle)
            maximum.add_metric([name], reading.maximum)
        yield connections
        yield maximum
        server = GaugeMetricFamily(
            "db_server_max_connections", "The Postgres server's max_connections, as this process last read it"
        )
        if self.server_max_connections is not None:  # unknown until a connection read it: no sample, not a guess
            server.add_metric([], self.server_max_connections)
        yield server


POOLS = PoolCollector()
REGISTRY.register(POOLS)


def watch_engine(name: str, engine: AsyncEngine) -> None:
    """Export the engine's pool, and the server's `max_connections` read on each new connection it opens."""
    POOLS.watch(name, lambda: engine_reading(engine))
    if not event.contains(engine.sync_engine, "connect", read_server_max_connections):
        event.listen(engine.sync_engine, "connect", read_server_max_connections)


def read_server_max_connections(dbapi_connection: Any, _entry: ConnectionPoolEntry) -> None:
    """One round trip per new physical connection (pools keep theirs for long); a failure only leaves it unknown.

    Read on the raw asyncpg connection, outside any transaction, so nothing is left open on the pooled one.
    """
    try:
        value = dbapi_connection.run_async(lambda connection: connection.fetchval("SHOW max_connections"))
        POOLS.server_max_connections = int(value)
    except Exception as error:  # the metric is an aid: a connection must not fail for it
        log.warning("server_max_connections_unread", error=type(error).__name__, detail=str(error))


def watch_asyncpg_pool(name: str, pool: asyncpg.Pool) -> None:
    POOLS.watch(name, lambda: asyncpg_reading(pool))
