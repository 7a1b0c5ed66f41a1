"""After a Postgres crash, asyncpg can hand back a connection whose protocol the crash left mid-exchange, and the next
statement fails in the driver itself (InternalClientError). That is the database being unavailable: answered 503/504,
never a 500 (a create whose statement met it has an unknown outcome; the client retries with the same key), and a
consumer's record that met it waits for the database instead of being dead-lettered as a bug."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from payment_application.errors import DependencyUnavailable, WriteOutcomeUnknown
from payment_infrastructure.kafka.failures import FailureKind, classify
from payment_infrastructure.postgres import payment_repository
from payment_infrastructure.postgres.errors import translate

STATE_ERROR = "cannot switch to state 12; another operation (2) is in progress"


class _OpenConnection:
    def is_closed(self) -> bool:
        return False


def test_a_driver_state_error_means_the_database_is_unavailable() -> None:
    assert isinstance(translate(asyncpg.InternalClientError(STATE_ERROR)), DependencyUnavailable)


def test_a_consumer_record_that_meets_a_driver_state_error_waits_for_the_database() -> None:
    failure = classify(asyncpg.InternalClientError(STATE_ERROR))
    assert (failure.kind, failure.dependency) == (FailureKind.DEPENDENCY, "database")


@pytest.mark.asyncio
@pytest.mark.parametrize("items", [1, 3])
async def test_a_create_that_meets_a_driver_state_error_has_an_unknown_outcome(
    monkeypatch: pytest.MonkeyPatch, items: int
) -> None:
    async def write(conn: Any, writes: Sequence[Any]) -> list[Any]:
        raise asyncpg.InternalClientError(STATE_ERROR)

    monkeypatch.setattr(payment_repository, "_write", write)
    with pytest.raises(WriteOutcomeUnknown):
        await payment_repository.write_payments(_OpenConnection(), [object()] * items)  # type: ignore[arg-type, list-item]
