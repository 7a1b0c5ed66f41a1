"""Translate driver and pool failures into the application's error types (so the API can answer 503/504).

A failure before a statement is sent (no connection, pool exhausted) and a statement error the server reports
(severity ERROR: its transaction is rolled back) both mean nothing was written. Once a write is sent, anything else
(the connection lost, a FATAL ending the session) can arrive after the commit: `translate_sent` answers that with
`WriteOutcomeUnknown`, never with "nothing was written"."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy import exc as sa_exc

from payment_application.errors import DependencyTimeout, DependencyUnavailable, IdCollision, WriteOutcomeUnknown

DRIVER_OWN_ERRORS = (asyncpg.InterfaceError, asyncpg.InternalClientError)
"""The driver's own errors, not the server's: a connection closed under it, or a protocol a server crash left
mid-exchange ("cannot switch to state 12; another operation (2) is in progress"). The database's, like a lost
connection."""

QUERY_CANCELED = "57014"
LOCK_NOT_AVAILABLE = "55P03"
DEADLOCK_DETECTED = "40P01"
SERIALIZATION_FAILURE = "40001"
UNIQUE_VIOLATION = "23505"
# The unique index that keeps one payment per (client, order).
ONE_PAYMENT_PER_ORDER = "payments_client_order_key"
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


def _chain(error: BaseException) -> list[BaseException]:
    """The error and its causes (SQLAlchemy's `orig`, then `__cause__` / `__context__`), at most ten deep."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and len(chain) < 10 and all(current is not seen for seen in chain):
        chain.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
    return chain


def _attribute(error: BaseException, name: str) -> str | None:
    """A string field of the server's error report (table, constraint...), anywhere in the cause chain."""
    for e in _chain(error):
        value = getattr(e, name, None)
        if isinstance(value, str):
            return value
    return None


# The context line of a wait for a row, 'while inserting index tuple (0,1) in relation "idempotency_keys"' in
# English: the tuple id and the table name, last on the line, survive any lc_messages; the words and quotes do not.
_ROW_WAIT = re.compile(r"\(\d+,\d+\)[^\n]*?(\w+)\W*$", re.MULTILINE)


def lock_timeout_on_row(error: BaseException) -> str | None:
    """For a lock timeout that waited for a row (another transaction writing the same key), the row's table; None
    for any other error, and for a lock timeout that waited for a whole table (DDL or maintenance holding it), which
    has no context line."""
    if sqlstate_of(error) != LOCK_NOT_AVAILABLE:
        return None
    match = _ROW_WAIT.search(_attribute(error, "context") or "")
    return match.group(1) if match else None


def _table_of(error: BaseException) -> str | None:
    return _attribute(error, "table_name")


def order_already_paid(error: BaseException) -> bool:
    """The statement tried a second payment for a (client, order) that has one."""
    return sqlstate_of(error) == UNIQUE_VIOLATION and _attribute(error, "constraint_name") == ONE_PAYMENT_PER_ORDER


def rolled_back(error: BaseException) -> bool:
    """The server reported this statement's own error (severity ERROR), which it sends after rolling the statement's
    transaction back. A FATAL or PANIC ends the session and may follow a commit; a client-side error (connection
    lost, timeout, cancellation) says nothing about what the server did."""
    for e in _chain(error):
        if isinstance(e, asyncpg.PostgresError):
            severity = getattr(e, "severity_en", None) or getattr(e, "severity", None)
            return severity == "ERROR"
    return False


def _is_connection_failure(error: BaseException) -> bool:
    return any(
        isinstance(
            e,
            (
                OSError,
                ConnectionError,
                TimeoutError,
                asyncpg.exceptions.ConnectionDoesNotExistError,
                asyncpg.exceptions.CannotConnectNowError,
                asyncpg.exceptions.TooManyConnectionsError,
                *DRIVER_OWN_ERRORS,
            ),
        )
        for e in _chain(error)
    ) or (isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated)


def translate(error: BaseException) -> BaseException:
    """Map a database failure to DependencyTimeout / DependencyUnavailable; anything else is returned unchanged."""
    if isinstance(error, sa_exc.TimeoutError):
        return DependencyUnavailable("database", "connection pool exhausted")
    state = sqlstate_of(error)
    if state == QUERY_CANCELED:
        return DependencyTimeout("database", "statement timeout")
    if state == UNIQUE_VIOLATION and _table_of(error) in _ID_KEYED_TABLES and not order_already_paid(error):
        return IdCollision(f"an allocated id is already stored in {_table_of(error)}")
    if state == LOCK_NOT_AVAILABLE:
        return DependencyTimeout("database", "lock timeout")
    if state in _RETRYABLE_STATES:
        return DependencyUnavailable("database", f"transient failure (SQLSTATE {state})")
    if _is_connection_failure(error):
        return DependencyUnavailable("database", "cannot reach the database")
    return error


def translate_sent(error: BaseException) -> BaseException:
    """Map the failure of a write that may have reached the server: as `translate` if the server rolled it back,
    otherwise `WriteOutcomeUnknown`."""
    if rolled_back(error):
        return translate(error)
    return WriteOutcomeUnknown("database", f"no answer after the write was sent ({type(error).__name__}: {error})")


@asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    try:
        yield
    except (DependencyTimeout, DependencyUnavailable):
        raise
    except (
        TimeoutError,
        sa_exc.SQLAlchemyError,
        asyncpg.PostgresError,
        *DRIVER_OWN_ERRORS,
        OSError,
    ) as error:
        mapped = translate(error)
        if mapped is error:
            raise
        raise mapped from error
