"""``python -m services.dev_issuer``: flags, environment overrides and defaults, and a real start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from services.dev_issuer.__main__ import parse_args
from tests.fixtures.issuer import REPO_ROOT, bound_socket

START_DEADLINE_SECONDS = 15.0


def test_defaults_serve_the_repository_realm_on_8082() -> None:
    args = parse_args([], env={})

    assert (args.host, args.port, args.public_url) == ("127.0.0.1", 8082, None)
    assert args.realm_file == Path("infra/keycloak/realm-ecommerce-platform.json")


def test_environment_overrides_defaults_and_flags_override_environment() -> None:
    env = {
        "PAYMENTS_DEV_ISSUER__HOST": "0.0.0.0",
        "PAYMENTS_DEV_ISSUER__PORT": "9999",
        "PAYMENTS_DEV_ISSUER__REALM_FILE": "/tmp/realm.json",
        "PAYMENTS_DEV_ISSUER__PUBLIC_URL": "http://keycloak:8080",
    }

    from_env = parse_args([], env=env)
    from_flags = parse_args(["--port", "8083", "--host", "127.0.0.2"], env=env)

    assert (from_env.host, from_env.port, from_env.public_url) == ("0.0.0.0", 9999, "http://keycloak:8080")
    assert from_env.realm_file == Path("/tmp/realm.json")
    assert (from_flags.host, from_flags.port) == ("127.0.0.2", 8083)


def free_port() -> int:
    with bound_socket() as sock:
        port: int = sock.getsockname()[1]
        return port


def wait_for_discovery(url: str, process: subprocess.Popen[bytes]) -> httpx.Response:
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    with httpx.Client(timeout=1.0) as client:
        while True:
            assert process.poll() is None, "dev issuer exited during start-up"
            try:
                return client.get(url).raise_for_status()
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"dev issuer not answering {url}"
                time.sleep(0.05)


def test_module_entry_point_serves_tokens_with_the_public_url_as_issuer() -> None:
    port = free_port()
    env = {**os.environ, "PAYMENTS_DEV_ISSUER__PUBLIC_URL": f"http://localhost:{port}"}
    command = [sys.executable, "-m", "services.dev_issuer", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        realm_url = f"http://127.0.0.1:{port}/realms/ecommerce-platform"
        document = wait_for_discovery(f"{realm_url}/.well-known/openid-configuration", process).json()
        token = httpx.post(
            f"{realm_url}/protocol/openid-connect/token",
            data={"grant_type": "client_credentials"},
            auth=("order-service", "order-service-secret"),
        )
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)

    assert document["issuer"] == f"http://localhost:{port}/realms/ecommerce-platform"
    assert token.status_code == 200
    assert b"DEV ONLY" in stderr
