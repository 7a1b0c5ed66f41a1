"""What a handler receives, and the one exception that tells the runtime "never retry this".

Kept apart from `consumer.py` (which re-exports them) so the DLQ publisher and the runtime can share them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: dict[str, bytes] = field(default_factory=dict)
    timestamp_ms: int = 0

    @property
    def key_bytes(self) -> bytes | None:
        """The key exactly as it was on the wire (see `decode_key`)."""
        return encode_key(self.key)

    def header(self, name: str) -> str | None:
        raw = self.headers.get(name)
        return None if raw is None else raw.decode("utf-8", "replace")


class PoisonMessage(Exception):
    """Raised by a handler for input that can never succeed (undeserializable, invalid): no retries, DLQ at once."""


Handler = Callable[[ConsumedRecord], Awaitable[None]]


def decode_key(raw: bytes | None) -> str | None:
    """Keys are paymentOrderIds (UTF-8); surrogateescape keeps any other bytes, so a dead letter keeps its key."""
    return None if raw is None else raw.decode("utf-8", "surrogateescape")


def encode_key(key: str | None) -> bytes | None:
    return None if key is None else key.encode("utf-8", "surrogateescape")


def header_dict(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, bytes]:
    return {name: bytes(value or b"") for name, value in headers or ()}


def consumed_record(record: Any) -> ConsumedRecord:
    """From aiokafka's ConsumerRecord (untyped) to our frozen record; a null value (tombstone) becomes b""."""
    return ConsumedRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=decode_key(record.key),
        value=bytes(record.value or b""),
        headers=header_dict(record.headers),
        timestamp_ms=record.timestamp,
    )
