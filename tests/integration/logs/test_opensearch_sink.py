"""OpenSearchLogSink against a real node with the repository's index template: the ids are keywords under their
promised names, a value of another type than the mapping's (a list where a number was) is kept unindexed and the
line taken (ignore_malformed), a clash the template cannot absorb (text where an object was) is reported per line
(not raised), and the line's stand-in is found by its ids."""

from __future__ import annotations

import uuid

import httpx

from devstack.opensearch import OpenSearchNode
from payment_infrastructure.logs.documents import refused_document
from payment_infrastructure.logs.opensearch import OpenSearchLogSink
from payment_infrastructure.logs.settings import LogsSettings
from services.log_shipper.bootstrap import index_template

T0 = "2026-12-07T06:00:00.000000Z"


def search(node: OpenSearchNode, stream: str, field: str, value: str) -> list[dict[str, object]]:
    httpx.post(f"{node.url}/{stream}/_refresh", timeout=10).raise_for_status()
    response = httpx.post(f"{node.url}/{stream}/_search", json={"query": {"term": {field: value}}}, timeout=10)
    response.raise_for_status()
    return [hit["_source"] for hit in response.json()["hits"]["hits"]]


async def test_lines_of_clashing_shapes_are_taken_or_reported_and_stay_findable_by_id(
    opensearch: OpenSearchNode,
) -> None:
    stream = f"payments-logs-sink-{uuid.uuid4().hex[:8]}"
    sink = OpenSearchLogSink(LogsSettings(opensearch_url=opensearch.url, data_stream=stream))
    try:
        sink.install_template(index_template())
        first = sink.ship([("a", {"@timestamp": T0, "event": "started", "workers": 2, "detail": {"nested": 1}})])
        assert (first.created, first.duplicates, first.refused) == (1, 0, {})
        clash = {"@timestamp": T0, "event": "event_handled", "event_id": "e-9", "detail": "text"}
        second = sink.ship(
            [
                ("a", {"@timestamp": T0, "event": "started", "workers": 2, "detail": {"nested": 1}}),
                ("b", {"@timestamp": T0, "event": "starting", "workers": ["enqueuer"], "payment_order_id": "po-1"}),
                ("c", clash),
            ]
        )
        assert (second.created, second.duplicates, set(second.refused)) == (1, 1, {"c"})
        assert "detail" in second.refused["c"]
        third = sink.ship([("c", refused_document(clash, second.refused["c"]))])
        assert (third.created, third.refused) == (1, {})
    finally:
        sink.close()
    (by_order,) = search(opensearch, stream, "paymentOrderId", "po-1")
    assert by_order["workers"] == ["enqueuer"]  # kept in the line as written, only not indexed as a number
    (by_event,) = search(opensearch, stream, "eventId", "e-9")
    assert by_event["event"] == "event_handled" and "ingest_error" in by_event
