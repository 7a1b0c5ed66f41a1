"""A log line as an OpenSearch document: our JSON lines as they are, anything else as a `message`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson


def document_of(line: bytes, *, source: str, now: datetime | None = None) -> dict[str, Any]:
    """The line's own fields (structlog's JSON), plus `log_source`; a line that is not a JSON object (a traceback
    printed by the interpreter, a JVM's text) becomes `{"message": ...}`. Every document has an `@timestamp`: the
    data stream requires one."""
    try:
        parsed = orjson.loads(line)
    except orjson.JSONDecodeError:
        parsed = None
    document: dict[str, Any] = (
        parsed if isinstance(parsed, dict) else {"message": line.decode("utf-8", errors="replace")}
    )
    document.setdefault("@timestamp", (now or datetime.now(UTC)).isoformat())
    document["log_source"] = source
    return document


def document_id(line: bytes, *, source: str) -> str:
    """The same line of the same source is the same document: a shipper started again from a file's beginning
    indexes nothing twice (OpenSearch answers 409 to the second `create`)."""
    return hashlib.blake2b(source.encode() + b"\0" + line, digest_size=16).hexdigest()


# The fields a refused line keeps as they are (the ids it is searched by): keywords in the index template.
KEPT_WHEN_REFUSED = (
    "@timestamp",
    "app",
    "level",
    "logger",
    "event",
    "event_id",
    "trace_id",
    "parent_event_id",
    "aggregate_id",
    "payment_order_id",
    "payment_id",
    "event_type",
    "log_source",
)


@dataclass
class Shipped:
    """What a bulk request did: lines created, lines already there, and lines refused for good (id -> reason)."""

    created: int = 0
    duplicates: int = 0
    refused: dict[str, str] = field(default_factory=dict)


def refused_document(document: dict[str, Any], reason: str) -> dict[str, Any]:
    """A document OpenSearch refused for its content (a field whose type clashes with the mapping): its ids as
    they were, the whole line as `message`, and why, so the line stays searchable by id and nothing blocks."""
    kept = {key: document[key] for key in KEPT_WHEN_REFUSED if isinstance(document.get(key), str)}
    kept.setdefault("@timestamp", datetime.now(UTC).isoformat())
    return {**kept, "message": orjson.dumps(document, default=str).decode(), "ingest_error": reason[:1000]}
