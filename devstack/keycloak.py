"""Keycloak from the `org.keycloak:keycloak-quarkus-dist` distribution on Maven Central, built once, then
started optimized with the realm import.

The build (`kc.sh build`) is shared by every instance: an H2 database (`dev-file`) and health endpoints. Each
instance gets its own database file, ports and temporary directory, so tests and `make run` can run side by side.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devstack.cache import REPO_ROOT, cache_root, install_lock, java_home, maven
from devstack.process import RunsOneProcess, ServerProcess, free_port

VERSION = "26.5.6"
REALM = "ecommerce-platform"
REALM_FILE = REPO_ROOT / "infra" / "keycloak" / "realm-ecommerce-platform.json"
BUILD_OPTIONS = ("--db=dev-file", "--health-enabled=true")
HEAP = "-Xms64m -Xmx256m -XX:MaxMetaspaceSize=192m"

# The dev-only secrets of infra/keycloak/realm-ecommerce-platform.json (published on purpose; never used elsewhere).
CLIENT_SECRETS = {
    "order-service": "order-service-secret",
    "payment-reader": "payment-reader-secret",
    "no-role-client": "no-role-client-secret",
    "finance-reader": "finance-reader-secret",
    "seller-1-portal": "seller-1-portal-secret",
}


class RealmEndpoints:
    """Keycloak's OpenID Connect paths under a realm's issuer URL: one definition for every Keycloak (or stand-in)
    the project talks to. Subclasses say where the issuer is."""

    @property
    def issuer_url(self) -> str:
        raise NotImplementedError

    @property
    def token_url(self) -> str:
        return f"{self.issuer_url}/protocol/openid-connect/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer_url}/protocol/openid-connect/certs"

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer_url}/.well-known/openid-configuration"


async def client_token(token_url: str, client_id: str, secret: str) -> str:
    """An access token from a token endpoint: the client_credentials grant, the secret in the form."""
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.post(token_url, data=form)
    response.raise_for_status()
    return str(response.json()["access_token"])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    home = java_home(prefer_newest=True)
    if home:
        env["JAVA_HOME"] = home
    return env


def install() -> Path:
    """Download, unpack and build the pinned version once into the cache; returns its home directory."""
    home = cache_root() / f"keycloak-{VERSION}"
    marker = home / ".payments-built"
    wanted = " ".join(BUILD_OPTIONS)
    if marker.exists() and marker.read_text() == wanted:
        return home
    with install_lock("keycloak"):
        if marker.exists() and marker.read_text() == wanted:
            return home
        downloads = cache_root() / "downloads"
        archive = downloads / f"keycloak-quarkus-dist-{VERSION}.tar.gz"
        if not archive.exists():
            maven(
                "dependency:copy",
                f"-Dartifact=org.keycloak:keycloak-quarkus-dist:{VERSION}:tar.gz",
                f"-DoutputDirectory={downloads}",
            )
        shutil.rmtree(home, ignore_errors=True)
        with tarfile.open(archive) as tar:
            tar.extractall(cache_root(), filter="tar")
        result = subprocess.run(
            [str(home / "bin" / "kc.sh"), "build", *BUILD_OPTIONS],
            env=_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kc.sh build failed:\n{result.stdout}\n{result.stderr}")
        marker.write_text(wanted)
    return home


@dataclass
class Keycloak(RealmEndpoints, RunsOneProcess):
    """One Keycloak on 127.0.0.1 with the realm imported; its H2 database and temp files live in `data_dir`."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    log_file: Path | None = None
    heap: str = HEAP
    tie_to_parent: bool = True
    realm_file: Path = REALM_FILE

    host = "127.0.0.1"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def issuer_url(self) -> str:
        return f"{self.base_url}/realms/{REALM}"

    def command(self) -> list[str]:
        home = install()
        return [
            str(home / "bin" / "kc.sh"),
            "start",
            "--optimized",
            "--cache=local",
            "--http-enabled=true",
            f"--http-host={self.host}",
            f"--http-port={self.port}",
            f"--http-management-port={self.management_port}",
            "--hostname-strict=false",
            f"--db-url=jdbc:h2:file:{self.data_dir / 'h2' / 'keycloakdb'};NON_KEYWORDS=VALUE",
        ]

    @property
    def import_file(self) -> Path:
        return self.data_dir / "import" / self.realm_file.name

    def _stage_realm(self) -> None:
        """The realm goes into this instance's own import directory, imported at start when the realm does not
        exist yet (what `--import-realm` does, but `--import-realm` reads the shared `<home>/data/import`, which
        Keycloaks started at the same time from other checkouts would overwrite with their realm)."""
        self.import_file.parent.mkdir(parents=True, exist_ok=True)
        self.import_file.write_bytes(self.realm_file.read_bytes())

    async def start(self, *, within: float = 120.0) -> float:
        """Start and wait until the realm's discovery document is served; returns the seconds that took."""
        if self.running:
            return 0.0
        self._stage_realm()
        tmp = self.data_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = _env() | {
            "JAVA_OPTS_KC_HEAP": self.heap,
            "JAVA_OPTS_APPEND": f"-Djava.io.tmpdir={tmp} " + " ".join(self._import_options()),
        }
        process = ServerProcess(
            "keycloak",
            self.command(),
            log_file=self.log_file or self.data_dir / "keycloak.log",
            env=env,
            tie_to_parent=self.tie_to_parent,
        )
        return await self._launch(process, self._serves_realm, within=within)

    def _import_options(self) -> list[str]:
        return [
            "-Dkeycloak.migration.action=import",
            "-Dkeycloak.migration.provider=singleFile",
            f"-Dkeycloak.migration.file={self.import_file}",
            "-Dkeycloak.migration.strategy=IGNORE_EXISTING",
        ]

    async def _serves_realm(self) -> bool:
        async with httpx.AsyncClient(timeout=2.0) as client:
            return (await client.get(self.discovery_url)).status_code == 200

    async def token(self, client_id: str, secret: str | None = None) -> str:
        """An access token for a realm client (its dev secret unless `secret` is given)."""
        return await client_token(
            self.token_url, client_id, secret if secret is not None else CLIENT_SECRETS[client_id]
        )
