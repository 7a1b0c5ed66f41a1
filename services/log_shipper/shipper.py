"""The shipping loop: read what the followed files gained, send it in bounded batches, wait, again; until stopped.

A batch OpenSearch cannot take is kept and sent again after a growing pause (at most 30 s), so a restarted or
briefly unreachable OpenSearch loses no lines; the files are not read further meanwhile. A line refused for its
content (a field whose type clashes with the mapping) is sent once more as its ids and its text (`refused_document`),
and dropped, counted, if even that is refused: one odd line never holds up the others."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from payment_infrastructure.logs.documents import Shipped, document_id, document_of, refused_document
from payment_infrastructure.logs.follow import FollowedFile
from payment_infrastructure.logs.settings import LogsSettings

log = structlog.get_logger(__name__)

MAX_PAUSE_SECONDS = 30.0


class LogSink(Protocol):
    def ship(self, documents: Sequence[tuple[str, dict[str, Any]]]) -> Shipped: ...


@dataclass
class ShipperReport:
    created: int = 0
    duplicates: int = 0
    failures: int = 0
    refused: int = 0  # lines sent again as their ids and text
    dropped: int = 0  # lines refused even so


@dataclass
class LogShipper:
    sink: LogSink
    files: list[FollowedFile]
    settings: LogsSettings
    monotonic: Callable[[], float] = time.monotonic
    report: ShipperReport = field(default_factory=ShipperReport)
    _pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _oldest: float | None = None
    _resent: set[str] = field(default_factory=set)

    def run(self, stop: threading.Event) -> ShipperReport:
        """Until `stop` is set; then everything read so far is sent (one last try) before returning."""
        pause = 0.0
        while not stop.is_set():
            read = self._read()
            if self._due() and not self._send():
                pause = min(MAX_PAUSE_SECONDS, max(2 * pause, self.settings.poll_interval_seconds))
                stop.wait(pause)
                continue
            pause = 0.0
            if not read:
                stop.wait(self.settings.poll_interval_seconds)
        self._read()
        self._send()
        return self.report

    def _read(self) -> int:
        room = self.settings.batch_size - len(self._pending)
        read = 0
        for followed in self.files:
            if room <= 0:
                break
            source = followed.path.stem
            for line in followed.read_lines(room):
                self._pending.append((document_id(line, source=source), document_of(line, source=source)))
                read += 1
                room -= 1
        if self._pending and self._oldest is None:
            self._oldest = self.monotonic()
        return read

    def _due(self) -> bool:
        if not self._pending:
            return False
        waited = self.monotonic() - (self._oldest or self.monotonic())
        return len(self._pending) >= self.settings.batch_size or waited >= self.settings.flush_interval_seconds

    def _send(self) -> bool:
        if not self._pending:
            return True
        try:
            shipped = self.sink.ship(self._pending)
        except Exception as error:  # unreachable, overloaded, timed out: keep the batch and try again
            self.report.failures += 1
            log.warning(
                "log_batch_not_shipped", lines=len(self._pending), error_class=type(error).__name__, error=str(error)
            )
            return False
        self.report.created += shipped.created
        self.report.duplicates += shipped.duplicates
        refused = [(doc_id, doc) for doc_id, doc in self._pending if doc_id in shipped.refused]
        resend = [(i, refused_document(doc, shipped.refused[i])) for i, doc in refused if i not in self._resent]
        if refused:
            dropped = len(refused) - len(resend)
            self.report.refused += len(resend)
            self.report.dropped += dropped
            log.warning(
                "log_lines_refused", lines=len(refused), dropped=dropped, reason=shipped.refused[refused[0][0]][:300]
            )
        self._pending, self._resent = resend, {doc_id for doc_id, _ in resend}
        if resend:
            return self._send()
        self._oldest = None
        return True
