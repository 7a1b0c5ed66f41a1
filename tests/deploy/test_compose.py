"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the Compose Specification's schema,
then every service against the code it runs (modules, settings, ports, health endpoints, dependencies)."""

from __future__ import annotations

import copy
import importlib.resources
import importlib.util
import json
import os
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from devstack import kafka as devstack_kafka
from devstack import keycloak as devstack_keycloak
from devstack import opensearch as devstack_opensearch
from payment_infrastructure.auth.settings import AuthSettings
from payment_infrastructure.environment import settings_variables as settings_env_names
from payment_infrastructure.observability.management import create_management_app
from payment_infrastructure.observability.tracing import otlp_endpoint
from services.payment_consumers.settings import ConsumersSettings, ProcessSettings, Worker
from services.payment_service.settings import ApiSettings, ServiceSettings
from services.psp_simulator import __main__ as psp_simulator_main
from tests.deploy.charts import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
APP_SETTINGS = {
    "migrate": None,
    "payment-service": ServiceSettings,
    "payment-dispatcher": ServiceSettings,
    "payment-consumers": ConsumersSettings,
    "payment-lag-exporter": ConsumersSettings,
    "psp-simulator": None,
}
HEALTH_URL = re.compile(r"urlopen\('(http://127\.0\.0\.1:(\d+)(/[^']*))'")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def compose_schema() -> dict[str, Any]:
    text = (
        importlib.resources.files("check_jsonschema.builtin_schemas").joinpath("vendor/compose-spec.json").read_text()
    )
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def module_of(service: dict[str, Any]) -> str:
    command = service["command"]
    assert command[:2] == ["python", "-m"], command
    module: str = command[2]
    return module


def published(service: dict[str, Any]) -> dict[int, str]:
    """container port -> host address:port."""
    ports = {}
    for entry in service.get("ports", []):
        host, host_port, container = entry.rsplit(":", 2) if entry.count(":") == 2 else ("", *entry.split(":"))
        ports[int(container)] = f"{host}:{host_port}"
    return ports


def load_settings(monkeypatch: pytest.MonkeyPatch, cls: type[Any], env: dict[str, Any]) -> Any:
    with monkeypatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("PAYMENTS_")]:
            patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, str(value))
        return cls()


# ---- Schema ------------------------------------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


def test_compose_schema_validation_catches_a_misspelt_key() -> None:
    broken = copy.deepcopy(compose())
    broken["services"]["redis"]["healthchek"] = broken["services"]["redis"].pop("healthcheck")
    assert schema_errors(broken)


# ---- Services ----------------------------------------------------------------------------------------------------


def test_compose_runs_every_part_of_the_system() -> None:
    assert set(services()) == {
        "postgres",
        "redis",
        "kafka",
        "keycloak",
        "prometheus",
        "grafana",
        "migrate",
        "payment-service",
        "payment-dispatcher",
        "payment-consumers",
        "payment-lag-exporter",
        "psp-simulator",
        "otel-collector",
        "jaeger",
        "opensearch",
        "opensearch-template",
        "fluent-bit",
    }


def test_every_service_has_an_image_and_app_services_build_the_repository_dockerfile() -> None:
    for name, service in services().items():
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", service["image"]), f"{name}: pin an image tag"
        if name == "psp-simulator":  # the dev-only image, never the runtime one
            assert service["build"] == {"context": ".", "dockerfile": "infra/docker/Dockerfile", "target": name}
            assert service["image"] != services()["payment-service"]["image"]
        elif name in APP_SETTINGS:
            assert service["build"] == {"context": ".", "dockerfile": "infra/docker/Dockerfile"}
            assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        else:
            assert "build" not in service
    assert "apache/kafka" in services()["kafka"]["image"]


def image_tag(service: str) -> tuple[str, str]:
    repository, tag = services()[service]["image"].rsplit(":", 1)
    return repository, tag


def test_kafka_and_keycloak_images_are_the_versions_make_run_starts() -> None:
    assert image_tag("kafka") == ("apache/kafka", devstack_kafka.kafka_version())
    assert image_tag("keycloak") == ("quay.io/keycloak/keycloak", devstack_keycloak.VERSION)


@pytest.mark.parametrize("name", list(APP_SETTINGS))
def test_app_services_run_modules_that_exist(name: str) -> None:
    assert importlib.util.find_spec(module_of(services()[name])) is not None


@pytest.mark.parametrize("name", [n for n, cls in APP_SETTINGS.items() if cls is not None])
def test_app_service_variables_are_settings_fields_and_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    service = services()[name]
    cls = APP_SETTINGS[name]
    assert cls is not None
    env = service["environment"]
    unknown = {k for k in env if k.startswith("PAYMENTS_")} - settings_env_names(cls)
    assert not unknown, f"{name} sets {sorted(unknown)}"
    settings = load_settings(monkeypatch, cls, env)
    # Apache Kafka serves idempotent producers, the code's default: nothing in compose turns it off.
    assert "PAYMENTS_KAFKA__ENABLE_IDEMPOTENCE" not in env
    assert settings.kafka.enable_idempotence is True
    assert urlsplit(settings.db.url).hostname == "postgres"


def test_psp_simulator_variables_are_the_ones_it_reads() -> None:
    source = importlib.util.find_spec("services.psp_simulator.__main__")
    assert source is not None and source.origin is not None
    text = Path(source.origin).read_text()
    read = set(re.findall(r"\{ENV_PREFIX\}(\w+)", text)) | set(re.findall(r'_optional\(env, "(\w+)"', text))
    env = services()["psp-simulator"]["environment"]
    assert {k.removeprefix(psp_simulator_main.ENV_PREFIX) for k in env} <= read
    assert int(env["PAYMENTS_PSP_SIM__PORT"]) == psp_simulator_main.DEFAULT_PORT


def test_app_services_listen_on_all_interfaces_at_the_codes_default_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    api = load_settings(monkeypatch, ServiceSettings, services()["payment-service"]["environment"])
    assert (api.api.host, api.api.management_host) == ("0.0.0.0", "0.0.0.0")
    assert (api.api.port, api.api.management_port) == (ApiSettings().port, ApiSettings().management_port)
    assert set(published(services()["payment-service"])) == {api.api.port, api.api.management_port}
    dispatcher = load_settings(monkeypatch, ServiceSettings, services()["payment-dispatcher"]["environment"])
    assert dispatcher.outbox.dispatcher_metrics_host == "0.0.0.0"
    assert set(published(services()["payment-dispatcher"])) == {ServiceSettings().outbox.dispatcher_metrics_port}
    consumers = load_settings(monkeypatch, ConsumersSettings, services()["payment-consumers"]["environment"])
    assert consumers.process.management_host == "0.0.0.0"
    assert set(published(services()["payment-consumers"])) == {ProcessSettings().management_port}
    assert set(consumers.process.workers) == set(Worker)
    assert set(published(services()["psp-simulator"])) == {psp_simulator_main.DEFAULT_PORT}


def test_app_healthchecks_ask_the_endpoints_each_process_serves() -> None:
    management_paths = {route.path for route in create_management_app({}).routes}  # type: ignore[attr-defined]
    served = {
        "payment-service": (ApiSettings().management_port, management_paths),
        "payment-dispatcher": (ServiceSettings().outbox.dispatcher_metrics_port, management_paths),
        "payment-consumers": (ProcessSettings().management_port, management_paths),
        "psp-simulator": (psp_simulator_main.DEFAULT_PORT, {"/health/live"}),
    }
    for name, (port, paths) in served.items():
        test = " ".join(services()[name]["healthcheck"]["test"])
        match = HEALTH_URL.search(test)
        assert match is not None, name
        assert int(match.group(2)) == port and match.group(3) in paths, name
    assert "/health/ready" in " ".join(services()["payment-service"]["healthcheck"]["test"])


def test_dependencies_wait_for_health_or_completion_that_can_happen() -> None:
    for name, service in services().items():
        for dependency, spec in service.get("depends_on", {}).items():
            target = services()[dependency]
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dependency}, which has no healthcheck"
            else:
                assert spec["condition"] == "service_completed_successfully", name
                assert target.get("restart") == "no", f"{dependency} must run once"
    for name in ("payment-service", "payment-dispatcher", "payment-consumers"):
        depends = services()[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["kafka"]["condition"] == "service_healthy", name
    assert services()["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "--create" in services()["migrate"]["command"]


def test_services_reach_each_other_by_compose_name_and_listener() -> None:
    env = services()["payment-consumers"]["environment"]
    kafka = services()["kafka"]["environment"]
    advertised = {listener.split("://", 1)[1] for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    assert env["PAYMENTS_KAFKA__BOOTSTRAP_SERVERS"] in advertised
    assert "127.0.0.1:9092" in advertised  # and the host's tools reach it on the default port
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert len(str(kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"]).split(",")) == 1  # a single KRaft node
    # One node: every internal topic must be satisfied by one replica, and topics are the services' to create.
    one_replica = [k for k in kafka if k.endswith(("_REPLICATION_FACTOR", "_MIN_ISR", "_MIN_INSYNC_REPLICAS"))]
    assert {"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"} <= set(
        one_replica
    )
    assert all(int(kafka[k]) == 1 for k in one_replica), one_replica
    assert str(kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false"
    assert urlsplit(env["PAYMENTS_PSP__BASE_URL"]).hostname == "psp-simulator"
    assert urlsplit(env["PAYMENTS_REDIS__URL"]).hostname == "redis"
    migrate_url = services()["migrate"]["command"][-1]
    assert migrate_url == services()["payment-service"]["environment"]["PAYMENTS_DB__URL"]


def test_keycloak_imports_the_repository_realm_and_issues_the_issuer_the_api_checks() -> None:
    keycloak = services()["keycloak"]
    realm_file = "./infra/keycloak/realm-ecommerce-platform.json"
    (volume,) = keycloak["volumes"]
    source, target, mode = volume.split(":")
    assert source == realm_file and (REPO / source).is_file() and mode == "ro"
    assert target.startswith("/opt/keycloak/data/import/")
    flags = dict(f.removeprefix("--").split("=", 1) for f in keycloak["command"] if "=" in f)
    assert keycloak["command"][0] == "start-dev" and "--import-realm" in keycloak["command"]
    realm = json.loads((REPO / realm_file).read_text())["realm"]
    issuer = AuthSettings(issuer_url=services()["payment-service"]["environment"]["PAYMENTS_AUTH__ISSUER_URL"])
    # Keycloak 26's hostname options take the whole URL (the v1 options `hostname-url` and `hostname-admin-url`
    # are gone and would stop it at start).
    assert not {"hostname-url", "hostname-admin-url"} & set(flags)
    assert issuer.issuer_url == f"{flags['hostname']}/realms/{realm}"
    assert urlsplit(flags["hostname-admin"]).hostname == "127.0.0.1"
    assert urlsplit(issuer.issuer_url).port == int(flags["http-port"])
    # The same port as the Keycloak of `make run`, so the README's token command works against both.
    assert urlsplit(AuthSettings().issuer_url).port == int(flags["http-port"])
    assert published(keycloak) == {int(flags["http-port"]): f"127.0.0.1:{flags['http-port']}"}


def test_keycloak_bootstraps_its_admin_and_is_health_checked_on_its_management_port() -> None:
    keycloak = services()["keycloak"]
    env = keycloak["environment"]
    # Keycloak 26 reads KC_BOOTSTRAP_ADMIN_*; KEYCLOAK_ADMIN* are deprecated.
    assert {"KC_BOOTSTRAP_ADMIN_USERNAME", "KC_BOOTSTRAP_ADMIN_PASSWORD"} <= set(env)
    assert not {"KEYCLOAK_ADMIN", "KEYCLOAK_ADMIN_PASSWORD"} & set(env)
    flags = dict(f.removeprefix("--").split("=", 1) for f in keycloak["command"] if "=" in f)
    assert flags["health-enabled"] == "true"
    # Since Keycloak 25 /health/* is served on the management port only (default 9000), not on the HTTP port.
    management_port = int(flags.get("http-management-port", "9000"))
    assert management_port != int(flags["http-port"])
    probe = " ".join(keycloak["healthcheck"]["test"])
    assert f"/dev/tcp/127.0.0.1/{management_port} " in probe and "GET /health/ready " in probe
    assert management_port not in published(keycloak)  # nothing on the laptop needs it


def test_ports_are_published_on_loopback_only() -> None:
    for name, service in services().items():
        for container_port, host in published(service).items():
            assert host.startswith("127.0.0.1:"), f"{name}:{container_port} is published on {host}"


def test_app_containers_are_hardened_like_the_kubernetes_pods() -> None:
    uid = re.findall(r"^USER (\d+:\d+)$", DOCKERFILE.read_text(), re.MULTILINE)[-1]
    for name in APP_SETTINGS:
        service = services()[name]
        assert service["user"] == uid and service["read_only"] is True and service["tmpfs"] == ["/tmp"], name


# ---- Dockerfile --------------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_builds_from_the_lock_in_two_python_stages_and_runs_as_non_root() -> None:
    instructions = dockerfile_instructions()
    args = {v.split("=", 1)[0]: v.split("=", 1)[1] for k, v in instructions if k == "ARG" and "=" in v}
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    stages = [v for k, v in instructions if k == "FROM"]
    # The runtime image is the last (default) target; the simulator's is a sibling of it, not its parent.
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS base", "base AS psp-simulator", "base AS runtime"]
    makefile_uv = re.search(r"^UV_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert makefile_uv is not None and args["UV_VERSION"] == makefile_uv.group(1)
    runs = [v for k, v in instructions if k == "RUN"]
    assert any("uv sync --frozen --no-dev" in run for run in runs)
    users = [v for k, v in instructions if k == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1])
    assert instructions[-1][0] == "CMD"
    command = json.loads(instructions[-1][1])
    assert command[:2] == ["python", "-m"] and importlib.util.find_spec(command[2]) is not None


def test_the_runtime_image_has_the_payments_cli_and_not_the_psp_simulator(tmp_path: Path) -> None:
    """The image installs the project's wheel (uv sync --no-editable): built here, it carries the `payments` entry
    point and every package the processes import, and leaves the simulator out; only its own target copies it."""
    subprocess.run(
        [str(REPO / ".venv" / "bin" / "uv"), "build", "--wheel", "--out-dir", str(tmp_path), "-q", str(REPO)],
        check=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
        assert "payments = services.payment_consumers.cli:main" in archive.read(entry_points).decode()
    assert not [n for n in names if n.startswith("services/psp_simulator/")]
    for module in ("services/payment_consumers/cli.py", "services/payment_consumers/lag_exporter.py"):
        assert module in names
    assert any(n.startswith("payment_infrastructure/postgres/migrations/versions/") for n in names)
    runs = [v for k, v in dockerfile_instructions() if k == "RUN"]
    assert any("uv sync --frozen --no-dev --no-editable" in run for run in runs)
    runtime = DOCKERFILE.read_text().split("AS runtime", 1)[1]
    assert "psp_simulator" not in runtime


def test_dockerfile_copies_only_what_exists_and_the_dockerignore_lets_through() -> None:
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].removesuffix("/**") for line in ignore if line.startswith("!")}
    copies = [v.split() for k, v in dockerfile_instructions() if k == "COPY" and not v.startswith("--from")]
    sources = [s for parts in copies for s in parts[:-1]]
    assert sources
    for source in sources:
        assert (REPO / source).exists() and source in allowed, source
    # Everything the processes import is in the image.
    packages = {"payment_domain", "payment_application", "payment_infrastructure", "services"}
    assert packages <= set(sources)


TRACED = ("payment-service", "payment-dispatcher", "payment-consumers")


@pytest.mark.parametrize("name", TRACED)
def test_app_services_export_their_spans_to_the_collector_which_forwards_them_to_jaeger(name: str) -> None:
    env = {k: str(v) for k, v in services()[name]["environment"].items()}
    endpoint = urlsplit(otlp_endpoint(env) or "")
    assert (endpoint.hostname, env["OTEL_EXPORTER_OTLP_PROTOCOL"]) == ("otel-collector", "http/protobuf")
    collector = yaml.safe_load((REPO / "infra/otel/collector.yaml").read_text())
    receiver = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert receiver.rsplit(":", 1)[1] == str(endpoint.port)
    (exporter,) = collector["service"]["pipelines"]["traces"]["exporters"]
    assert urlsplit("//" + collector["exporters"][exporter]["endpoint"]).hostname == "jaeger"
    mounted = services()["otel-collector"]["volumes"]
    assert "./infra/otel/collector.yaml:/etc/otelcol/collector.yaml:ro" in mounted


# ---- Logs (profile `logs`) ------------------------------------------------------------------------------------------


def test_log_search_is_opt_in_and_its_opensearch_is_the_version_the_tests_run() -> None:
    logs = {"opensearch", "opensearch-template", "fluent-bit"}
    assert {name for name, service in services().items() if service.get("profiles")} == logs
    assert all(services()[name]["profiles"] == ["logs"] for name in logs)
    assert image_tag("opensearch") == ("opensearchproject/opensearch", devstack_opensearch.opensearch_version())
    assert published(services()["opensearch"]) == {9200: "127.0.0.1:9200"}


def test_fluent_bit_ships_to_the_data_stream_whose_template_the_one_shot_service_installs() -> None:
    template_service = services()["opensearch-template"]
    source, target, mode = template_service["volumes"][0].split(":")
    assert (REPO / source).resolve() == REPO / "infra" / "opensearch" / "payments-logs-template.json" and mode == "ro"
    command = template_service["command"]
    assert f"@{target}" in command and command[-1] == "http://opensearch:9200/_index_template/payments-logs"
    fluent_bit = services()["fluent-bit"]
    assert fluent_bit["depends_on"] == {"opensearch-template": {"condition": "service_completed_successfully"}}
    config_source, config_target, _ = fluent_bit["volumes"][0].split(":")
    assert fluent_bit["command"] == [f"--config={config_target}"]
    conf = (REPO / config_source).read_text()
    output = conf.split("[OUTPUT]", 1)[1]
    settings = dict(line.split(None, 1) for line in output.strip().splitlines())
    assert (settings["Host"], settings["Port"], settings["Write_Operation"]) == ("opensearch", "9200", "create")
    template = json.loads((REPO / source).read_text())
    assert re.fullmatch(template["index_patterns"][0].replace("*", ".*"), settings["Index"])
    # The app services write JSON lines (the default), which the parser filter turns into fields.
    for name in APP_SETTINGS:
        assert services()[name].get("environment", {}).get("PAYMENTS_LOGGING__JSON_OUTPUT", "true") == "true", name
