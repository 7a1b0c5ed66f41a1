"""The envelope's one wire form: orjson bytes with the original's field names, written once and published as-is."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from payment_domain.events import EventEnvelope, EventType, JsonValue


class EnvelopeDecodeError(ValueError):
    """The bytes are not an envelope we understand (a poison message)."""


def envelope_to_bytes(envelope: EventEnvelope) -> bytes:
    return orjson.dumps(envelope.to_wire())


def envelope_from_bytes(raw: bytes) -> EventEnvelope:
    try:
        doc: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise EnvelopeDecodeError(f"not JSON: {error}") from error
    if not isinstance(doc, dict):
        raise EnvelopeDecodeError("envelope must be a JSON object")
    try:
        data = doc["data"]
        if not isinstance(data, dict):
            raise EnvelopeDecodeError("envelope.data must be an object")
        timestamp = datetime.fromisoformat(str(doc["timestamp"]).replace("Z", "+00:00"))
        if timestamp.tzinfo is None:
            raise EnvelopeDecodeError("envelope.timestamp must carry a zone")
        event_id = _text(doc, "eventId")
        return EventEnvelope(
            event_id=event_id,
            event_type=EventType(doc["eventType"]),
            aggregate_id=_text(doc, "aggregateId"),
            data=_json_mapping(data),
            timestamp=timestamp,
            trace_id=_text(doc, "traceId"),
            parent_event_id=str(doc.get("parentEventId") or event_id),
        )
    except (KeyError, ValueError, TypeError) as error:
        if isinstance(error, EnvelopeDecodeError):
            raise
        raise EnvelopeDecodeError(f"invalid envelope: {error!r}") from error


def _text(doc: Mapping[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str) or not value:
        raise EnvelopeDecodeError(f"envelope.{name} must be a non-empty string")
    return value


def _json_mapping(data: Mapping[str, Any]) -> dict[str, JsonValue]:
    out: dict[str, JsonValue] = {}
    for key, value in data.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            raise EnvelopeDecodeError(f"envelope.data.{key} must be a scalar")
        out[str(key)] = value
    return out
