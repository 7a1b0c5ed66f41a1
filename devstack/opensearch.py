"""OpenSearch, one single node, from the Maven Central modules `infra/opensearch/pom.xml` resolves (no tarball, no
Docker): `devstack/OpenSearchNode.java` starts a `Node` with netty4 (HTTP), analysis-common and painless as classpath
plugins, security off, single-node discovery. Used by the log-search test and, opt-in, by `make run`
(`PAYMENTS_LOGS__OPENSEARCH_URL`). Each instance keeps its data and logs under its own `data_dir`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devstack.cache import REPO_ROOT, install_jars, java_binary, java_home, pom_property
from devstack.process import RunsOneProcess, ServerProcess, free_port, port_open

POM = REPO_ROOT / "infra" / "opensearch" / "pom.xml"
LAUNCHER = REPO_ROOT / "devstack" / "OpenSearchNode.java"
HEAP = "-Xms256m -Xmx512m"


def opensearch_version() -> str:
    return pom_property(POM, "opensearch.version")


def install() -> Path:
    """The jars of the pinned version, resolved once into the cache; returns the `libs/` directory."""
    return install_jars("opensearch", opensearch_version(), POM)


@dataclass
class OpenSearchNode(RunsOneProcess):
    """One node on 127.0.0.1: HTTP on `port` (a free one by default), data and its log in `data_dir`."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    log_file: Path | None = None
    heap: str = HEAP
    tie_to_parent: bool = True

    host = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        libs = install()
        settings = {
            "path.home": str(self.data_dir),
            "path.data": str(self.data_dir / "data"),
            "path.logs": str(self.data_dir / "logs"),
            "network.host": self.host,
            "http.port": str(self.port),
            "transport.port": "0",  # one node: its transport port is only its own
        }
        return [
            java_binary(java_home(prefer_newest=False)),
            *self.heap.split(),
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            "-Dlog4j2.disable.jmx=true",
            "-cp",
            f"{libs}/*",
            str(LAUNCHER),  # source-file mode: the JDK compiles the one-file launcher as it starts
            *(f"-E{key}={value}" for key, value in settings.items()),
        ]

    async def start(self, *, within: float = 120.0) -> float:
        """Start and wait until `/_cluster/health` is yellow or green; returns the seconds that took."""
        if self.running:
            return 0.0
        self.data_dir.mkdir(parents=True, exist_ok=True)
        process = ServerProcess(
            "opensearch",
            self.command(),
            log_file=self.log_file or self.data_dir / "opensearch.log",
            tie_to_parent=self.tie_to_parent,
        )
        return await self._launch(process, self._healthy, within=within)

    async def _healthy(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        async with httpx.AsyncClient(timeout=2.0) as client:
            response = await client.get(f"{self.url}/_cluster/health")
        return response.status_code == 200 and response.json().get("status") in {"yellow", "green"}
