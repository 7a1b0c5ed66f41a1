"""The log shipper's parts without OpenSearch: following files like `tail -F`, lines as documents with stable ids,
and a loop that keeps a batch the sink refused until it is taken (tests/e2e/test_log_search.py ships for real)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from payment_infrastructure.logs.documents import Shipped, document_id, document_of
from payment_infrastructure.logs.follow import FollowedFile
from payment_infrastructure.logs.settings import LogsSettings
from services.log_shipper.shipper import LogShipper


def test_a_followed_file_may_appear_later_and_gives_only_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "part.log"
    followed = FollowedFile(path)
    assert followed.read_lines(10) == []
    path.write_bytes(b'{"a": 1}\n\n{"b": ')
    assert followed.read_lines(10) == [b'{"a": 1}']
    with path.open("ab") as log:
        log.write(b'2}\n{"c": 3}\n')
    assert followed.read_lines(1) == [b'{"b": 2}']
    assert followed.read_lines(10) == [b'{"c": 3}']
    assert followed.read_lines(10) == []


def test_a_truncated_file_is_read_again_from_its_start_and_a_rotated_one_is_reopened(tmp_path: Path) -> None:
    path = tmp_path / "part.log"
    path.write_bytes(b"one\ntwo\n")
    followed = FollowedFile(path)
    assert followed.read_lines(10) == [b"one", b"two"]
    path.write_bytes(b"3\n")  # truncated in place, then written: shorter than what was read
    assert followed.read_lines(10) == [b"3"]
    os.rename(path, tmp_path / "part.log.1")
    assert followed.read_lines(10) == []  # rotated away: the old file stays open until a new one appears
    path.write_bytes(b"four\n")
    assert followed.read_lines(10) == [b"four"]
    followed.close()


def test_a_json_line_is_its_own_document_and_any_other_line_a_message() -> None:
    line = orjson.dumps({"event": "event_handled", "event_id": "e-1", "@timestamp": "2026-12-07T06:00:00Z"})
    assert document_of(line, source="payment-consumers") == {
        "event": "event_handled",
        "event_id": "e-1",
        "@timestamp": "2026-12-07T06:00:00Z",
        "log_source": "payment-consumers",
    }
    text = document_of(b"Traceback (most recent call last):", source="api")
    assert text["message"] == "Traceback (most recent call last):" and text["@timestamp"]
    assert document_id(line, source="a") == document_id(line, source="a")
    assert document_id(line, source="a") != document_id(line, source="b")


class FlakySink:
    """Fails the first `failures` batches, then keeps every document it is sent, except those `refuse` says no to
    (as OpenSearch refuses a document whose field clashes with the mapping)."""

    def __init__(self, failures: int = 0, refuse: Callable[[dict[str, Any]], bool] = lambda _doc: False) -> None:
        self.failures = failures
        self.refuse = refuse
        self.kept: dict[str, dict[str, Any]] = {}
        self.calls = 0

    def ship(self, documents: Sequence[tuple[str, dict[str, Any]]]) -> Shipped:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("opensearch is down")
        shipped = Shipped()
        for doc_id, doc in documents:
            if self.refuse(doc):
                shipped.refused[doc_id] = "mapper_parsing_exception: failed to parse field [workers] of type [long]"
            elif doc_id in self.kept:
                shipped.duplicates += 1
            else:
                self.kept[doc_id] = doc
                shipped.created += 1
        return shipped


def run_until(shipper: LogShipper, condition: Callable[[], bool]) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=lambda: shipper.run(stop))
    thread.start()
    try:
        wait_for(condition)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def wait_for(condition: Callable[[], bool], *, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_refused_batch_is_kept_and_sent_again_so_no_line_is_lost_or_doubled(tmp_path: Path) -> None:
    path = tmp_path / "payment-consumers.log"
    path.write_bytes(b"".join(orjson.dumps({"n": n}) + b"\n" for n in range(7)))
    sink = FlakySink(failures=2)
    settings = LogsSettings(batch_size=3, flush_interval_seconds=0.01, poll_interval_seconds=0.01)
    shipper = LogShipper(sink, [FollowedFile(path)], settings)

    written = []

    def seventh_then_eighth() -> bool:
        if len(sink.kept) == 7 and not written:
            with path.open("ab") as log:
                written.append(log.write(orjson.dumps({"n": 7}) + b"\n"))
        return len(sink.kept) == 8

    run_until(shipper, seventh_then_eighth)
    assert sorted(doc["n"] for doc in sink.kept.values()) == list(range(8))
    assert {doc["log_source"] for doc in sink.kept.values()} == {"payment-consumers"}
    assert (shipper.report.created, shipper.report.duplicates, shipper.report.failures) == (8, 0, 2)


def test_a_line_refused_for_its_content_is_sent_as_its_ids_and_text_and_holds_up_no_other(tmp_path: Path) -> None:
    path = tmp_path / "payment-consumers.log"
    lines = [
        {"event": "outbox_dispatcher_started", "workers": 2},
        {"event": "payment_consumers_starting", "workers": ["enqueuer"], "event_id": "e-1", "trace_id": "t-1"},
        {"event": "event_handled", "event_id": "e-2"},
    ]
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    # Refuses a list of workers, and a refused document's stand-in too when its event says so.
    sink = FlakySink(refuse=lambda doc: isinstance(doc.get("workers"), list) or doc.get("event") == "never")
    settings = LogsSettings(batch_size=10, flush_interval_seconds=0.01, poll_interval_seconds=0.01)
    shipper = LogShipper(sink, [FollowedFile(path)], settings)
    run_until(shipper, lambda: len(sink.kept) == 3)
    stand_in = next(doc for doc in sink.kept.values() if "ingest_error" in doc)
    ids = (stand_in["event_id"], stand_in["trace_id"], stand_in["event"])
    assert ids == ("e-1", "t-1", "payment_consumers_starting")
    assert orjson.loads(stand_in["message"])["workers"] == ["enqueuer"]
    assert "workers" not in stand_in and "mapper_parsing_exception" in stand_in["ingest_error"]
    assert (shipper.report.created, shipper.report.refused, shipper.report.dropped) == (3, 1, 0)

    with path.open("ab") as log:
        log.write(orjson.dumps({"event": "never", "workers": ["x"]}) + b"\n" + orjson.dumps({"n": 1}) + b"\n")
    run_until(shipper, lambda: len(sink.kept) == 4)
    assert (shipper.report.refused, shipper.report.dropped) == (2, 1)
