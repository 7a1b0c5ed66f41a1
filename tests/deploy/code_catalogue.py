"""What the code defines, read from the sources: the Prometheus metrics."""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.charts import REPO

SOURCE_ROOTS = ("payment_infrastructure", "services")
METRIC_KINDS = ("Counter", "Gauge", "Histogram", "Summary")
# A custom collector's families (prometheus_client.core), as the kind of metric they expose.
FAMILY_KINDS = {"GaugeMetricFamily": "Gauge", "CounterMetricFamily": "Counter"}
# Series Prometheus adds itself, with the labels it gives them.
BUILTIN_SERIES = {"up": frozenset({"job", "instance"})}
# Labels a scrape adds to every series (static config or Kubernetes service discovery).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container", "endpoint"})
# Which processes a metric's values come from, by the module that defines it (the API and the dispatcher import the
# same modules, so both register every meter of payment-service: the API's zeros of the outbox meters are no data).
# A metric defined anywhere else fails `processes_of` until it is placed here.
PROCESSES_OF_MODULE = {
    "services/payment_service/metrics.py": ("api",),
    "payment_infrastructure/auth/metrics.py": ("api",),
    "payment_infrastructure/postgres/group_commit.py": ("api",),
    "payment_infrastructure/postgres/outbox_metrics.py": ("dispatcher",),
    "payment_infrastructure/postgres/pool_metrics.py": ("api", "dispatcher", "consumers"),
    "payment_infrastructure/kafka/metrics.py": ("dispatcher", "consumers"),
    "payment_infrastructure/kafka/consumer_metrics.py": ("consumers",),
    "payment_infrastructure/psp/metrics.py": ("consumers",),
    "payment_infrastructure/redis/retry_metrics.py": ("consumers",),
    "services/payment_consumers/metrics.py": ("consumers",),
    "services/payment_consumers/lag_exporter.py": ("lag_exporter",),
}


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str
    labels: frozenset[str]
    defined_in: str


@functools.cache
def metrics() -> dict[str, Metric]:
    """Every prometheus_client metric constructed in the sources (AST, so nothing is imported or run)."""
    found: dict[str, Metric] = {}
    for root in SOURCE_ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                metric = _metric_of(node, path)
                if metric is not None:
                    found[metric.name] = metric
    return found


def _metric_of(node: ast.AST, path: Path) -> Metric | None:
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    kind = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    kind = FAMILY_KINDS.get(kind or "", kind)
    if kind not in METRIC_KINDS or not node.args:
        return None
    name = node.args[0]
    if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
        return None  # collections.Counter(...) and friends
    labels: list[str] = []
    label_arg = (
        node.args[2]
        if len(node.args) > 2
        else next((k.value for k in node.keywords if k.arg in ("labelnames", "labels")), None)
    )
    if isinstance(label_arg, ast.List | ast.Tuple):
        labels = [e.value for e in label_arg.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return Metric(name.value, kind, frozenset(labels), str(path.relative_to(REPO)))


def series_of(metric: Metric) -> tuple[str, ...]:
    """The series names prometheus_client exposes for one metric."""
    if metric.kind == "Counter":
        base = metric.name.removesuffix("_total")
        return (f"{base}_total", f"{base}_created")
    if metric.kind == "Gauge":
        return (metric.name,)
    own = (f"{metric.name}_bucket",) if metric.kind == "Histogram" else (metric.name,)
    return (*own, f"{metric.name}_count", f"{metric.name}_sum", f"{metric.name}_created")


@functools.cache
def processes_of() -> dict[str, tuple[str, ...]]:
    """Every series name of the code, with the processes (PROCESSES_OF_MODULE's names) whose values it carries."""
    return {name: PROCESSES_OF_MODULE[m.defined_in] for m in metrics().values() for name in series_of(m)}


@functools.cache
def series() -> dict[str, frozenset[str]]:
    """Every series name the processes expose, with its labels (prometheus_client's naming rules)."""
    exposed: dict[str, frozenset[str]] = dict(BUILTIN_SERIES)
    for metric in metrics().values():
        for name in series_of(metric):
            own = name == f"{metric.name}_bucket" or (metric.kind == "Summary" and name == metric.name)
            exposed[name] = metric.labels | ({"le" if metric.kind == "Histogram" else "quantile"} if own else set())
    return exposed


@functools.cache
def string_literals(package: str) -> frozenset[str]:
    """Every string constant in a package's sources (label values are written as literals or enum values)."""
    found: set[str] = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return frozenset(found)
