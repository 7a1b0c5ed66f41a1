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


@functools.cache
def series() -> dict[str, frozenset[str]]:
    """Every series name the processes expose, with its labels (prometheus_client's naming rules)."""
    exposed: dict[str, frozenset[str]] = dict(BUILTIN_SERIES)
    for metric in metrics().values():
        base, labels = metric.name, metric.labels
        if metric.kind == "Counter":
            base = base.removesuffix("_total")
            exposed[f"{base}_total"] = labels
            exposed[f"{base}_created"] = labels
        elif metric.kind == "Gauge":
            exposed[base] = labels
        else:
            if metric.kind == "Histogram":
                exposed[f"{base}_bucket"] = labels | {"le"}
            else:
                exposed[base] = labels | {"quantile"}
            exposed[f"{base}_count"] = labels
            exposed[f"{base}_sum"] = labels
            exposed[f"{base}_created"] = labels
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
