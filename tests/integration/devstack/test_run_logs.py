"""`make run`'s log shipping is opt-in: nothing without PAYMENTS_LOGS__OPENSEARCH_URL; with it, the log shipper
follows our processes' logs, and an OpenSearch node is started only for an address on this machine where none
answers. The shipper part is ready once it has installed the index template (a real node)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import orjson
import pytest

from devstack import run
from devstack.opensearch import OpenSearchNode
from devstack.process import free_port

OUR_LOGS = {"psp-simulator", "payment-service", "outbox-dispatcher", "payment-consumers", "lag-exporter"}


def names(stack: run.Stack) -> set[str]:
    return {part.name for part in stack.parts}


def test_without_an_opensearch_url_make_run_starts_neither_opensearch_nor_a_shipper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PAYMENTS_LOGS__OPENSEARCH_URL", raising=False)
    assert run.parse_args([]).logs_url is None
    stack = run.Stack(run.StackConfig(run_dir=tmp_path))
    assert not {"opensearch", "log-shipper"} & names(stack)
    assert stack.opensearch is None and stack.shipped_logs == []
    monkeypatch.setenv("PAYMENTS_LOGS__OPENSEARCH_URL", "http://127.0.0.1:9200")
    assert run.parse_args([]).logs_url == "http://127.0.0.1:9200"


def test_a_local_url_where_nothing_answers_gets_its_own_node_and_a_shipper_of_our_logs(tmp_path: Path) -> None:
    port = free_port()
    stack = run.Stack(run.StackConfig(run_dir=tmp_path, logs_url=f"http://127.0.0.1:{port}"))
    assert {"opensearch", "log-shipper"} <= names(stack)
    assert stack.opensearch is not None and stack.opensearch.port == port
    assert stack.opensearch.data_dir == tmp_path / "opensearch"
    (shipper,) = [part for part in stack.services if part.name == "log-shipper"]
    assert shipper.where == f"http://127.0.0.1:{port}"
    assert {path.stem for path in stack.shipped_logs} == OUR_LOGS
    assert set(stack.shipped_logs) == {part.log_file for part in stack.parts if part.name in OUR_LOGS}


def test_a_remote_url_or_one_already_answering_gets_a_shipper_only(tmp_path: Path) -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        busy = listening.getsockname()[1]
        for url in ("https://logs.example.com:9200", f"http://localhost:{busy}"):
            stack = run.Stack(run.StackConfig(run_dir=tmp_path, logs_url=url))
            assert "log-shipper" in names(stack) and "opensearch" not in names(stack), url


async def test_the_shipper_part_is_ready_once_it_follows_and_its_lines_become_searchable(
    opensearch: OpenSearchNode, tmp_path: Path
) -> None:
    log_file = tmp_path / "payment-consumers.log"
    log_file.write_bytes(orjson.dumps({"event": "make_run_line", "app": "payment-consumers"}) + b"\n")
    stream = f"payments-logs-run-{free_port()}"
    env = {"PAYMENTS_LOGS__OPENSEARCH_URL": opensearch.url, "PAYMENTS_LOGS__DATA_STREAM": stream}
    part = run.shipper_part([log_file], env, tmp_path / "log-shipper.log")
    await part.start()
    try:
        assert part.running
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=opensearch.url, timeout=5) as client:
            while True:
                response = await client.post(
                    f"/{stream}/_search", json={"query": {"term": {"event.keyword": "make_run_line"}}}
                )
                if response.status_code == 200 and response.json()["hits"]["total"]["value"] == 1:
                    break
                assert response.status_code in {200, 404, 503}, response.text
                assert time.monotonic() < deadline, "the line was not searchable in 30 s"
                await asyncio.sleep(0.2)
    finally:
        await part.stop()
    assert not part.running
