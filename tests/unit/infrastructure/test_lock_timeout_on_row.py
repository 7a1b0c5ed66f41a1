"""Which lock a lock timeout waited for: a row (a key another request holds) or a whole table (DDL, maintenance)."""

from __future__ import annotations

import asyncpg
import pytest

from payment_infrastructure.postgres.errors import lock_timeout_on_row


def _lock_timeout(context: str | None) -> asyncpg.PostgresError:
    error = asyncpg.exceptions.LockNotAvailableError("canceling statement due to lock timeout")
    error.context = context  # type: ignore[attr-defined]
    return error


@pytest.mark.parametrize(
    "context",
    [
        'while inserting index tuple (0,1) in relation "idempotency_keys"',
        'while locking tuple (12,7) in relation "idempotency_keys"\nSQL statement "..."',
        "beim Einfügen von Indextupel (0,1) in Relation »idempotency_keys«",  # lc_messages = de
    ],
)
def test_a_wait_for_a_row_names_its_table_in_any_language(context: str) -> None:
    assert lock_timeout_on_row(_lock_timeout(context)) == "idempotency_keys"


def test_a_wait_for_a_whole_table_names_no_row() -> None:
    assert lock_timeout_on_row(_lock_timeout(None)) is None


def test_other_errors_are_no_lock_timeout() -> None:
    error = asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout")
    error.context = 'while locking tuple (0,1) in relation "payments"'  # type: ignore[attr-defined]
    assert lock_timeout_on_row(error) is None
