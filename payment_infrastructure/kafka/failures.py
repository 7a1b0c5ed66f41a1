"""Why a handler failed, which decides what happens to its record.

- poison: the input can never succeed (undecodable, invalid, about an order that does not exist). The handler
  says so by raising PoisonMessage; the record goes to the DLQ at once.
- dependency: a backing service (database, Redis, the broker, the network) is down, slow or fenced over. The
  record is fine and will succeed once the service is back, so it is retried in place for as long as the outage
  lasts, holding its partition; dead-lettering it would turn an outage into manual replays.
- unexpected: anything else, most likely a bug. Retried a few times in place, then dead-lettered, so one bad
  record cannot stop its partition for good; it is replayed once the code is fixed.

Adapters translate driver errors into DependencyUnavailable / DependencyTimeout at their edge; the driver types
are recognised here as well because the Kafka publisher raises aiokafka's own errors and a raw one may still slip
through an adapter. Only explicit causes (`raise ... from`) are followed: an error merely raised while handling
another (`__context__`) says nothing about why the record failed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import asyncpg
from aiokafka.errors import (
    BrokerNotAvailableError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    KafkaUnavailableError,
    ProducerClosed,
)
from redis import exceptions as redis_errors
from sqlalchemy import exc as sa_exc

from payment_application.errors import DependencyTimeout, DependencyUnavailable
from payment_infrastructure.kafka.records import PoisonMessage
from payment_infrastructure.postgres.errors import DRIVER_OWN_ERRORS
from payment_infrastructure.postgres.errors import translate as translate_database_error

_MAX_CAUSES = 10
# Not marked retriable by aiokafka, but they say "the broker did not answer" (or, for a closed producer, that the
# process is stopping and the record is about to be handed back), never "this record is bad".
_KAFKA_UNAVAILABLE = (
    KafkaTimeoutError,
    KafkaConnectionError,
    KafkaUnavailableError,
    BrokerNotAvailableError,
    ProducerClosed,
)
_REDIS_UNAVAILABLE = (
    redis_errors.ConnectionError,  # includes BusyLoadingError: a restarted Redis loading its data
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # writing to a replica that was the primary a moment ago
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
)


class FailureKind(enum.Enum):
    POISON = "poison"
    DEPENDENCY = "dependency"
    UNEXPECTED = "unexpected"


@dataclass(frozen=True, slots=True)
class Failure:
    kind: FailureKind
    dependency: str | None = None
    """For a dependency failure, which one of DEPENDENCY_NAMES."""


DEPENDENCY_NAMES = ("database", "redis", "kafka", "network", "other")
"""Every value `Failure.dependency` takes (the dependency label of the consumer's retry metric)."""


POISON = Failure(FailureKind.POISON)
UNEXPECTED = Failure(FailureKind.UNEXPECTED)


def classify(error: BaseException) -> Failure:
    if isinstance(error, PoisonMessage):
        return POISON
    current: BaseException | None = error
    for _ in range(_MAX_CAUSES):
        if current is None:
            break
        dependency = _dependency_of(current)
        if dependency is not None:
            return Failure(FailureKind.DEPENDENCY, dependency)
        current = current.__cause__
    return UNEXPECTED


def _dependency_of(error: BaseException) -> str | None:
    if isinstance(error, DependencyUnavailable | DependencyTimeout):
        return _known_name(error.dependency)
    if isinstance(error, (sa_exc.SQLAlchemyError, asyncpg.PostgresError, *DRIVER_OWN_ERRORS)):
        translated = translate_database_error(error)
        return "database" if isinstance(translated, DependencyUnavailable | DependencyTimeout) else None
    if isinstance(error, _REDIS_UNAVAILABLE):
        return "redis"
    if isinstance(error, KafkaError):
        return "kafka" if error.retriable or isinstance(error, _KAFKA_UNAVAILABLE) else None
    if isinstance(error, OSError):  # ConnectionError, TimeoutError (asyncio's too), name resolution failures
        return "network"
    return None


def _known_name(dependency: str) -> str:
    """Keeps the metric's label set small whatever an adapter calls its dependency."""
    return dependency if dependency in {"database", "redis", "kafka"} else "other"
