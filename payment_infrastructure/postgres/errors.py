"""Translate driver and pool failures into the application's error types (so the API can answer 503/504)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy import exc as sa_exc

from payment_application.errors import DependencyTimeout, DependencyUnavailable, IdCollision

QUERY_CANCELED = "57014"
LOCK_NOT_AVAILABLE = "55P03"
DEADLOCK_DETECTED = "40P01"
SERIALIZATION_FAILURE = "40001"
UNIQUE_VIOLATION = "23505"
# Tables whose keys are allocated ids (Redis counters): a duplicate there means the counters went backwards.
_ID_KEYED_TABLES = frozenset({"payments", "payment_orders"})
_RETRYABLE_STATES = {DEADLOCK_DETECTED, SERIALIZATION_FAILURE, "53300", "57P01", "57P02", "57P03"}


def sqlstate_of(error: BaseException) -> str | None:
    """The SQLSTATE anywhere in the cause chain (SQLAlchemy wraps the asyncpg error)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        state = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(state, str):
            return state
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
    return None


def _table_of(error: BaseException) -> str | None:
    """The table a constraint violation names, anywhere in the cause chain."""
    current: BaseException | None = error
    for _ in range(10):
        if current is None:
            return None
        table = getattr(current, "table_name", None)
        if isinstance(table, str):
            return table
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
    return None


def _is_connection_failure(error: BaseException) -> bool:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and len(chain) < 10:
        chain.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
    return any(
        isinstance(
            e,
            OSError
            | ConnectionError
            | TimeoutError
            | asyncpg.exceptions.ConnectionDoesNotExistError
            | asyncpg.exceptions.CannotConnectNowError
            | asyncpg.exceptions.InterfaceError
            | asyncpg.exceptions.TooManyConnectionsError,
        )
        for e in chain
    ) or (isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated)


def translate(error: BaseException) -> BaseException:
    """Map a database failure to DependencyTimeout / DependencyUnavailable; anything else is returned unchanged."""
    if isinstance(error, sa_exc.TimeoutError):
        return DependencyUnavailable("database", "connection pool exhausted")
    state = sqlstate_of(error)
    if state == QUERY_CANCELED:
        return DependencyTimeout("database", "statement timeout")
    if state == UNIQUE_VIOLATION and _table_of(error) in _ID_KEYED_TABLES:
        return IdCollision(f"an allocated id is already stored in {_table_of(error)}")
    if state == LOCK_NOT_AVAILABLE:
        return DependencyTimeout("database", "lock timeout")
    if state in _RETRYABLE_STATES:
        return DependencyUnavailable("database", f"transient failure (SQLSTATE {state})")
    if _is_connection_failure(error):
        return DependencyUnavailable("database", "cannot reach the database")
    return error


@asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    try:
        yield
    except (DependencyTimeout, DependencyUnavailable):
        raise
    except (TimeoutError, sa_exc.SQLAlchemyError, asyncpg.PostgresError, OSError) as error:
        mapped = translate(error)
        if mapped is error:
            raise
        raise mapped from error
