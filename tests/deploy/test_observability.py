"""Alert rules, the Grafana dashboard and the Prometheus files only use series the code really exposes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import yaml

from tests.deploy.charts import REPO, render
from tests.deploy.code_catalogue import (
    PROCESSES_OF_MODULE,
    TARGET_LABELS,
    metrics,
    processes_of,
    series,
    string_literals,
)
from tests.deploy.promql import Selector, selectors

ALERTS = REPO / "infra" / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO / "infra" / "prometheus" / "alerts_test.yml"
RUNBOOKS = REPO / "docs" / "runbooks"
DASHBOARD = REPO / "infra" / "grafana" / "dashboards" / "payments.json"
CONSUMERS_DASHBOARD = REPO / "infra" / "grafana" / "dashboards" / "payment-consumers.json"
# Series of the cluster, not of the code: kube-state-metrics (kube_*) and the kubelet's cAdvisor (container_*).
CLUSTER_SERIES = {
    "kube_deployment_status_replicas_available": frozenset({"deployment"}),
    "kube_horizontalpodautoscaler_status_desired_replicas": frozenset({"horizontalpodautoscaler"}),
    "kube_pod_container_status_restarts_total": frozenset({"pod", "container"}),
    "container_cpu_usage_seconds_total": frozenset({"pod", "container"}),
    "container_memory_working_set_bytes": frozenset({"pod", "container"}),
}
ADAPTER = REPO / "infra" / "prometheus" / "prometheus-adapter-values.yaml"
# The scrape job of each process (compose's job names; the charts' ServiceMonitors relabel to the same).
JOBS = {
    "api": "payment-service",
    "dispatcher": "payment-dispatcher",
    "consumers": "payment-consumers",
    "lag_exporter": "payment-lag-exporter",
}
# What each process imports and builds before it serves (its meters are registered by then).
PROCESS_BUILDS = {
    "api": "import services.payment_service.api.app",
    "dispatcher": "import services.payment_service.dispatcher",
    "consumers": """
import asyncio
from services.payment_consumers.bootstrap import build_container, kafka_workers
from services.payment_consumers.settings import ConsumersSettings

async def build() -> None:
    kafka_workers(build_container(ConsumersSettings()))

asyncio.run(build())
""",
    "lag_exporter": """
from prometheus_client import REGISTRY
from services.payment_consumers.lag_exporter import LagCollector

REGISTRY.register(LagCollector())
""",
}
DURATION = re.compile(r"^\d+(ms|s|m|h|d)$")


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recording_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "record" in rule]


def dashboard(path: Any = DASHBOARD) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def dashboard_exprs(path: Any = DASHBOARD) -> list[str]:
    return [t["expr"] for p in dashboard(path)["panels"] for t in p.get("targets", [])]


def registered_metric_families(build: str) -> set[str]:
    """The metric families in the default registry once `build` ran in a fresh interpreter (with or without
    samples: a labelled meter is registered before its first child)."""
    listing = "\nfrom prometheus_client import REGISTRY\nprint(' '.join(f.name for f in REGISTRY.collect()))\n"
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(build) + listing],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return set(out.split())


def unknown_series(expr: str) -> list[str]:
    """Series (or label matchers) in `expr` that nothing in the code exposes."""
    known = dict(series()) | {rule["record"]: frozenset({"namespace"}) for rule in recording_rules()} | CLUSTER_SERIES
    problems = []
    for selector in selectors(expr):
        if selector.metric not in known:
            problems.append(selector.metric)
            continue
        allowed = known[selector.metric] | TARGET_LABELS
        problems += [
            f"{selector.metric}{{{label}}}" for label, _op, _value in selector.matchers if label not in allowed
        ]
    return problems


# ---- The checker itself ----------------------------------------------------------------------------------------


def test_metric_catalogue_is_read_from_the_sources() -> None:
    catalogue = metrics()
    assert catalogue["psp_calls_total"].labels == {"result"}
    assert catalogue["http_server_requests_seconds"].kind == "Histogram"
    assert catalogue["kafka_consumergroup_lag"].labels == {"consumergroup", "topic", "partition"}  # a collector's
    assert catalogue["kafka_consumer_member_lag"].labels == {"consumergroup", "topic"}
    assert "http_server_requests_seconds_bucket" in series() and "outbox_dispatched_total" in series()
    assert "Counter" not in {m.name for m in catalogue.values()}  # collections.Counter() is not a metric


def test_promql_reader_finds_selectors_and_skips_functions_and_label_lists() -> None:
    expr = 'histogram_quantile(0.99, sum by (group, le) (rate(a_bucket{x="1", y=~"5.."}[5m]))) / on(job) b'
    assert selectors(expr) == [Selector("a_bucket", (("x", "=", "1"), ("y", "=~", "5.."))), Selector("b", ())]


def test_checker_flags_unknown_series_and_labels() -> None:
    assert unknown_series("sum(rate(psp_calls_total[5m]))") == []
    assert unknown_series("sum(rate(psp_call_total[5m]))") == ["psp_call_total"]
    assert unknown_series('psp_calls_total{status="TIMEOUT"}') == ["psp_calls_total{status}"]
    assert unknown_series('http_server_requests_seconds_count{le="1"}') == ["http_server_requests_seconds_count{le}"]


# ---- Alert rules -------------------------------------------------------------------------------------------------


def test_alert_rules_are_well_formed() -> None:
    names = set()
    for rule in alert_rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"]) and rule["alert"] not in names
        names.add(rule["alert"])
        # kube-prometheus's Alertmanager routes and inhibitions know critical, warning and info.
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert "for" not in rule or DURATION.match(rule["for"])


def test_recording_rules_follow_the_level_metric_operation_naming() -> None:
    names = [rule["record"] for rule in recording_rules()]
    assert len(names) == len(set(names))
    for name in names:
        assert re.fullmatch(r"namespace:[a-z_]+:[a-z_]+\d+[mhd]", name), name


def test_every_alert_has_a_runbook_page_and_every_page_an_alert() -> None:
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        assert url == f"docs/runbooks/{rule['alert']}.md", rule["alert"]
        page = (REPO / url).read_text()
        assert page.startswith(f"# {rule['alert']}\n"), url
        for section in ("## What it means", "## What to check", "## What fixes it"):
            assert section in page, f"{url}: {section}"
    pages = {path.stem for path in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == {rule["alert"] for rule in alert_rules()}


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r.get("alert") or r["record"])
def test_every_aggregation_keeps_the_namespace(rule: dict[str, Any]) -> None:
    expr = re.sub(r"\s+", " ", rule["expr"])
    aggregations = re.findall(r"\b(sum|max|min|avg|count|topk)\s*(by\s*\(([^)]*)\))?\s*\(", expr)
    for name, by, labels in aggregations:
        assert by and "namespace" in [label.strip() for label in labels.split(",")], f"{name}{by} in {expr}"


def firing_cases() -> dict[str, int]:
    """How many promtool cases expect each alert to fire."""
    fired: dict[str, int] = {}
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            if check["exp_alerts"]:
                fired[check["alertname"]] = fired.get(check["alertname"], 0) + 1
    return fired


def test_every_alert_has_a_promtool_case_that_makes_it_fire() -> None:
    fired = firing_cases()
    assert [rule["alert"] for rule in alert_rules() if rule["alert"] not in fired] == []
    assert set(fired) <= {rule["alert"] for rule in alert_rules()}


def test_every_recorded_series_has_a_promtool_case_for_its_5_minute_window() -> None:
    tested = {
        check["expr"]
        for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for check in case.get("promql_expr_test", [])
    }
    for rule in recording_rules():
        if rule["record"].endswith("5m"):
            assert any(rule["record"] in expr for expr in tested), rule["record"]


def test_promtool_cases_start_counters_absent_and_carry_a_namespace() -> None:
    known = series()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for input_series in case["input_series"]:
            (selector,) = selectors(input_series["series"])
            labels = {label for label, _op, _value in selector.matchers}
            if selector.metric != "up":
                assert "namespace" in labels, input_series["series"]
            assert selector.metric in known, selector.metric


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_expressions_use_only_series_the_code_exposes(rule: dict[str, Any]) -> None:
    assert selectors(rule["expr"]), "an alert must select something"
    assert unknown_series(rule["expr"]) == []


def test_psp_result_values_in_alerts_are_results_the_gateway_reports() -> None:
    literals = string_literals("payment_infrastructure/psp")
    for rule in alert_rules():
        for selector in selectors(rule["expr"]):
            for label, _op, value in selector.matchers:
                if selector.metric == "psp_calls_total" and label == "result":
                    assert set(value.split("|")) <= literals, value


def find_rule(expr_part: str, threshold: str) -> list[dict[str, Any]]:
    return [
        r for r in alert_rules() if expr_part in r["expr"] and re.search(rf">\s*{re.escape(threshold)}\b", r["expr"])
    ]


@pytest.mark.parametrize(
    ("what", "expr_part", "threshold", "severity", "for_"),
    [
        ("outbox backlog", "outbox_event_backlog", "5000", "warning", "5m"),
        ("outbox oldest age", "outbox_oldest_pending_age_seconds", "60", "warning", "2m"),
        ("outbox stalled", "outbox_oldest_pending_age_seconds", "300", "critical", "2m"),
        ("dead letters", "increase(kafka_dlq_messages_total", "0", "warning", None),
        ("partition blocked on a dependency", "kafka_consumer_partition_blocked_seconds", "120", "critical", None),
        ("needs reconciliation", "payment_orders_awaiting_reconciliation", "0", "warning", "1m"),
        # The original's runbook: warn above 1000 for 5 minutes, page above 10000 for 5 minutes.
        ("lag warning", "sum by (namespace, consumergroup) (kafka_consumergroup_lag)", "1000", "warning", "5m"),
        ("lag page", "sum by (namespace, consumergroup) (kafka_consumergroup_lag)", "10000", "critical", "5m"),
        ("PSP timeouts", 'psp_calls_total{result="TIMEOUT"}', "0.05", "warning", "10m"),
        ("API 5xx", 'http_server_requests_seconds_count{status=~"5.."}', "0.02", "critical", "5m"),
        ("API p99", "histogram_quantile(0.99", "0.5", "warning", "10m"),
        ("retry drops", "increase(redis_retry_dropped_total", "0", "warning", None),
        ("status-check rounds failing", "increase(status_check_dispatch_failures_total", "0", "warning", "15m"),
        ("key fetches failing", 'auth_jwks_fetches_total{result="error"}', "0", "warning", "10m"),
        ("token checks unavailable", 'auth_token_verifications_total{result="unavailable"}', "0", "critical", "5m"),
    ],
)
def test_the_required_alerts_exist(what: str, expr_part: str, threshold: str, severity: str, for_: str | None) -> None:
    found = find_rule(expr_part, threshold)
    assert len(found) == 1, f"{what}: {[r['alert'] for r in found]}"
    assert found[0]["labels"]["severity"] == severity
    assert found[0].get("for") == for_


@pytest.mark.parametrize(("sli", "budget"), [("errors", "0.001"), ("slow", "0.01")])
def test_create_slos_have_fast_and_slow_multiwindow_burn_rate_alerts(sli: str, budget: str) -> None:
    """The SRE workbook's pairs: page at 14.4x (1h and 5m) or 6x (6h and 30m), warn at 3x (1d and 2h) or 1x."""
    kind = {"errors": "Availability", "slow": "Latency"}[sli]
    windows = {
        "Fast": ("critical", [("1h", "5m", f"(14.4 * {budget})"), ("6h", "30m", f"(6 * {budget})")]),
        "Slow": ("warning", [("1d", "2h", f"(3 * {budget})"), ("3d", "6h", budget)]),
    }
    by_name = {rule["alert"]: rule for rule in alert_rules()}
    for speed, (severity, pairs) in windows.items():
        rule = by_name[f"PaymentsCreate{kind}BudgetBurn{speed}"]
        assert rule["labels"]["severity"] == severity
        for long, short, threshold in pairs:
            for window in (long, short):
                assert f"namespace:payments_create_{sli}:ratio_rate{window} > {threshold}" in rule["expr"]
            assert f"namespace:payments_create_requests:rate{long} *" in rule["expr"]  # the minimum-traffic guard


# ---- Dashboard ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "uid"), [(DASHBOARD, "payments-overview"), (CONSUMERS_DASHBOARD, "payments-consumers")]
)
def test_dashboard_has_a_stable_uid_and_a_prometheus_datasource_variable(path: Any, uid: str) -> None:
    board = dashboard(path)
    assert board["uid"] == uid
    (variable,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    reference = {"type": "prometheus", "uid": f"${{{variable['name']}}}"}
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["datasource"] == reference, panel["title"]
        assert panel["targets"] and all(t["datasource"] == reference for t in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


@pytest.mark.parametrize("expr", dashboard_exprs() + dashboard_exprs(CONSUMERS_DASHBOARD))
def test_dashboard_queries_use_only_series_the_code_exposes(expr: str) -> None:
    assert unknown_series(expr) == []


def test_the_consumers_dashboard_filters_every_query_by_its_namespace_variable() -> None:
    board = dashboard(CONSUMERS_DASHBOARD)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "job"} <= set(variables)
    for expr in dashboard_exprs(CONSUMERS_DASHBOARD):
        assert all(("namespace", "=~", "$namespace") in s.matchers for s in selectors(expr)), expr
    needed = (
        "kafka_consumergroup_lag",
        "kube_deployment_status_replicas_available",
        "container_cpu_usage_seconds",
        "container_memory_working_set_bytes",
        "kube_pod_container_status_restarts_total",
        "db_pool_connections",
    )
    assert all(any(n in e for e in dashboard_exprs(CONSUMERS_DASHBOARD)) for n in needed)


@pytest.mark.parametrize(
    "required",
    [
        "http_server_requests_seconds_count",
        ("http_server_requests_seconds_count", ("status", "=~", "5..")),
        "outbox_event_backlog",
        "outbox_oldest_pending_age_seconds",
        "outbox_dispatched_total",
        "outbox_dispatch_failed_total",
        "psp_calls_total",
        "psp_exec_duration_seconds_bucket",
        "psp_queue_delay_seconds_bucket",
        "redis_retry_zset_size",
        "kafka_consumergroup_lag",
        "kafka_dlq_messages_total",
        "kafka_consumer_partition_blocked_seconds",
        "payment_orders_awaiting_reconciliation",
    ],
)
def test_dashboard_shows_what_operators_need(required: str | tuple[str, tuple[str, str, str]]) -> None:
    if isinstance(required, str):
        assert any(required in expr for expr in dashboard_exprs())
    else:  # a series with one matcher among the dashboard's own (namespace, job)
        metric, matcher = required
        read = [s for expr in dashboard_exprs() for s in selectors(expr)]
        assert any(s.metric == metric and matcher in s.matchers for s in read)


def test_the_payments_dashboard_has_a_job_variable_per_process_listing_only_that_process_jobs() -> None:
    variables = {v["name"]: v for v in dashboard(DASHBOARD)["templating"]["list"]}
    assert {"datasource", "namespace"} | {f"{process}_job" for process in JOBS} == set(variables)
    for process, job in JOBS.items():
        query = variables[f"{process}_job"]["query"]["query"]
        (selector,) = selectors(query.removeprefix("label_values(").removesuffix(", job)"))
        matchers = {label: (op, value) for label, op, value in selector.matchers}
        assert selector.metric == "up" and matchers["namespace"] == ("=~", "$namespace"), query
        op, pattern = matchers["job"]
        assert op == "=~" and re.fullmatch(pattern, job), query
        assert [other for other in JOBS.values() if other != job and re.fullmatch(pattern, other)] == [], query


def test_the_payments_dashboard_filters_every_query_by_its_namespace_and_the_jobs_its_series_come_from() -> None:
    """Each series is filtered by the job variables of the processes that export it, so whatever an operator
    picks in one process's variable, the panels of the other processes keep their data."""
    recorded = {rule["record"] for rule in recording_rules()}
    for expr in dashboard_exprs():
        for selector in selectors(expr):
            assert ("namespace", "=~", "$namespace") in selector.matchers, expr
            jobs = [(op, value) for label, op, value in selector.matchers if label == "job"]
            if selector.metric in recorded:  # a recording rule keeps `namespace` only (it sums over the jobs)
                assert jobs == [], expr
            else:
                wanted = "|".join(f"${process}_job" for process in processes_of()[selector.metric])
                assert jobs == [("=~", wanted)], f"{selector.metric} in {expr}"


@pytest.mark.parametrize("process", ["api", "dispatcher", "consumers", "lag_exporter"])
def test_each_process_registers_the_meters_the_dashboards_read_from_it(process: str) -> None:
    """PROCESSES_OF_MODULE checked against the registry of each process, built in a fresh interpreter."""
    registered = registered_metric_families(PROCESS_BUILDS[process])
    owned = {m.name.removesuffix("_total") for m in metrics().values() if process in PROCESSES_OF_MODULE[m.defined_in]}
    assert owned - registered == set()


def test_dashboard_shows_p50_p95_p99_of_api_latency() -> None:
    latency = [e for e in dashboard_exprs() if "http_server_requests_seconds_bucket" in e]
    quantiles = {q for e in latency for q in re.findall(r"histogram_quantile\((0\.\d+)", e)}
    assert quantiles == {"0.5", "0.95", "0.99"}


def test_grafana_provisioning_loads_the_dashboard_folder_and_prometheus() -> None:
    provider = yaml.safe_load((REPO / "infra/grafana/provisioning/dashboards/payments.yml").read_text())
    (entry,) = provider["providers"]
    assert provider["apiVersion"] == 1 and entry["type"] == "file" and entry["allowUiUpdates"] is False
    datasources = yaml.safe_load((REPO / "infra/grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in compose["volumes"])
    assert mounts["./infra/grafana/dashboards"] == entry["options"]["path"]
    assert (REPO / "infra/grafana/dashboards/payments.json").is_file()


# ---- Prometheus and the adapter ------------------------------------------------------------------------------


def test_compose_prometheus_scrapes_every_process_on_its_metrics_port() -> None:
    config = yaml.safe_load((REPO / "infra/prometheus/prometheus.yml").read_text())
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    targets = {
        job["job_name"]: target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    expected = {"payment-service": 9000, "payment-dispatcher": 9002, "payment-consumers": 9001}
    for job, port in expected.items():
        host, target_port = targets[job].split(":")
        assert host == job and int(target_port) == port
        assert any(p.endswith(f":{port}") for p in compose[host]["ports"])
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert "./infra/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in compose["prometheus"]["volumes"]


def test_adapter_rule_publishes_the_metric_the_hpa_reads_from_the_consumers_lag() -> None:
    (rule,) = yaml.safe_load(ADAPTER.read_text())["rules"]["external"]
    (hpa,) = render("payment-consumers", {"autoscaling": {"mode": "external"}}).of_kind("HorizontalPodAutoscaler")
    assert rule["name"]["as"] == hpa["spec"]["metrics"][0]["external"]["metric"]["name"]
    assert re.fullmatch(rule["name"]["matches"], "kafka_consumergroup_lag")
    assert rule["seriesQuery"].startswith("kafka_consumergroup_lag{") and "kafka_consumergroup_lag" in series()
    # The HPA's consumergroup selector reaches the query through <<.LabelMatchers>>; topk(1) keeps the worst group.
    query = rule["metricsQuery"]
    assert "<<.Series>>{<<.LabelMatchers>>}" in query and query.startswith("topk(1,")
    assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}
