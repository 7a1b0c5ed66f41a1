"""One payment is one trace: the real processes (API, outbox dispatcher, payment-consumers) export their spans by
OTLP/HTTP to a receiver in this test, and the spans of one POST form a single tree from the request to the last
consumer step of every order, across the processes and the Kafka hops; a payment its caller did not sample is
recorded by none of them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from devstack.keycloak import Keycloak
from payment_domain.topics import Topic
from tests.e2e.helpers import FINAL, payment_body
from tests.fixtures.otlp import OtlpReceiver, ReceivedSpan
from tests.fixtures.pipeline import PipelineProcesses, running_pipeline_processes
from tests.fixtures.psp import PspSimulatorHandle
from tests.integration.api.helpers import bearer

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def otlp_receiver() -> AsyncIterator[OtlpReceiver]:
    async for receiver in OtlpReceiver.running():
        yield receiver


@pytest.fixture
async def traced_pipeline(
    otlp_receiver: OtlpReceiver, clean_psp_simulator: PspSimulatorHandle, keycloak: Keycloak, tmp_path: Path
) -> AsyncIterator[PipelineProcesses]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        # Every root sampled, every child following its parent: a caller's "not sampled" is obeyed (plain always_on
        # would record that payment too).
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    async with running_pipeline_processes(
        psp=clean_psp_simulator, issuer_url=keycloak.issuer_url, data_dir=tmp_path, env=env
    ) as processes:
        yield processes


# What one order's journey must show, in its trace: (span name, kind), kinds as in the OTLP protobuf.
SERVER, CLIENT, PRODUCER, CONSUMER = (
    SpanProto.SPAN_KIND_SERVER,
    SpanProto.SPAN_KIND_CLIENT,
    SpanProto.SPAN_KIND_PRODUCER,
    SpanProto.SPAN_KIND_CONSUMER,
)
DROPPED_TRACE = "0af7651916cd43dd8448eb211c80319c"
NOT_SAMPLED = f"00-{DROPPED_TRACE}-b7ad6b7169203331-00"
PER_ORDER = [
    (f"{Topic.PAYMENT_ORDER_CREATED.value} publish", PRODUCER),
    (f"{Topic.PAYMENT_ORDER_CREATED.value} process", CONSUMER),
    (f"{Topic.PSP_CALL_REQUESTED.value} publish", PRODUCER),
    (f"{Topic.PSP_CALL_REQUESTED.value} process", CONSUMER),
    (f"{Topic.PSP_RESULT_UPDATED.value} publish", PRODUCER),
    (f"{Topic.PSP_RESULT_UPDATED.value} process", CONSUMER),
]


async def test_one_payment_is_one_connected_trace_from_post_to_final_state(
    traced_pipeline: PipelineProcesses, otlp_receiver: OtlpReceiver, tokens: dict[str, str]
) -> None:
    token = tokens["order-service"]
    async with httpx.AsyncClient(base_url=traced_pipeline.api_url, timeout=10) as http:
        # First a payment whose caller says "not sampled": it flows, and no process records a span of it.
        dropped = await http.post(
            "/payments", json=payment_body(sellers=2), headers={**bearer(token), "traceparent": NOT_SAMPLED}
        )
        assert dropped.status_code == 202, dropped.text
        assert dropped.headers["traceparent"].startswith(f"00-{DROPPED_TRACE}-")
        assert dropped.headers["traceparent"].endswith("-00")
        await _wait_until_final(http, token, dropped.json()["paymentId"], traced_pipeline, within=60)
        created = await http.post("/payments", json=payment_body(sellers=2), headers=bearer(token))
        assert created.status_code == 202, created.text
        trace_id = created.headers["traceparent"].split("-")[1]
        payment_id = created.json()["paymentId"]
        await _wait_until_final(http, token, payment_id, traced_pipeline, within=60)

    orders = 2
    # The request and the create, then per order its hops and the PSP call (a child of the PSP-call step).
    spans = await _spans_of(otlp_receiver, trace_id, count=2 + orders * (len(PER_ORDER) + 1), within=30)

    # Each process exports in order: the dropped payment's spans, had there been any, came before these.
    assert not [s.name for s in otlp_receiver.spans if s.trace_id == DROPPED_TRACE]
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if not s.parent_span_id]
    assert [(r.name, r.kind, r.service) for r in roots] == [("POST /payments", SERVER, "payment-service")]
    orphans = [s.name for s in spans if s.parent_span_id and s.parent_span_id not in by_id]
    assert not orphans, f"spans whose parent is not in the trace: {orphans}"
    create = _one(spans, "payment create transaction")
    assert by_id[create.parent_span_id] == roots[0]
    # Each order: a chain from the create, through the dispatcher and every consumer hop, each the child of the last.
    last_steps = [s for s in spans if s.name == f"{Topic.PSP_RESULT_UPDATED.value} process"]
    assert len(last_steps) == orders
    for last in last_steps:
        chain = _ancestry(last, by_id)
        assert [(s.name, s.kind) for s in chain] == [
            ("POST /payments", SERVER),
            ("payment create transaction", SpanProto.SPAN_KIND_INTERNAL),
            *PER_ORDER,
        ], [s.name for s in chain]
        services = [s.service for s in chain]
        assert services[:2] == ["payment-service", "payment-service"]
        assert services[2] == "payment-outbox-dispatcher"
        assert set(services[3:]) == {"payment-consumers"}
    charges = [s for s in spans if s.name == "psp charge"]
    assert len(charges) == orders
    assert {(by_id[c.parent_span_id].name, c.kind) for c in charges} == {
        (f"{Topic.PSP_CALL_REQUESTED.value} process", CLIENT)
    }
    # Log lines written inside a span carry its ids: the API's and the PSP-call step's.
    logged = _log_lines_with_span(traced_pipeline, trace_id, by_id)
    assert {"payment_created", "psp_charged"} <= set(logged), traced_pipeline.log_tails()


async def _wait_until_final(
    http: httpx.AsyncClient, token: str, payment_id: str, processes: PipelineProcesses, *, within: float
) -> None:
    deadline = time.monotonic() + within
    while True:
        response = await http.get(f"/payments/{payment_id}", headers=bearer(token))
        assert response.status_code == 200, response.text
        statuses = [o["status"] for o in response.json()["paymentOrders"]]
        if all(s in FINAL for s in statuses):
            assert set(statuses) == {"SUCCESSFUL_FINAL"}
            return
        assert time.monotonic() < deadline, f"orders {statuses} not final in {within}s\n{processes.log_tails()}"
        await asyncio.sleep(0.1)


async def _spans_of(receiver: OtlpReceiver, trace_id: str, *, count: int, within: float) -> list[ReceivedSpan]:
    """The trace's spans once at least `count` arrived (the processes export in batches, every 100 ms)."""
    deadline = time.monotonic() + within
    while True:
        spans = [s for s in receiver.spans if s.trace_id == trace_id]
        if len(spans) >= count:
            return spans
        assert time.monotonic() < deadline, f"{len(spans)} of {count} spans within {within}s: {[s.name for s in spans]}"
        await asyncio.sleep(0.1)


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{name}: {len(found)} spans"
    return found[0]


def _ancestry(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    chain = [span]
    while chain[-1].parent_span_id:
        chain.append(by_id[chain[-1].parent_span_id])
    return chain[::-1]


def _log_lines_with_span(processes: PipelineProcesses, trace_id: str, by_id: dict[str, ReceivedSpan]) -> list[str]:
    lines = []
    for path in processes.logs.values():
        for raw in path.read_bytes().splitlines():
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(line, dict) and line.get("trace_id") == trace_id and line.get("span_id") in by_id:
                lines.append(str(line.get("event")))
    return lines
