"""The Helm charts render, lint, validate against Kubernetes' schemas, and agree with the code they deploy."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from payment_infrastructure.environment import settings_variables as settings_env_names
from payment_infrastructure.observability.management import create_management_app
from payment_infrastructure.observability.tracing import otlp_endpoint
from services.payment_consumers.groups import GROUPS
from services.payment_consumers.settings import ConsumersSettings, Worker
from tests.deploy.charts import CHART_NAMES, CHARTS, NAMESPACE, REPO, Rendered, deep_merge, lint, render, values_file
from tests.deploy.workloads import (
    config_map_env,
    container_port,
    effective_env,
    literal_env,
    module_of,
    settings_class,
)

PRODUCTION: dict[str, dict[str, Any]] = {chart: values_file(chart) for chart in CHART_NAMES}
SECURED_KAFKA: dict[str, dict[str, Any]] = {
    chart: values_file(chart, "secured-kafka-values.yaml") for chart in CHART_NAMES
}
# Every optional object switched on, so every template is rendered and validated at least once.
EVERYTHING_ON: dict[str, dict[str, Any]] = {
    "payment-service": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
        "ingress": {"enabled": True, "tls": [{"hosts": ["payments.example.local"], "secretName": "tls"}]},
        "networkPolicy": {"enabled": True},
        "logs": {"enabled": True, "opensearch": {"host": "opensearch.logging", "tls": False}},
    },
    "payment-consumers": {"serviceMonitor": {"enabled": True}, "networkPolicy": {"enabled": True}},
}
SCENARIOS: dict[str, tuple[str, dict[str, Any]]] = {
    "service-default": ("payment-service", {}),
    "service-production": ("payment-service", PRODUCTION["payment-service"]),
    "service-everything-on": ("payment-service", EVERYTHING_ON["payment-service"]),
    "service-minimal": (
        "payment-service",
        {
            "api": {"autoscaling": {"enabled": False}},
            "podDisruptionBudget": {"enabled": False},
            "migrations": {"enabled": False},
            "serviceAccount": {"create": False},
        },
    ),
    "consumers-default": ("payment-consumers", {}),
    "consumers-production": ("payment-consumers", PRODUCTION["payment-consumers"]),
    "consumers-everything-on": ("payment-consumers", EVERYTHING_ON["payment-consumers"]),
    "consumers-keda": ("payment-consumers", {"autoscaling": {"mode": "keda"}}),
    "consumers-external": ("payment-consumers", {"autoscaling": {"mode": "external"}}),
    "consumers-none": ("payment-consumers", {"autoscaling": {"mode": "none"}}),
}
KUBERNETES_VERSIONS = ("1.25", kubernetes_validate.latest_version())
RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
CUSTOM_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "ScaledObject": "keda.sh/v1alpha1",
}


def scenario(name: str) -> Rendered:
    chart, values = SCENARIOS[name]
    return render(chart, values)


def all_containers() -> Iterator[tuple[str, Rendered, dict[str, Any], dict[str, Any]]]:
    for name in SCENARIOS:
        rendered = scenario(name)
        for workload, container in rendered.containers():
            yield name, rendered, workload, container


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ---- Helm's own checks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("chart", CHART_NAMES)
@pytest.mark.parametrize("values_name", ["default", "production", "secured-kafka"])
def test_charts_pass_helm_lint_strict(chart: str, values_name: str) -> None:
    values = {"default": None, "production": PRODUCTION[chart], "secured-kafka": SECURED_KAFKA[chart]}[values_name]
    assert lint(chart, values) == []


@pytest.mark.parametrize("chart", CHART_NAMES)
def test_the_secured_kafka_values_give_every_process_tls_sasl_and_the_mounted_ca(
    chart: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render(chart, SECURED_KAFKA[chart])
    for obj in rendered.objects:
        if obj["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[-1], strict=True)
    checked = 0
    for workload, container in rendered.containers():
        if settings_class(container) is None:
            continue  # the migration Job talks to Postgres only
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["kafka-ca"] == {"name": "kafka-ca", "mountPath": "/etc/payments/kafka-ca", "readOnly": True}
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        assert volumes["kafka-ca"]["secret"]["secretName"] == "kafka-ca"
        settings = load_settings(
            monkeypatch, rendered, container, secret={"PAYMENTS_KAFKA__SASL_PASSWORD": "from-the-secret"}
        )
        kafka = settings.kafka
        assert (kafka.security_protocol, kafka.sasl_mechanism, kafka.sasl_username) == (
            "SASL_SSL",
            "SCRAM-SHA-512",
            "payments",
        )
        assert kafka.ssl_cafile == "/etc/payments/kafka-ca/ca.crt"
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize(
    ("chart", "values", "complaint"),
    [
        ("payment-consumers", {"autoscaling": {"mode": "turbo"}}, "value must be one of"),
        ("payment-consumers", {"components": {"pipeline": {"workers": ["bogus"]}}}, "value must be one of"),
        ("payment-consumers", {"config": {"PAYMENTS_DB__URL": "postgresql://u:p@db/x"}}, "'not' failed"),
        ("payment-service", {"config": {"PAYMENTS_DB__URL": "postgresql://u:p@db/x"}}, "'not' failed"),
        ("payment-service", {"config": {"kafka_bootstrap": "x"}}, "does not match pattern"),
        ("payment-service", {"ports": {"http": 0}}, "minimum"),
        ("payment-service", {"existingSecret": ""}, "minLength"),
    ],
)
def test_values_schema_rejects_invalid_values(chart: str, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=complaint):
        render(chart, values)


# ---- Kubernetes schemas --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_is_valid_against_the_kubernetes_schemas(name: str, version: str) -> None:
    rendered = scenario(name)
    assert rendered.objects
    for obj in rendered.objects:
        if obj["kind"] in CUSTOM_KINDS:
            assert obj["apiVersion"] == CUSTOM_KINDS[obj["kind"]]
            continue  # no schema ships for CRDs; test_custom_resources_* check what their operators read
        # strict: additionalProperties false everywhere, so a misspelt field fails instead of being ignored.
        kubernetes_validate.validate(obj, version, strict=True)


def test_strict_schema_validation_catches_a_misspelt_field() -> None:
    deployment = copy.deepcopy(scenario("service-default").of_kind("Deployment")[0])
    kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    probe = pod_spec(deployment)["containers"][0]["livenessProbe"]
    probe["httpGett"] = probe.pop("httpGet")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_only_kinds_with_a_schema_or_a_known_operator_are_rendered() -> None:
    for name in SCENARIOS:
        for obj in scenario(name).objects:
            if obj["kind"] in CUSTOM_KINDS:
                continue
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[-1], strict=True)
            except kubernetes_validate.SchemaNotFoundError:  # pragma: no cover - the assertion explains
                pytest.fail(f"{name}: {obj['kind']} {obj['apiVersion']} has no Kubernetes schema")


# ---- Names and labels ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_objects_carry_the_recommended_labels_and_no_hard_coded_namespace(name: str) -> None:
    chart = SCENARIOS[name][0]
    version = yaml.safe_load((CHARTS / chart / "Chart.yaml").read_text())["version"]
    for obj in scenario(name).objects:
        labels = obj["metadata"]["labels"]
        missing = [label for label in RECOMMENDED_LABELS if label not in labels]
        assert not missing, f"{obj['kind']} {obj['metadata']['name']} lacks {missing}"
        assert labels["helm.sh/chart"] == f"{chart}-{version}"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "payments"
        assert "namespace" not in obj["metadata"], f"{obj['kind']} hard-codes its namespace"


@pytest.mark.parametrize("chart", CHART_NAMES)
def test_names_are_dns_labels_of_at_most_63_characters_even_for_the_longest_release_name(chart: str) -> None:
    release = "a-very-long-release-name-that-uses-all-53-characters"[:53]
    helm.validate_release_name(release)
    rendered = render(chart, EVERYTHING_ON[chart], release=release)
    names = [(o["kind"], o["metadata"]["name"]) for o in rendered.objects]
    for kind, name in names:
        assert len(name) <= 63 and DNS_1123_LABEL.match(name), f"{kind} name {name!r}"
    assert len(set(names)) == len(names), "two objects of one kind share a name"
    # The component suffix is kept whole; the release part is shortened instead.
    assert {n for k, n in names if k == "Deployment"} and all(
        n.endswith(("-api", "-dispatcher", "-pipeline", "-support", "-lag-exporter"))
        for k, n in names
        if k == "Deployment"
    )


def test_a_release_named_after_the_chart_is_not_repeated_in_names() -> None:
    rendered = render("payment-service", {}, release="payment-service")
    assert rendered.named("Service", "payment-service")
    assert rendered.named("Deployment", "payment-service-api")


@pytest.mark.parametrize("name", SCENARIOS)
def test_selectors_select_the_pods_they_are_meant_for(name: str) -> None:
    rendered = scenario(name)
    deployments = {d["metadata"]["name"]: d for d in rendered.of_kind("Deployment")}
    pod_labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}
    for deployment in deployments.values():
        assert matches(
            deployment["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]
        )
    # Selectors never select another Deployment's pods.
    for n, deployment in deployments.items():
        selected = [
            other
            for other, labels in pod_labels.items()
            if matches(deployment["spec"]["selector"]["matchLabels"], labels)
        ]
        assert selected == [n]
    for service in rendered.of_kind("Service"):
        selected = [n for n, labels in pod_labels.items() if matches(service["spec"]["selector"], labels)]
        assert selected, f"Service {service['metadata']['name']} selects no pods"
        for port in service["spec"]["ports"]:
            for deployment_name in selected:
                container_port(pod_spec(deployments[deployment_name])["containers"][0], port["targetPort"])
    for pdb in rendered.of_kind("PodDisruptionBudget"):
        assert [n for n, labels in pod_labels.items() if matches(pdb["spec"]["selector"]["matchLabels"], labels)]
    for scaler in rendered.of_kind("HorizontalPodAutoscaler") + rendered.of_kind("ScaledObject"):
        assert scaler["spec"]["scaleTargetRef"]["name"] in deployments


# ---- Pods ----------------------------------------------------------------------------------------------------


def test_pods_run_as_the_image_user_without_root_capabilities_or_a_writable_root_fs() -> None:
    dockerfile = (REPO / "infra" / "docker" / "Dockerfile").read_text()
    image_uid = int(re.findall(r"^USER (\d+):\d+$", dockerfile, re.MULTILINE)[-1])
    for name, _rendered, workload, container in all_containers():
        where = f"{name}: {workload['metadata']['name']}/{container['name']}"
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == image_uid, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False, where
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, where
        assert security["allowPrivilegeEscalation"] is False, where
        assert security["capabilities"]["drop"] == ["ALL"], where
        assert "add" not in security["capabilities"], where
        # The only writable path is an emptyDir on /tmp.
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert mounts == {"/tmp": "tmp"} and "emptyDir" in volumes["tmp"], where


def test_containers_request_and_limit_resources() -> None:
    for name, _rendered, workload, container in all_containers():
        resources = container["resources"]
        where = f"{name}: {workload['metadata']['name']}"
        assert {"cpu", "memory"} <= set(resources["requests"]), where
        assert "memory" in resources["limits"], where


def test_pods_know_their_own_name() -> None:
    for name, _rendered, workload, container in all_containers():
        if workload["kind"] != "Deployment":
            continue
        env = {e["name"]: e for e in container["env"]}
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", name
        # Kafka client ids name the pod, so broker-side metrics tell the members apart.
        assert literal_env(container)["PAYMENTS_KAFKA__CLIENT_ID"] == "payments-pod-0"


def test_probes_point_at_paths_and_ports_the_processes_really_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    management_paths = {route.path for route in create_management_app({}).routes}  # type: ignore[attr-defined]
    assert management_paths == {"/health/live", "/health/ready", "/metrics"}
    for name, rendered, workload, container in all_containers():
        if workload["kind"] != "Deployment":
            continue
        module = module_of(container)
        settings = load_settings(monkeypatch, rendered, container)
        if module == "services.payment_service.dispatcher":
            served_port, served_paths, host = (
                settings.outbox.dispatcher_metrics_port,
                management_paths,
                settings.outbox.dispatcher_metrics_host,
            )
        elif module == "services.payment_service":
            served_port, served_paths, host = (
                settings.api.management_port,
                management_paths,
                settings.api.management_host,
            )
            assert container_port(container, "http") == settings.api.port
            assert settings.api.host == "0.0.0.0"
        elif module == "services.payment_consumers.lag_exporter":
            served_port, served_paths = settings.lag_exporter.port, management_paths
            host = settings.lag_exporter.host
        else:
            served_port, served_paths = settings.process.management_port, management_paths
            host = settings.process.management_host
        assert host == "0.0.0.0", f"{name}: {workload['metadata']['name']} listens on {host} only"
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container[kind]["httpGet"]
            where = f"{name}: {workload['metadata']['name']} {kind}"
            assert container_port(container, probe["port"]) == served_port, where
            assert probe["path"] in served_paths, where
        if module != "services.payment_service.dispatcher":
            assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
            assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"


def test_termination_grace_outlasts_each_process_drain() -> None:
    defaults = ConsumersSettings()
    # The consumers' stop ends by its own bounds, or else by the watchdog's exit: both before the kubelet's SIGKILL.
    consumer_stop = defaults.process.shutdown_timeout_seconds
    assert consumer_stop > defaults.stop_bound_seconds
    for name, _rendered, workload, container in all_containers():
        if workload["kind"] != "Deployment":
            continue
        grace = pod_spec(workload)["terminationGracePeriodSeconds"]
        module = module_of(container)
        if module == "services.payment_consumers":
            assert grace > consumer_stop, name
        elif module == "services.payment_service.dispatcher":
            # A batch in flight waits for the Kafka delivery timeout before the producer flushes.
            assert grace > defaults.kafka.delivery_timeout_seconds, name
        elif module == "services.payment_consumers.lag_exporter":
            # Nothing to drain: a reading in progress is dropped; the broker's request timeout bounds the close.
            assert grace >= defaults.kafka.request_timeout_ms / 1000 + 10, name
        else:
            sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
            assert grace >= sleep + 30, name


# ---- Settings ------------------------------------------------------------------------------------------------


def load_settings(
    monkeypatch: pytest.MonkeyPatch,
    rendered: Rendered,
    container: dict[str, Any],
    secret: dict[str, str] | None = None,
) -> Any:
    """Instantiate the process's settings class from exactly the environment the chart gives it (and `secret`: what
    the operator's Secret adds)."""
    cls = settings_class(container)
    assert cls is not None
    with monkeypatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("PAYMENTS_")]:
            patch.delenv(key)
        for key, value in {**(secret or {}), **effective_env(rendered, container)}.items():
            patch.setenv(key, value)
        return cls()


def test_every_payments_variable_the_charts_set_is_a_settings_field() -> None:
    checked = 0
    for name, rendered, workload, container in all_containers():
        cls = settings_class(container)
        names = {k for k in effective_env(rendered, container) if k.startswith("PAYMENTS_")}
        if cls is None:
            assert not names, f"{name}: {workload['metadata']['name']} gets settings it never reads"
            continue
        unknown = names - settings_env_names(cls)
        assert not unknown, (
            f"{name}: {workload['metadata']['name']} sets {sorted(unknown)}, not fields of {cls.__name__}"
        )
        checked += len(names)
    assert checked > 100


def test_settings_field_names_are_read_from_the_settings_classes() -> None:
    names = settings_env_names(ConsumersSettings)
    assert "PAYMENTS_PROCESS__WORKERS" in names and "PAYMENTS_PSP__BASE_URL" in names
    assert "PAYMENTS_API__PORT" not in names  # an API setting, not a consumers one


def test_rendered_settings_load_and_take_effect(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, rendered, _workload, container in all_containers():
        if settings_class(container) is None:
            continue
        settings = load_settings(monkeypatch, rendered, container)
        env = effective_env(rendered, container)
        assert settings.kafka.bootstrap_servers == env["PAYMENTS_KAFKA__BOOTSTRAP_SERVERS"]
        # Real Apache Kafka: the producer is idempotent in every rendering of both charts.
        assert settings.kafka.enable_idempotence is True, name
        assert settings.kafka.client_id == "payments-pod-0"
        if module_of(container) == "services.payment_consumers":
            workers = json.loads(env["PAYMENTS_PROCESS__WORKERS"])
            assert [w.value for w in settings.process.workers] == workers
            assert settings.kafka.partitions == int(env["PAYMENTS_KAFKA__PARTITIONS"])


def test_production_values_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = scenario("consumers-production")
    pipeline = rendered.named("Deployment", "payments-payment-consumers-pipeline")
    settings = load_settings(monkeypatch, rendered, pod_spec(pipeline)["containers"][0])
    assert settings.kafka.partitions == 48
    assert settings.status_checks.delays_seconds == (5, 30, 120, 600, 3600)
    assert settings.psp.base_url == "https://psp.example.com"


# ---- Secrets and configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_secrets_come_from_an_existing_secret_by_name_never_from_the_chart(name: str) -> None:
    chart, values = SCENARIOS[name]
    rendered = scenario(name)
    secret_name = values.get(
        "existingSecret", yaml.safe_load((CHARTS / chart / "values.yaml").read_text())["existingSecret"]
    )
    assert not rendered.of_kind("Secret")
    for config_map in rendered.of_kind("ConfigMap"):
        for key, value in config_map["data"].items():
            assert "DB__URL" not in key
            assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", value), f"{key} carries credentials"
    for _workload, container in rendered.containers():
        refs = [s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s]
        refs += [
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        ]
        assert refs == [secret_name]


def test_configuration_changes_roll_the_pods() -> None:
    before = scenario("service-default").named("Deployment", "payments-payment-service-api")
    after = render("payment-service", {"config": {"PAYMENTS_LOGGING__LEVEL": "DEBUG"}}).named(
        "Deployment", "payments-payment-service-api"
    )
    checksum = "checksum/config"
    assert (
        before["spec"]["template"]["metadata"]["annotations"][checksum]
        != after["spec"]["template"]["metadata"]["annotations"][checksum]
    )


# ---- payment-service -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["service-default", "service-production"])
def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook_job(name: str) -> None:
    _chart, values = SCENARIOS[name]
    (job,) = scenario(name).of_kind("Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    (container,) = pod_spec(job)["containers"]
    assert module_of(container) == "payment_infrastructure.postgres.migrate"
    # The URL comes by environment from the Secret's key, never on the command line (/proc/<pid>/cmdline).
    key = values.get("migrations", {}).get("databaseUrlKey", "PAYMENTS_DB__URL")
    assert not any("$(" in a or "postgresql" in a for a in container["args"]), container["args"]
    assert container["args"][-2:] == ["--url-from", f"Secret payment-service-secrets, key {key}"]
    source = {e["name"]: e for e in container["env"]}["PAYMENTS_DB__URL"]["valueFrom"]["secretKeyRef"]
    assert source == {"name": "payment-service-secrets", "key": key, "optional": True}
    # A hook runs before the chart's ConfigMap exists: the Job must not depend on it.
    assert "envFrom" not in container
    assert pod_spec(job)["restartPolicy"] == "Never"


def test_the_documented_secret_commands_create_every_key_the_values_ask_for() -> None:
    readme = (CHARTS / "README.md").read_text()
    commands = re.findall(r"kubectl create secret generic payment-service-secrets((?:[^\n]*\\\n)*[^\n]*)", readme)
    created = [set(re.findall(r"--from-literal=(\w+)=", command)) for command in commands]
    for values in ({}, values_file("payment-service")):
        needed = {"PAYMENTS_DB__URL", values.get("migrations", {}).get("databaseUrlKey", "PAYMENTS_DB__URL")}
        assert any(needed == keys for keys in created), (needed, created)
    notes = render("payment-service", values_file("payment-service")).notes
    assert "--from-literal=PAYMENTS_DB__URL=" in notes and "--from-literal=MIGRATION_DB_URL=" in notes


def test_the_migrate_command_names_the_secret_key_when_the_url_is_missing() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PAYMENTS_DB__URL"}
    where = "Secret payment-service-secrets, key MIGRATION_DB_URL"
    done = subprocess.run(
        [sys.executable, "-m", "payment_infrastructure.postgres.migrate", "--url-from", where],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"no database URL: pass one or set PAYMENTS_DB__URL (from {where}: is the key there?)" in done.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"existingSecret": ""}, "existingSecret"),
        ({"migrations": {"databaseUrlKey": ""}}, "databaseUrlKey"),
    ],
)
def test_a_missing_secret_name_or_key_fails_the_render_naming_it(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render("payment-service", values)


@pytest.mark.parametrize("chart", CHART_NAMES)
def test_extra_env_reaches_every_deployment_and_not_the_migration_job(chart: str) -> None:
    extra = [
        {"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
        {"name": "PAYMENTS_REDIS__URL", "valueFrom": {"secretKeyRef": {"name": "redis", "key": "url"}}},
    ]
    rendered = render(chart, deep_merge(values_file(chart), {"extraEnv": extra}))
    seen = 0
    for workload, container in rendered.containers():
        env = container.get("env", [])
        if workload["kind"] == "Job":
            assert not any(e in env for e in extra)
            continue
        assert env[-2:] == extra, workload["metadata"]["name"]
        seen += 1
    assert seen >= 2
    assert lint(chart, deep_merge(values_file(chart), {"extraEnv": extra})) == []
    with pytest.raises(helm.HelmError, match="extraEnv"):
        render(chart, {"extraEnv": [{"value": "no name"}]})


def test_the_api_keeps_idle_connections_longer_than_ingress_nginx() -> None:
    from payment_infrastructure.server import http_server
    from services.payment_service.settings import ServiceSettings

    upstream_keepalive_timeout = 60  # ingress-nginx's default
    seconds = ServiceSettings().api.keep_alive_seconds
    assert seconds > upstream_keepalive_timeout
    server = http_server(create_management_app({}), host="127.0.0.1", port=0, keep_alive_seconds=seconds)
    assert server.config.timeout_keep_alive == seconds


def test_api_scales_on_cpu_and_the_dispatcher_is_a_separate_deployment() -> None:
    rendered = scenario("service-default")
    api = rendered.named("Deployment", "payments-payment-service-api")
    dispatcher = rendered.named("Deployment", "payments-payment-service-dispatcher")
    assert module_of(pod_spec(api)["containers"][0]) == "services.payment_service"
    assert module_of(pod_spec(dispatcher)["containers"][0]) == "services.payment_service.dispatcher"
    assert "replicas" not in api["spec"], "the HPA owns the API's replica count"
    assert dispatcher["spec"]["replicas"] == 1
    (hpa,) = rendered.of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == api["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["averageUtilization"] == 70
    minimal = scenario("service-minimal")
    assert not minimal.of_kind("HorizontalPodAutoscaler")
    assert minimal.named("Deployment", "payments-payment-service-api")["spec"]["replicas"] == 2


def test_service_exposes_http_and_management_and_ingress_only_the_api() -> None:
    rendered = scenario("service-everything-on")
    service = rendered.named("Service", "payments-payment-service")
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {("http", 8080), ("mgmt", 9000)}
    (ingress,) = rendered.of_kind("Ingress")
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/payments" and path["backend"]["service"]["port"]["name"] == "http"


def test_dashboard_and_alert_rules_in_the_chart_are_the_repository_files() -> None:
    files = CHARTS / "payment-service" / "files"
    assert (files / "payments.json").read_bytes() == (REPO / "infra/grafana/dashboards/payments.json").read_bytes()
    assert (files / "alerts.yml").read_bytes() == (REPO / "infra/prometheus/alerts.yml").read_bytes()
    rendered = scenario("service-everything-on")
    dashboard = rendered.named("ConfigMap", "payments-payment-service-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    for name in ("payments.json", "payment-consumers.json"):
        assert (files / name).read_bytes() == (REPO / "infra/grafana/dashboards" / name).read_bytes()
        assert json.loads(dashboard["data"][name]) == json.loads((files / name).read_text())
    (rule,) = rendered.of_kind("PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load((files / "alerts.yml").read_text())["groups"]


def test_prometheus_rule_links_each_alert_to_its_runbook_under_the_base_url() -> None:
    base = "https://git.example.com/payments/-/blob/main/"
    values = {"prometheusRule": {"enabled": True, "runbookBaseUrl": base}}
    (rule,) = render("payment-service", values).of_kind("PrometheusRule")
    source = yaml.safe_load((REPO / "infra/prometheus/alerts.yml").read_text())["groups"]
    expected = {r["alert"]: r for g in source for r in g["rules"] if "alert" in r}
    rendered = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert set(rendered) == set(expected)
    for name, alert in rendered.items():
        assert alert["annotations"]["runbook_url"] == f"{base}docs/runbooks/{name}.md"
        assert alert["expr"] == expected[name]["expr"]
    recorded = [r for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r]
    assert recorded and all("annotations" not in r for r in recorded)


@pytest.mark.parametrize(
    ("chart", "jobs"),
    [
        ("payment-service", {"payment-service", "payment-dispatcher"}),
        ("payment-consumers", {"payment-consumers", "payment-lag-exporter"}),
    ],
)
def test_service_monitors_set_the_job_names_the_alert_rules_use(chart: str, jobs: set[str]) -> None:
    monitors = render(chart, {"serviceMonitor": {"enabled": True}}).of_kind("ServiceMonitor")
    named = set()
    for monitor in monitors:
        (endpoint,) = monitor["spec"]["endpoints"]
        (relabel,) = endpoint["relabelings"]
        assert relabel["targetLabel"] == "job" and "sourceLabels" not in relabel
        named.add(relabel["replacement"])
    assert named == jobs
    rules = (REPO / "infra/prometheus/alerts.yml").read_text()
    assert all(f'job="{job}"' in rules for job in jobs)


@pytest.mark.parametrize("name", ["service-everything-on", "consumers-everything-on"])
def test_network_policies_cover_every_pod_and_let_in_only_what_it_serves(name: str) -> None:
    rendered = scenario(name)
    policies = rendered.of_kind("NetworkPolicy")
    assert policies
    for deployment in rendered.of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (policy,) = [p for p in policies if matches(p["spec"]["podSelector"]["matchLabels"], labels)]
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        container = pod_spec(deployment)["containers"][0]
        allowed = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
        assert allowed == {p["name"] for p in container["ports"]}, deployment["metadata"]["name"]
        for rule in policy["spec"]["ingress"]:
            if rule["ports"][0]["port"] != "http":  # management and metrics: Prometheus only
                assert rule["from"] == [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
                ]
    assert not scenario(name.replace("everything-on", "default")).of_kind("NetworkPolicy")  # opt-in


@pytest.mark.parametrize("chart", CHART_NAMES)
def test_an_image_digest_pins_every_container(chart: str) -> None:
    digest = "sha256:" + "a" * 64
    rendered = render(chart, {"image": {"digest": digest}})
    images = {c["image"] for _w, c in rendered.containers()}
    assert images == {f"payments@{digest}"}
    with pytest.raises(helm.HelmValuesError, match="/image/digest"):
        render(chart, {"image": {"digest": "latest"}})


@pytest.mark.parametrize("name", ["service-default", "service-production", "consumers-default", "consumers-production"])
def test_notes_give_the_postgres_connections_the_release_may_open_at_its_largest(name: str) -> None:
    """Counted from the rendered workloads: each Deployment at its most pods (its HPA's or ScaledObject's maximum,
    else its replicas) times the connections one of its processes may open."""
    rendered = scenario(name)
    most = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"]["maxReplicas"]
        for h in rendered.of_kind("HorizontalPodAutoscaler")
    }
    most |= {
        o["spec"]["scaleTargetRef"]["name"]: o["spec"]["maxReplicaCount"] for o in rendered.of_kind("ScaledObject")
    }
    total = 0
    for deployment in rendered.of_kind("Deployment"):
        container = pod_spec(deployment)["containers"][0]
        config = config_map_env(rendered, container)
        pool = int(config.get("PAYMENTS_DB__POOL_SIZE", "10")) + int(config.get("PAYMENTS_DB__MAX_OVERFLOW", "0"))
        per_process = {
            "services.payment_service": 2 * pool,  # the engine and the create path's asyncpg pool
            "services.payment_service.dispatcher": pool + 1,  # and its LISTEN connection
            "services.payment_consumers": pool,
            "services.payment_consumers.lag_exporter": 0,
        }[module_of(container)]
        pods = most.get(deployment["metadata"]["name"], deployment["spec"].get("replicas", 1))
        total += pods * per_process
    assert f"Postgres connections: up to {total} from this release" in rendered.notes


# ---- Custom resources (no schema ships for them: check what their operators read) --------------------------------


@pytest.mark.parametrize("name", ["service-everything-on", "service-production", "consumers-everything-on"])
def test_custom_resources_service_monitors_scrape_real_metrics_ports(name: str) -> None:
    _chart, values = SCENARIOS[name]
    rendered = scenario(name)
    monitors = rendered.of_kind("ServiceMonitor")
    assert monitors
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == values.get("serviceMonitor", {}).get(
            "release", "prometheus-stack"
        )
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        services = [
            s
            for s in rendered.of_kind("Service")
            if matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(services) == 1, f"{monitor['metadata']['name']} selects {len(services)} Services"
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout", "relabelings"}
            assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"
            assert re.fullmatch(r"\d+(ms|s|m|h)", endpoint["interval"])


def test_service_monitor_release_label_is_configurable() -> None:
    rendered = render("payment-consumers", {"serviceMonitor": {"enabled": True, "release": "kps"}})
    monitors = rendered.of_kind("ServiceMonitor")
    assert len(monitors) == 2  # the consumers' and the lag exporter's
    assert all(monitor["metadata"]["labels"]["release"] == "kps" for monitor in monitors)


# ---- payment-consumers: components and lag-based autoscaling ----------------------------------------------------

PIPELINE = "payments-payment-consumers-pipeline"
LAG_GROUPS = {GROUPS[Worker.PSP_CALL_EXECUTOR], GROUPS[Worker.RESULT_APPLIER]}


@pytest.mark.parametrize("name", [n for n in SCENARIOS if n.startswith("consumers-")])
def test_every_worker_runs_in_some_deployment(name: str) -> None:
    rendered = scenario(name)
    running: list[str] = []
    for deployment in rendered.of_kind("Deployment"):
        container = pod_spec(deployment)["containers"][0]
        if module_of(container) == "services.payment_consumers":  # (not the lag exporter)
            running += json.loads(literal_env(container)["PAYMENTS_PROCESS__WORKERS"])
    assert sorted(set(running)) == sorted(w.value for w in Worker)


def test_chart_refuses_values_that_leave_a_worker_unrun() -> None:
    with pytest.raises(helm.HelmRenderError, match="no enabled component runs the worker enqueuer"):
        render("payment-consumers", {"components": {"support": {"enabled": False}}})


@pytest.mark.parametrize("mode", ["keda", "external"])
def test_chart_refuses_more_lag_scaled_replicas_than_partitions(mode: str) -> None:
    too_many = {"autoscaling": {"mode": mode, "maxReplicas": 9}, "kafka": {"partitions": 8}}
    with pytest.raises(helm.HelmRenderError, match=r"exceeds kafka\.partitions"):
        render("payment-consumers", too_many)
    render("payment-consumers", {**too_many, "kafka": {"partitions": 9}})  # the ceiling itself is fine


def test_the_default_scales_the_pipeline_on_cpu_which_a_plain_cluster_can_measure() -> None:
    rendered = scenario("consumers-default")
    (hpa,) = rendered.of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == PIPELINE
    (metric,) = hpa["spec"]["metrics"]
    assert metric == {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
    }
    assert rendered.named("Deployment", "payments-payment-consumers-support")["spec"]["replicas"] == 2


def test_external_mode_is_the_originals_hpa_on_the_worst_group_lag() -> None:
    rendered = scenario("consumers-external")
    (hpa,) = rendered.of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == PIPELINE
    assert "replicas" not in rendered.named("Deployment", PIPELINE)["spec"]
    assert rendered.named("Deployment", "payments-payment-consumers-support")["spec"]["replicas"] == 2
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 5)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    external = metric["external"]
    assert external["metric"]["name"] == "kafka_consumer_group_lag_worst2"
    # Per pod, as KEDA's lagThreshold: ceil(worst lag / 800) replicas (a Value target would multiply by replicas).
    assert external["target"] == {"type": "AverageValue", "averageValue": "800"}
    (expression,) = external["metric"]["selector"]["matchExpressions"]
    assert expression["key"] == "consumergroup" and expression["operator"] == "In"
    assert set(expression["values"]) == {group for group, _topic in LAG_GROUPS}
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 120
    assert behavior["scaleUp"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert behavior["scaleDown"]["policies"] == [{"type": "Percent", "value": 50, "periodSeconds": 60}]


def test_both_lag_modes_aim_at_the_same_lag_per_replica() -> None:
    external = render("payment-consumers", {"autoscaling": {"mode": "external", "lagPerReplica": 321}})
    keda = render("payment-consumers", {"autoscaling": {"mode": "keda", "lagPerReplica": 321}})
    (hpa,) = external.of_kind("HorizontalPodAutoscaler")
    (scaled,) = keda.of_kind("ScaledObject")
    assert hpa["spec"]["metrics"][0]["external"]["target"]["averageValue"] == "321"
    assert {t["metadata"]["lagThreshold"] for t in scaled["spec"]["triggers"]} == {"321"}


@pytest.mark.parametrize("name", ["consumers-keda", "consumers-production"])
def test_custom_resources_keda_scales_the_pipeline_on_its_consumer_groups_lag(name: str) -> None:
    rendered = scenario(name)
    assert not rendered.of_kind("HorizontalPodAutoscaler"), "KEDA owns the HPA"
    (scaled,) = rendered.of_kind("ScaledObject")
    spec = scaled["spec"]
    assert set(spec) <= {
        "scaleTargetRef",
        "minReplicaCount",
        "maxReplicaCount",
        "pollingInterval",
        "cooldownPeriod",
        "fallback",
        "advanced",
        "triggers",
    }
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": PIPELINE}
    assert "replicas" not in rendered.named("Deployment", PIPELINE)["spec"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 120
    assert {(t["metadata"]["consumerGroup"], t["metadata"]["topic"]) for t in spec["triggers"]} == LAG_GROUPS
    config = config_map_env(rendered, pod_spec(rendered.named("Deployment", PIPELINE))["containers"][0])
    for trigger in spec["triggers"]:
        assert trigger["type"] == "kafka"
        # KEDA's CRD types trigger metadata as map[string]string: a bare number or boolean is refused.
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger["metadata"]
        assert trigger["metadata"]["bootstrapServers"] == config["PAYMENTS_KAFKA__BOOTSTRAP_SERVERS"]
        assert trigger["metadata"]["lagThreshold"] == "800"
        assert trigger["metadata"]["allowIdleConsumers"] == "false"


def test_keda_lag_threshold_and_brokers_are_configurable() -> None:
    values = {"autoscaling": {"mode": "keda", "lagPerReplica": 123, "keda": {"bootstrapServers": "k:1"}}}
    (scaled,) = render("payment-consumers", values).of_kind("ScaledObject")
    assert {t["metadata"]["lagThreshold"] for t in scaled["spec"]["triggers"]} == {"123"}
    assert {t["metadata"]["bootstrapServers"] for t in scaled["spec"]["triggers"]} == {"k:1"}


def test_chart_consumer_groups_are_the_codes_groups() -> None:
    consuming = [w.value for w in GROUPS]
    values = {
        "autoscaling": {"mode": "keda"},
        "components": {
            "pipeline": {"workers": consuming},
            "support": {"workers": ["retry-dispatcher", "status-check-scheduler"], "autoscaling": {"mode": "none"}},
        },
    }
    (scaled,) = render("payment-consumers", values).of_kind("ScaledObject")
    rendered_groups = {(t["metadata"]["consumerGroup"], t["metadata"]["topic"]) for t in scaled["spec"]["triggers"]}
    assert rendered_groups == {(group, topic.value) for group, topic in GROUPS.values()}


@pytest.mark.parametrize(("mode", "metric_type"), [("cpu", "Resource"), ("external", "External")])
def test_hpa_modes_render_one_hpa_with_the_chosen_metric(mode: str, metric_type: str) -> None:
    (hpa,) = render("payment-consumers", {"autoscaling": {"mode": mode}}).of_kind("HorizontalPodAutoscaler")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == [metric_type]


def test_no_autoscaling_gives_fixed_replicas() -> None:
    rendered = scenario("consumers-none")
    assert not rendered.of_kind("HorizontalPodAutoscaler") and not rendered.of_kind("ScaledObject")
    assert rendered.named("Deployment", PIPELINE)["spec"]["replicas"] == 3


def test_notes_tell_the_operator_about_the_secret_and_the_partition_ceiling() -> None:
    notes = scenario("consumers-default").notes
    assert "payment-consumers-secrets" in notes and "kafka.partitions" in notes
    assert "metrics-server" in notes
    assert "kafka_consumer_group_lag_worst2" in scenario("consumers-external").notes
    assert "payment-service-secrets" in scenario("service-default").notes


@pytest.mark.parametrize("values_name", ["default", "production"])
def test_both_charts_create_topics_with_the_same_partition_count(values_name: str) -> None:
    """Topics are created by whichever process starts first, so the two charts must agree."""

    def partitions(chart: str) -> str:
        values = {} if values_name == "default" else PRODUCTION[chart]
        (config_map,) = [
            c for c in render(chart, values).of_kind("ConfigMap") if c["metadata"]["name"].endswith("-config")
        ]
        return str(config_map["data"]["PAYMENTS_KAFKA__PARTITIONS"])

    assert partitions("payment-service") == partitions("payment-consumers")


@pytest.mark.parametrize("chart", CHART_NAMES)
def test_tracing_values_give_every_deployment_the_otel_variables_and_none_without_an_endpoint(chart: str) -> None:
    tracing = {
        "endpoint": "http://otel-collector.observability:4318",
        "samplerArg": 0.01,
        "env": {"OTEL_BSP_MAX_QUEUE_SIZE": 4096},
    }
    values = deep_merge(values_file(chart), {"tracing": tracing})
    assert lint(chart, values) == []
    rendered = render(chart, values)
    seen = 0
    for workload, container in rendered.containers():
        if workload["kind"] == "Job":
            continue
        env = config_map_env(rendered, container)
        assert {k: v for k, v in env.items() if k.startswith("OTEL_")} == {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
            "OTEL_BSP_MAX_QUEUE_SIZE": "4096",
        }, workload["metadata"]["name"]
        assert otlp_endpoint(env) == tracing["endpoint"]
        seen += 1
    assert seen >= 2
    off = render(chart, values_file(chart))
    for _workload, container in off.containers():
        assert not [k for k in config_map_env(off, container) if k.startswith("OTEL_")], chart
    with pytest.raises(helm.HelmError, match=r"PAYMENTS_X__Y' does not match pattern '\^OTEL_"):
        render(chart, {"tracing": {"env": {"PAYMENTS_X__Y": "1"}}})
    with pytest.raises(helm.HelmError, match="/tracing/protocol': value must be one of"):
        render(chart, {"tracing": {"protocol": "http/json"}})
