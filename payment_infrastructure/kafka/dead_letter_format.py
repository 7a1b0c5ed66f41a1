"""What a dead letter is: the headers a dead-lettering adds, and a read-only view of a record on a `.DLQ` topic.

Plain names and data, no broker client: the dead-letter publisher writes these headers, the inspector and the
`payments dlq` CLI read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from payment_domain.topics import DLQ_SUFFIX
from payment_infrastructure.kafka.records import ConsumedRecord

ERROR_CLASS = "x-error-class"
ERROR_MESSAGE = "x-error-message"
ERROR_STACKTRACE = "x-error-stacktrace"
ORIGINAL_TOPIC = "x-original-topic"
ORIGINAL_PARTITION = "x-original-partition"
ORIGINAL_OFFSET = "x-original-offset"
CONSUMER_GROUP = "x-consumer-group"
ATTEMPTS = "x-attempts"
RECOVERED_AT = "x-recovered-at"

DEAD_LETTER_HEADERS = frozenset(
    {
        ERROR_CLASS,
        ERROR_MESSAGE,
        ERROR_STACKTRACE,
        ORIGINAL_TOPIC,
        ORIGINAL_PARTITION,
        ORIGINAL_OFFSET,
        CONSUMER_GROUP,
        ATTEMPTS,
        RECOVERED_AT,
    }
)
"""The headers a dead-lettering adds; a replay strips exactly these and keeps every original header."""


class TopicNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: ConsumedRecord

    @property
    def error_class(self) -> str | None:
        return self.record.header(ERROR_CLASS)

    @property
    def error_message(self) -> str | None:
        return self.record.header(ERROR_MESSAGE)

    @property
    def original_topic(self) -> str:
        return self.record.header(ORIGINAL_TOPIC) or source_topic_of(self.record.topic)

    @property
    def original_partition(self) -> int | None:
        return _int_or_none(self.record.header(ORIGINAL_PARTITION))

    @property
    def original_offset(self) -> int | None:
        return _int_or_none(self.record.header(ORIGINAL_OFFSET))

    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(name, value) for name, value in self.record.headers.items() if name not in DEAD_LETTER_HEADERS]


@dataclass(frozen=True, slots=True)
class Replayed:
    letter: DeadLetter
    topic: str
    partition: int
    offset: int


def source_topic_of(dlq_topic: str) -> str:
    return dlq_topic.removesuffix(DLQ_SUFFIX)


def is_dlq(topic: str) -> bool:
    return topic.endswith(DLQ_SUFFIX)


def _int_or_none(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None
