"""Trace ids: the original's `X-Trace-Id`, and W3C `traceparent` (version 00) for everything else."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_SAFE_TRACE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    span_id: str
    sampled: bool = True

    @property
    def traceparent(self) -> str:
        """A traceparent for our own span; a non-W3C X-Trace-Id gets a derived W3C id so the header stays valid."""
        w3c = self.trace_id if re.fullmatch(r"[0-9a-f]{32}", self.trace_id) else _hex32(self.trace_id)
        return f"00-{w3c}-{self.span_id}-{'01' if self.sampled else '00'}"


def _hex32(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def new_span_id() -> str:
    return secrets.token_hex(8)


def new_trace_id() -> str:
    return secrets.token_hex(16)


def trace_from_headers(x_trace_id: str | None, traceparent: str | None) -> TraceContext:
    """X-Trace-Id wins when it is sane (the original's header); then traceparent; else a fresh W3C id."""
    span = new_span_id()
    parsed = _TRACEPARENT.match(traceparent.strip().lower()) if traceparent else None
    sampled = parsed is None or parsed.group(3) != "00"
    if x_trace_id and _SAFE_TRACE_ID.match(x_trace_id.strip()):
        return TraceContext(x_trace_id.strip(), span, sampled)
    if parsed and parsed.group(1) != "0" * 32:
        return TraceContext(parsed.group(1), span, sampled)
    return TraceContext(new_trace_id(), span)
