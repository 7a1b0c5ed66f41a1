"""payment-service's `logs` values: a Fluent Bit DaemonSet that ships the payments pods' JSON lines into OpenSearch
through the repository's index template (Fluent Bit itself cannot run here; its configuration is checked)."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python as helm
import pytest

from tests.deploy.charts import NAMESPACE, REPO, render

TEMPLATE = REPO / "infra" / "opensearch" / "payments-logs-template.json"
LOGS = {"logs": {"enabled": True, "opensearch": {"host": "opensearch.logging"}}}


def sections(conf: str) -> list[tuple[str, dict[str, str]]]:
    """Fluent Bit's classic configuration as (section, {key: value}) in order (keys repeat only in filters)."""
    found: list[tuple[str, dict[str, str]]] = []
    for line in conf.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if header := re.fullmatch(r"\[(\w+)\]", line):
            found.append((header.group(1), {}))
        else:
            key, value = line.split(None, 1)
            found[-1][1][key] = value
    return found


def logs_objects(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    rendered = render("payment-service", values)
    (config_map,) = [c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-logs")]
    (daemon_set,) = rendered.of_kind("DaemonSet")
    return config_map, daemon_set


def test_logs_are_off_by_default_and_need_an_opensearch_host() -> None:
    assert not render("payment-service", {}).of_kind("DaemonSet")
    with pytest.raises(helm.HelmError, match="/logs/opensearch/host': minLength"):
        render("payment-service", {"logs": {"enabled": True}})


def test_fluent_bit_tails_this_namespaces_payments_pods_into_the_data_stream_of_the_index_template() -> None:
    config_map, daemon_set = logs_objects(LOGS)
    conf = {name: keys for name, keys in sections(config_map["data"]["fluent-bit.conf"]) if name != "FILTER"}
    filters = [keys for name, keys in sections(config_map["data"]["fluent-bit.conf"]) if name == "FILTER"]
    assert conf["INPUT"]["Path"] == f"/var/log/containers/*_{NAMESPACE}_*.log"
    # Each line's JSON becomes the record, so its ids are top-level fields as the template maps them.
    kubernetes = next(f for f in filters if f["Name"] == "kubernetes")
    assert (kubernetes["Merge_Log"], kubernetes["Keep_Log"]) == ("On", "Off")
    grep = next(f for f in filters if f["Name"] == "grep")
    assert grep["Regex"] == "$kubernetes['labels']['app.kubernetes.io/part-of'] ^payments$"
    for chart in ("payment-service", "payment-consumers"):
        for workload in render(chart, {}).of_kind("Deployment"):
            assert workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "payments"
    # The output writes its own @timestamp: the line's moves aside, or OpenSearch refuses a duplicate field.
    assert next(f for f in filters if f["Name"] == "modify")["Rename"] == "@timestamp timestamp"
    output = conf["OUTPUT"]
    assert (output["Name"], output["Host"], output["Port"], output["tls"]) == (
        "opensearch",
        "opensearch.logging",
        "9200",
        "On",
    )
    template = json.loads(TEMPLATE.read_text())
    # A data stream takes `create` only; the index template matches the name.
    assert output["Write_Operation"] == "create"
    assert re.fullmatch(template["index_patterns"][0].replace("*", ".*"), output["Index"])
    assert json.loads(config_map["data"]["payments-logs-template.json"]) == template

    pod = daemon_set["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert "https://opensearch.logging:9200/_index_template/payments-logs" in init["args"][0]
    assert "--user" not in init["args"][0] and "--insecure" not in init["args"][0]
    (container,) = pod["containers"]
    assert container["args"] == ["--config=/fluent-bit/etc/payments/fluent-bit.conf"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/var/log"]["readOnly"] is True
    assert conf["INPUT"]["DB"].startswith(next(p for p in mounts if p.startswith("/var/lib/")))
    assert "env" not in container


def test_opensearch_credentials_come_from_the_named_secret_and_reach_both_containers() -> None:
    values = {"logs": {"enabled": True, "opensearch": {"host": "os", "existingSecret": "os-creds", "tls": False}}}
    config_map, daemon_set = logs_objects(values)
    output = dict(sections(config_map["data"]["fluent-bit.conf"]))["OUTPUT"]
    assert (output["HTTP_User"], output["HTTP_Passwd"], output["tls"]) == (
        "${OPENSEARCH_USERNAME}",
        "${OPENSEARCH_PASSWORD}",
        "Off",
    )
    pod = daemon_set["spec"]["template"]["spec"]
    for container in pod["initContainers"] + pod["containers"]:
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
        assert refs == {
            "OPENSEARCH_USERNAME": {"name": "os-creds", "key": "username"},
            "OPENSEARCH_PASSWORD": {"name": "os-creds", "key": "password"},
        }
    assert "http://os:9200/_index_template/payments-logs" in pod["initContainers"][0]["args"][0]
    assert '--user "$OPENSEARCH_USERNAME:$OPENSEARCH_PASSWORD"' in pod["initContainers"][0]["args"][0]
