"""Debian's Prometheus scrapes a running pipeline while payments flow, and evaluates every dashboard query and every
recording and alert rule through its HTTP API: none errors, and each returns series (an alert's expression
returns series only while it fires, so for alerts every series it reads must be present with the label values it
selects; promtool's cases in infra/prometheus/alerts_test.yml make each one fire).

The API, the outbox dispatcher, the consumers and the lag exporter run in this test process and share its metrics
registry, so the four scrape jobs read the same samples (the lag exporter's own collector aside): the test proves
the queries and the names, not which process exports what (tests/deploy/test_observability.py checks that).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.keycloak import Keycloak
from services.payment_consumers.lag_exporter import serve as serve_lag_exporter
from services.payment_consumers.settings import LagExporterOptions
from tests.deploy.promql import Selector, selectors
from tests.e2e.helpers import create_payments, wait_until_final
from tests.fixtures.pipeline import running_pipeline
from tests.fixtures.ports import free_port, wait_until
from tests.fixtures.prometheus import RULES, LivePrometheus, start_prometheus
from tests.fixtures.psp import PspSimulatorHandle
from tests.integration.api.helpers import bearer

pytestmark = pytest.mark.asyncio(loop_scope="session")

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "infra" / "grafana" / "dashboards").glob("*.json"))
NAMESPACE = "payments-live"
# Grafana's built-in variables as Grafana fills them for a 5-minute view at a 1 s scrape interval, and the
# dashboards' own (`namespace`; the consumers dashboard's `job`, the payments dashboard's job of each process) as an
# operator picks them.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$namespace": NAMESPACE,
    "$job": "payment-consumers",
    "$api_job": "payment-service",
    "$dispatcher_job": "payment-dispatcher",
    "$consumers_job": "payment-consumers",
    "$lag_exporter_job": "payment-lag-exporter",
}
# Kubernetes' own series (kube-state-metrics, the kubelet's cAdvisor): a cluster exports them, this machine has none.
# A query reading one of them may come back empty; it must still evaluate.
CLUSTER_SERIES = frozenset(
    {
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "kube_deployment_status_replicas_available",
        "kube_horizontalpodautoscaler_status_desired_replicas",
        "kube_pod_container_status_restarts_total",
    }
)

# What a healthy run cannot show: each exists only while something is wrong (promtool's cases cover the alerts
# that read them). A query reading one may come back empty; anything else that does fails the test.
FAULT_SERIES = {"kafka_consumer_partition_blocked_seconds": "born when a record first waits in place on a dependency"}
FAULT_SELECTORS = {
    'http_server_requests_seconds_count{status=~"5.."}': "a healthy stack answers no 5xx",
    'http_server_requests_seconds_count{route="/payments",method="POST",status=~"5.."}': "no 5xx either",
}
MAY_BE_EMPTY = CLUSTER_SERIES | set(FAULT_SERIES)
# The matchers a dashboard's variables add to a selector (`namespace=~"$namespace"`, `job=~"$api_job"`...): a
# fault-only selector is the same fault with or without them.
VARIABLE_MATCHERS = re.compile(rf'(namespace=~"{re.escape(NAMESPACE)}"|job=~"(payment-[a-z-]+)(\|payment-[a-z-]+)*"),?')


def is_fault_only(what: str) -> bool:
    plain = VARIABLE_MATCHERS.sub("", what).replace(",}", "}")
    return plain in FAULT_SELECTORS or plain.startswith(tuple(FAULT_SERIES))


def dashboard_queries() -> list[str]:
    queries = []
    for path in DASHBOARDS:
        panels = json.loads(path.read_text())["panels"]
        stack = list(panels)
        while stack:
            panel = stack.pop()
            stack += panel.get("panels", [])
            queries += [target["expr"] for target in panel.get("targets", []) if target.get("expr")]
    return [_substitute(query) for query in queries]


def variable_queries() -> list[str]:
    """Each dashboard variable's `label_values(<selector>, <label>)` as the query Grafana's list comes from."""
    queries = []
    for path in DASHBOARDS:
        for variable in json.loads(path.read_text())["templating"]["list"]:
            if variable["type"] == "query":
                found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
                assert found, variable["query"]["query"]
                selector, label = found.groups()
                queries.append(_substitute(f"group by ({label}) ({selector})"))
    return queries


def _substitute(query: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        query = query.replace("${" + name[1:] + "}", value).replace(name, value)
    left = re.findall(r"\$\{?\w+", query)
    assert not left, f"a template variable with no value in the test: {left} in {query}"
    return query


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def selector_text(selector: Selector) -> str:
    matchers = ",".join(f'{label}{op}"{value}"' for label, op, value in selector.matchers)
    return f"{selector.metric}{{{matchers}}}" if matchers else selector.metric


async def _flow_payments(prometheus: LivePrometheus, pipeline: Any, token: str) -> None:
    await pipeline.psp.reset()
    await pipeline.psp.set_scenario(
        "NORMAL", timeout_duration_ms=900, pending_percent=10, pending_resolve_min_ms=200, pending_resolve_max_ms=600
    )
    for _ in range(4):
        payment_ids = await create_payments(pipeline, token, 10)
        await wait_until_final(pipeline, token, payment_ids, within=60)
    async with pipeline.api.client() as client:  # the 4xx side of the request metrics
        await client.post("/payments", json={}, headers=bearer(token))
        await client.get("/payments/payment-0", headers=bearer(token))


async def test_every_dashboard_query_and_rule_evaluates_to_series_on_a_live_stack(
    psp_simulator: PspSimulatorHandle, keycloak: Keycloak, tokens: dict[str, str], tmp_path: Path
) -> None:
    consumers_port = free_port()
    async with running_pipeline(
        psp=psp_simulator,
        issuer_url=keycloak.issuer_url,
        data_dir=tmp_path / "kafka",
        process={"management_port": consumers_port},
    ) as pipeline:
        lag_port = free_port()
        lag_settings = pipeline.consumers_settings.model_copy(
            update={"lag_exporter": LagExporterOptions(port=lag_port, interval_seconds=1, stale_after_seconds=5)}
        )
        stop_lag = asyncio.Event()
        lag_exporter = asyncio.create_task(serve_lag_exporter(lag_settings, stop=stop_lag))
        api_metrics = pipeline.api.management_url.removeprefix("http://")
        (tmp_path / "prometheus").mkdir()
        prometheus = start_prometheus(
            tmp_path / "prometheus",
            {
                "payment-service": api_metrics,
                "payment-dispatcher": api_metrics,
                "payment-consumers": f"127.0.0.1:{consumers_port}",
                "payment-lag-exporter": f"127.0.0.1:{lag_port}",
            },
            labels={"namespace": NAMESPACE},
        )
        try:

            async def all_up() -> bool:
                up = await prometheus.targets_up()
                return len(up) == 4 and all(up.values())

            await wait_until(all_up, timeout=30, what="every scrape target up")
            await _flow_payments(prometheus, pipeline, tokens["order-service"])

            async def recorded() -> bool:
                # Rules evaluated at least twice after the flow: rates over it are defined.
                return bool(await prometheus.query("namespace:payments_create_requests:rate5m > 0"))

            await wait_until(recorded, timeout=30, interval=0.5, what="recording rules evaluated")
            await _check_everything(prometheus)
        finally:
            prometheus.stop()
            stop_lag.set()
            await lag_exporter


async def _check_everything(prometheus: LivePrometheus) -> None:
    empty: dict[str, str] = {}
    errors: dict[str, str] = {}
    evaluated = 0
    reads: set[str] = set()
    for query in variable_queries() + dashboard_queries():
        evaluated += 1
        read = selectors(query)
        try:
            if not await prometheus.query(query) and not {s.metric for s in read} & MAY_BE_EMPTY:
                empty[query] = "dashboard query"
        except Exception as error:
            errors[query] = str(error)
        reads |= {selector_text(s) for s in read if s.metric not in CLUSTER_SERIES}
    for rule in rules():
        evaluated += 1
        name = rule.get("record") or rule["alert"]
        try:
            result = await prometheus.query(rule["expr"])
            if "record" in rule and not result:
                empty[name] = "recording rule"
        except Exception as error:
            errors[name] = str(error)
        reads |= {selector_text(s) for s in selectors(rule["expr"])}
    for selector in sorted(reads):
        try:
            if not await prometheus.query(selector):
                empty[selector] = "series read"
        except Exception as error:
            errors[selector] = str(error)
    print(f"\nevaluated {evaluated} expressions and {len(reads)} series selectors")  # noqa: T201
    assert errors == {}
    unexpected = {what: kind for what, kind in empty.items() if not is_fault_only(what)}
    assert unexpected == {}, json.dumps(unexpected, indent=1)
    # (Whether the fault-only series are absent is not asserted: the processes here share the test session's
    # metrics registry, so a 503 or a blocked partition of an earlier test in the same session shows up in them.)
