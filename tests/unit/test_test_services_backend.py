"""PAYMENTS_TEST_SERVICES, checked without Docker: which backend the session fixtures take, that an unknown value
is refused, that both backends hand out the same things (the Keycloak of either is an IdentityServer), and that
the containers backend runs the images docker-compose.yml pins."""

from __future__ import annotations

import contextlib
import inspect
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.keycloak import Keycloak
from tests.fixtures import broker, containers, database, keycloak, redis, services
from tests.fixtures.containers import KeycloakInContainer
from tests.fixtures.services import ENV_VAR, IdentityServer, backend

REPO = Path(__file__).resolve().parents[2]
IDENTITY_SERVER_MEMBERS = {"base_url", "issuer_url", "token_url", "jwks_url", "discovery_url", "token"}


# ---- Backend selection -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("environ", [{}, {ENV_VAR: ""}, {ENV_VAR: "  "}, {"OTHER": "containers"}])
def test_local_processes_are_the_default(environ: Mapping[str, str]) -> None:
    assert backend(environ) == "local"


@pytest.mark.parametrize("value", ["local", "containers", " containers\n"])
def test_the_backend_is_read_from_the_environment_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(ENV_VAR, value)
    assert backend() == value.strip()
    assert services.uses_containers() is (value.strip() == "containers")
    monkeypatch.delenv(ENV_VAR)
    assert backend() == "local"


@pytest.mark.parametrize("value", ["docker", "Containers", "testcontainers", "local,containers", "0"])
def test_an_unknown_backend_is_refused_naming_the_variable_and_the_choices(value: str) -> None:
    with pytest.raises(ValueError) as error:
        backend({ENV_VAR: value})
    message = str(error.value)
    assert ENV_VAR in message and repr(value) in message
    assert "local" in message and "containers" in message


# ---- The session fixtures follow it ------------------------------------------------------------------------------


def fixture_body(fixture: Any) -> Callable[..., Any]:
    """The function under a @pytest.fixture (pytest refuses direct calls; pytest is pinned in pyproject.toml)."""
    body: Callable[..., Any] = fixture._get_wrapped_function()
    return body


class Refused:
    """Stands in for whatever the backend under test must not touch."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{self.what} was used")


async def first_yield(generator: AsyncIterator[Any]) -> Any:
    value = await anext(generator)
    with pytest.raises(StopAsyncIteration):
        await anext(generator)
    return value


class FakeLocalKafka:
    bootstrap_servers = "127.0.0.1:1111"
    stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        FakeLocalKafka.stopped = True


def refuse_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker, "test_broker", Refused("a local Kafka"))
    monkeypatch.setattr(keycloak, "Keycloak", Refused("a local Keycloak"))
    monkeypatch.setattr(redis, "start_redis_server", Refused("a local redis-server"))


def refuse_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("kafka", "keycloak", "redis", "postgres_server"):
        monkeypatch.setattr(containers, name, Refused(f"containers.{name}"))


async def test_with_containers_the_session_fixtures_hand_out_what_the_containers_give(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.setenv(ENV_VAR, "containers")
    refuse_local(monkeypatch)
    seen: dict[str, Any] = {}

    @contextlib.contextmanager
    def fake_kafka(extra_properties: Mapping[str, str]) -> Iterator[str]:
        seen["kafka properties"] = dict(extra_properties)
        yield "docker-host:32001"
        seen["kafka stopped"] = True

    in_container = KeycloakInContainer("http://docker-host:32002")

    @contextlib.contextmanager
    def fake_keycloak() -> Iterator[KeycloakInContainer]:
        yield in_container
        seen["keycloak stopped"] = True

    @contextlib.contextmanager
    def fake_redis() -> Iterator[str]:
        yield "redis://docker-host:32003/0"
        seen["redis stopped"] = True

    monkeypatch.setattr(containers, "kafka", fake_kafka)
    monkeypatch.setattr(containers, "keycloak", fake_keycloak)
    monkeypatch.setattr(containers, "redis", fake_redis)
    monkeypatch.setattr(
        containers, "postgres_server", lambda: "postgresql+asyncpg://postgres:pw@docker-host:32004/postgres"
    )

    assert await first_yield(fixture_body(broker.kafka_broker)(tmp_path_factory)) == "docker-host:32001"
    assert await first_yield(fixture_body(keycloak.keycloak)(tmp_path_factory)) is in_container
    redis_server = await first_yield(fixture_body(redis.redis_server)())
    assert redis_server.url == "redis://docker-host:32003/0"
    assert database.server_url.__wrapped__() == "postgresql+asyncpg://postgres:pw@docker-host:32004/postgres"
    # The session broker's settings travel to the container too (the crash tests' short sessions).
    assert seen.pop("kafka properties") == broker.TEST_BROKER_PROPERTIES
    assert seen == {"kafka stopped": True, "keycloak stopped": True, "redis stopped": True}


async def test_by_default_the_session_fixtures_start_local_processes(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    refuse_containers(monkeypatch)
    monkeypatch.setattr(broker, "test_broker", lambda data_dir: FakeLocalKafka())
    monkeypatch.setenv("PAYMENTS_TEST_DB_SERVER", "postgresql+asyncpg://postgres@db.example:5433/postgres")

    FakeLocalKafka.stopped = False
    assert await first_yield(fixture_body(broker.kafka_broker)(tmp_path_factory)) == "127.0.0.1:1111"
    assert FakeLocalKafka.stopped
    assert database.server_url.__wrapped__() == "postgresql+asyncpg://postgres@db.example:5433/postgres"


@pytest.mark.parametrize(
    ("fixture", "arguments"),
    [
        (broker.kafka_broker, ("tmp_path_factory",)),
        (keycloak.keycloak, ("tmp_path_factory",)),
        (redis.redis_server, ()),
    ],
    ids=["kafka_broker", "keycloak", "redis_server"],
)
async def test_an_unknown_backend_stops_a_session_fixture_before_it_starts_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory, fixture: Any, arguments: tuple[str, ...]
) -> None:
    monkeypatch.setenv(ENV_VAR, "kubernetes")
    refuse_local(monkeypatch)
    refuse_containers(monkeypatch)
    generator = fixture_body(fixture)(*[tmp_path_factory for _ in arguments])
    with pytest.raises(ValueError, match=ENV_VAR):
        await anext(generator)
    with pytest.raises(ValueError, match=ENV_VAR):
        database.server_url.__wrapped__()


def test_the_fixture_modules_import_no_testcontainers() -> None:
    """The default run must not need testcontainers (nor Docker): it is imported only to start a container."""
    code = (
        "import sys\n"
        "import tests.fixtures.broker, tests.fixtures.keycloak, tests.fixtures.database, tests.fixtures.redis\n"
        "import tests.fixtures.containers, tests.fixtures.services\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('testcontainers', 'docker')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ---- One IdentityServer, either backend --------------------------------------------------------------------------


def protocol_members(protocol: type) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")}


def test_the_identity_server_protocol_is_what_the_tests_use_of_keycloak() -> None:
    assert protocol_members(IdentityServer) == IDENTITY_SERVER_MEMBERS


@pytest.mark.parametrize("server_class", [Keycloak, KeycloakInContainer], ids=["devstack", "container"])
def test_both_keycloaks_have_the_identity_server_members_with_its_signatures(
    server_class: type, tmp_path: Path
) -> None:
    server = Keycloak(tmp_path, port=18082) if server_class is Keycloak else KeycloakInContainer("http://h:18082")
    assert isinstance(server, IdentityServer)
    for name in IDENTITY_SERVER_MEMBERS - {"token"}:
        value = getattr(server, name)
        assert isinstance(value, str) and value.startswith("http://"), name
    assert inspect.iscoroutinefunction(server_class.token)
    assert inspect.signature(server_class.token) == inspect.signature(IdentityServer.token)


def test_both_keycloaks_serve_the_realm_at_the_same_paths(tmp_path: Path) -> None:
    local = Keycloak(tmp_path, port=18082)
    container = KeycloakInContainer("http://docker-host:32768")
    for name in IDENTITY_SERVER_MEMBERS - {"token", "base_url"}:
        assert getattr(local, name).removeprefix(local.base_url) == getattr(container, name).removeprefix(
            container.base_url
        ), name
    assert container.client_secrets == dict(containers.devstack_keycloak.CLIENT_SECRETS)


def test_mypy_accepts_both_keycloaks_as_identity_servers_and_rejects_a_short_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config
) -> None:
    """The static check: mypy's structural typing, the one that counts for the fixtures' annotations."""
    from mypy import api

    snippet = tmp_path / "identity_servers.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from devstack.keycloak import Keycloak
            from tests.fixtures.containers import KeycloakInContainer
            from tests.fixtures.services import IdentityServer


            def both(local: Keycloak, container: KeycloakInContainer) -> list[IdentityServer]:
                return [local, container]


            class NoJwks:
                base_url = issuer_url = token_url = discovery_url = "http://x"

                async def token(self, client_id: str, secret: str | None = None) -> str:
                    return ""


            def short(server: NoJwks) -> IdentityServer:
                return server  # line 19: the only error
            """
        )
    )
    monkeypatch.chdir(REPO)
    pytest_cache = getattr(pytestconfig, "cache", None)  # absent with -p no:cacheprovider
    cache = pytest_cache.mkdir("mypy-identity-server") if pytest_cache else tmp_path / "cache"
    stdout, stderr, status = api.run(
        ["--strict", "--follow-imports=silent", "--config-file=", f"--cache-dir={cache}", str(snippet)]
    )
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    assert status == 1, stdout + stderr
    assert len(errors) == 1 and f"{snippet.name}:19:" in errors[0] and "IdentityServer" in errors[0], stdout


# ---- The containers run the images of docker-compose.yml ---------------------------------------------------------


def compose_services() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    return loaded


def test_the_containers_run_the_images_compose_pins() -> None:
    in_compose = {name: compose_services()[name]["image"] for name in ("postgres", "redis", "kafka", "keycloak")}
    assert in_compose == {
        "postgres": containers.POSTGRES_IMAGE,
        "redis": containers.REDIS_IMAGE,
        "kafka": containers.KAFKA_IMAGE,
        "keycloak": containers.KEYCLOAK_IMAGE,
    }


def test_the_kafka_container_is_configured_like_the_compose_broker_but_for_its_listeners() -> None:
    env = containers.kafka_container_env(broker.TEST_BROKER_PROPERTIES)
    compose = compose_services()["kafka"]["environment"]
    topology = {
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_INTER_BROKER_LISTENER_NAME",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
    }
    for key in set(compose) - topology:
        assert env.get(key) == str(compose[key]), key
    assert env["KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS"] == broker.TEST_BROKER_PROPERTIES["group.min.session.timeout.ms"]
    assert env["CLUSTER_ID"]  # the image formats its storage only with one
    # The client listener is advertised once its host port is known, by the start script.
    assert "KAFKA_ADVERTISED_LISTENERS" not in env
    script = containers.kafka_start_script("docker-host", 32001)
    assert "export KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://docker-host:32001,BROKER://localhost:9093\n" in script
    assert script.rstrip().endswith("exec /etc/kafka/docker/run")
    listeners = {entry.split("://")[0]: entry.rsplit(":", 1)[1] for entry in env["KAFKA_LISTENERS"].split(",")}
    assert listeners == {"PLAINTEXT": "9092", "BROKER": "9093", "CONTROLLER": "9094"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@localhost:9094"
    assert set(env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].replace(":PLAINTEXT", "").split(",")) == set(listeners)


@pytest.mark.parametrize(
    ("prop", "variable"),
    [
        ("offsets.topic.replication.factor", "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"),
        ("listener.name.broker.sasl_enabled", "KAFKA_LISTENER_NAME_BROKER_SASL__ENABLED"),
        ("some-dashed.name", "KAFKA_SOME___DASHED_NAME"),
    ],
)
def test_broker_properties_become_the_apache_kafka_images_variables(prop: str, variable: str) -> None:
    assert containers.kafka_env_name(prop) == variable
