"""Render the Helm charts offline with Helm's own Go SDK (helm-python-sdk: no helm binary, no cluster)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"
CHART_NAMES = ("payment-service", "payment-consumers")
RELEASE = "payments"
NAMESPACE = "payments"

# The Go library logs at INFO (e.g. the chart's symlinked files); tests read results, not logs.
helm.disable_logging()


@dataclass(frozen=True)
class Rendered:
    """Every object a chart renders (hooks included), and its NOTES.txt."""

    objects: tuple[dict[str, Any], ...]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        matches = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} {name}, got {[o['metadata']['name'] for o in self.objects]}"
        return matches[0]

    def containers(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(workload, container) for every container of every Deployment and Job."""
        for workload in self.objects:
            if workload["kind"] in ("Deployment", "Job"):
                for container in workload["spec"]["template"]["spec"]["containers"]:
                    yield workload, container


def values_file(chart: str, name: str = "production-values.yaml") -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHARTS / chart / "ci" / name).read_text())
    return loaded


def render(chart: str, values: dict[str, Any] | None = None, *, release: str = RELEASE) -> Rendered:
    """Render like `helm install --dry-run` (schema validation included). Raises helm.HelmError on refusal."""
    return _render(chart, json.dumps(values or {}, sort_keys=True), release)


@functools.lru_cache(maxsize=64)
def _render(chart: str, values_json: str, release: str) -> Rendered:
    manifests = _load(chart).render(json.loads(values_json), name=release, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Rendered(tuple(objects), notes)


@functools.cache
def _load(chart: str) -> helm.Chart:
    return helm.Chart.load(CHARTS / chart)


def lint(chart: str, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """`helm lint --strict` findings above INFO (severity 2 = warning, 3 = error)."""
    report = helm.lint(CHARTS / chart, values, strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    return [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` over `base`, maps merged recursively (how Helm coalesces values)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
