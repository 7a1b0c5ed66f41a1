"""Logs searchable by id, as the platform promises: the real processes (API, outbox dispatcher, payment-consumers)
write their JSON lines to files, the log shipper (`python -m services.log_shipper`, a process of its own) follows
them into a real OpenSearch node through the index template of infra/opensearch/, and one payment's lines are found
by each of eventId, traceId, parentEventId and paymentOrderId with a search query. The ids searched for are read
from the database's outbox and the API's answers, not from the logs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from devstack.keycloak import Keycloak
from devstack.opensearch import OpenSearchNode
from tests.e2e.helpers import FINAL, payment_body
from tests.fixtures.pipeline import PipelineProcesses, running_pipeline_processes
from tests.fixtures.ports import die_with_parent
from tests.fixtures.psp import PROJECT_ROOT, PspSimulatorHandle
from tests.integration.api.helpers import bearer, fetch

pytestmark = pytest.mark.asyncio(loop_scope="session")

Hit = dict[str, Any]
STEPS = {"payment_order_created", "payment_order_psp_call_requested", "payment_order_psp_result_updated"}


@pytest.fixture
async def shipped_pipeline(
    opensearch: OpenSearchNode, clean_psp_simulator: PspSimulatorHandle, keycloak: Keycloak, tmp_path: Path
) -> AsyncIterator[tuple[PipelineProcesses, str]]:
    """The pipeline's processes, and a log shipper following their log files into a data stream of this test."""
    data_stream = f"payments-logs-test-{uuid.uuid4().hex[:8]}"
    async with running_pipeline_processes(
        psp=clean_psp_simulator, issuer_url=keycloak.issuer_url, data_dir=tmp_path, env={}
    ) as processes:
        env = {
            **os.environ,
            "PAYMENTS_LOGS__OPENSEARCH_URL": opensearch.url,
            "PAYMENTS_LOGS__DATA_STREAM": data_stream,
            "PAYMENTS_LOGS__FLUSH_INTERVAL_SECONDS": "0.2",
        }
        with (tmp_path / "log-shipper.log").open("wb") as shipper_log:
            shipper = subprocess.Popen(
                [sys.executable, "-m", "services.log_shipper", *map(str, processes.logs.values())],
                env=env,
                cwd=PROJECT_ROOT,
                stdout=shipper_log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        try:
            yield processes, data_stream
        finally:
            shipper.terminate()
            await asyncio.to_thread(shipper.wait, 20)
        # Every line the processes wrote fitted the index template as it was (none sent again as a stand-in).
        lines = [orjson.loads(line) for line in (tmp_path / "log-shipper.log").read_bytes().splitlines() if line]
        (stopped,) = [line for line in lines if line.get("event") == "log_shipper_stopped"]
        assert (stopped["refused"], stopped["dropped"]) == (0, 0), stopped
        assert stopped["created"] > 0


async def test_one_payments_lines_are_found_by_each_promised_id(
    shipped_pipeline: tuple[PipelineProcesses, str], opensearch: OpenSearchNode, tokens: dict[str, str]
) -> None:
    processes, data_stream = shipped_pipeline
    began = time.monotonic()
    token = tokens["order-service"]
    async with httpx.AsyncClient(base_url=processes.api_url, timeout=10) as http:
        created = await http.post("/payments", json=payment_body(sellers=2), headers=bearer(token))
        assert created.status_code == 202, created.text
        payment_id = created.json()["paymentId"]
        orders = await _wait_until_final(http, token, payment_id, processes, within=60)
    order_ids = [o["paymentOrderId"] for o in orders]
    numeric = [order_id.rsplit("-", 1)[1] for order_id in order_ids]
    rows = await fetch(
        processes.database_url,
        "SELECT event_id, aggregate_id, trace_id FROM outbox_event "
        "WHERE event_type = 'payment_order_created' AND aggregate_id = ANY($1::text[])",
        numeric,
    )
    assert len(rows) == len(order_ids)
    (trace_id,) = {str(row["trace_id"]) for row in rows}
    assert trace_id == created.headers["x-trace-id"]

    async with httpx.AsyncClient(base_url=opensearch.url, timeout=10) as search:
        # traceId: the API's line of the create and every consumer step of both orders.
        by_trace = await _wait_for_hits(
            search,
            data_stream,
            "traceId",
            trace_id,
            lambda hits: (
                {"payment-service", "payment-consumers"} <= {h["app"] for h in hits}
                and len([h for h in hits if h["event"] == "event_handled"]) >= 3 * len(order_ids)
            ),
            processes,
        )
        assert {h["trace_id"] for h in by_trace} == {trace_id}
        assert any(h["event"] == "payment_created" and h["payment_id"] == payment_id for h in by_trace)

        for row, order_id in zip(sorted(rows, key=lambda r: numeric.index(r["aggregate_id"])), order_ids, strict=True):
            # paymentOrderId: the API's create line (all of the payment's orders) and each step of this order.
            by_order = await _wait_for_hits(
                search,
                data_stream,
                "paymentOrderId",
                order_id,
                lambda hits: (
                    any(h["event"] == "payment_created" for h in hits)
                    and {h.get("event_type") for h in hits if h["event"] == "event_handled"} >= STEPS
                ),
                processes,
            )
            assert {h["aggregate_id"] for h in by_order if h["event"] == "event_handled"} == {row["aggregate_id"]}

            # eventId: the order's first event, handled by the enqueuer.
            event_id = str(row["event_id"])
            by_event = await _wait_for_hits(
                search,
                data_stream,
                "eventId",
                event_id,
                lambda hits: any(h["event"] == "event_handled" for h in hits),
                processes,
            )
            assert {(h["event_id"], h["event_type"], h["payment_order_id"]) for h in by_event} == {
                (event_id, "payment_order_created", order_id)
            }

            # parentEventId: the events it caused (the PSP call it requested), the root itself (its own parent).
            by_parent = await _wait_for_hits(
                search,
                data_stream,
                "parentEventId",
                event_id,
                lambda hits: any(h["event_id"] != event_id for h in hits),  # noqa: B023
                processes,
            )
            children = {h["event_type"] for h in by_parent if h["event_id"] != event_id}
            assert children == {"payment_order_psp_call_requested"}, by_parent
            assert {h["parent_event_id"] for h in by_parent} == {event_id}
    assert time.monotonic() - began < 60


async def _wait_until_final(
    http: httpx.AsyncClient, token: str, payment_id: str, processes: PipelineProcesses, *, within: float
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        response = await http.get(f"/payments/{payment_id}", headers=bearer(token))
        assert response.status_code == 200, response.text
        orders: list[dict[str, Any]] = response.json()["paymentOrders"]
        if all(o["status"] in FINAL for o in orders):
            assert {o["status"] for o in orders} == {"SUCCESSFUL_FINAL"}
            return orders
        assert time.monotonic() < deadline, f"orders not final in {within}s\n{processes.log_tails()}"
        await asyncio.sleep(0.1)


async def _wait_for_hits(
    search: httpx.AsyncClient,
    data_stream: str,
    field: str,
    value: str,
    complete: Callable[[list[Hit]], bool],
    processes: PipelineProcesses,
    *,
    within: float = 30.0,
) -> list[Hit]:
    """A term query on `field` until its hits satisfy `complete` (lines arrive as the shipper sends them)."""
    deadline = time.monotonic() + within
    query = {"query": {"term": {field: value}}, "size": 200, "sort": [{"@timestamp": "asc"}]}
    hits: list[Hit] = []
    while True:
        response = await search.post(f"/{data_stream}/_search", json=query)
        if response.status_code == 200:
            hits = [h["_source"] for h in response.json()["hits"]["hits"]]
            if complete(hits):
                return hits
        else:
            # 404: the data stream's first line is not shipped yet; 503: its one shard is not started yet.
            assert response.status_code in {404, 503}, response.text
        assert time.monotonic() < deadline, (
            f"{field}={value}: {len(hits)} hits after {within}s: {[h.get('event') for h in hits]}\n"
            f"{processes.log_tails()}"
        )
        await asyncio.sleep(0.2)
