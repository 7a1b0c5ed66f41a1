"""A log line as an OpenSearch document: our JSON lines as they are, anything else as a `message`."""

from __future__ import annotations

import hashlib
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
