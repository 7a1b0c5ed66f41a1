"""Apache Kafka (KRaft, one process as broker and controller) from the jars `infra/kafka/pom.xml` resolves.

`KafkaBroker(data_dir, port=...)` formats its storage once and keeps it: started again on the same data
directory, it still holds its topics, records and committed offsets.
"""

from __future__ import annotations

import base64
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaClient

from devstack.cache import REPO_ROOT, install_jars, java_binary, java_home, pom_property
from devstack.process import RunsOneProcess, ServerProcess, free_port, port_open

POM = REPO_ROOT / "infra" / "kafka" / "pom.xml"
HEAP = "-Xmx512m"


def kafka_version() -> str:
    return pom_property(POM, "kafka.version")


def install() -> Path:
    """The directory of jars for the pinned version, resolved once into the cache; returns its `libs/`."""
    return install_jars("kafka", kafka_version(), POM)


@dataclass
class KafkaBroker(RunsOneProcess):
    """One broker+controller on 127.0.0.1. Ports default to free ones; `data_dir` holds logs and metadata."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    log_file: Path | None = None
    heap: str = HEAP
    tie_to_parent: bool = True
    extra_properties: dict[str, str] = field(default_factory=dict)
    # More `StorageTool format` arguments, e.g. `--add-scram SCRAM-SHA-256=[name=u,password=p]` (KRaft keeps SCRAM
    # users in its metadata, created at format time).
    format_args: tuple[str, ...] = ()

    host = "127.0.0.1"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def properties(self) -> dict[str, str]:
        """Single-node settings: replication 1 everywhere, no auto-created topics (the services create theirs),
        no delay before the first rebalance, few offset partitions (a small machine)."""
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "min.insync.replicas": "1",
            "group.initial.rebalance.delay.ms": "0",
            **self.extra_properties,
        }

    def _write_config(self) -> tuple[Path, Path]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        server = self.data_dir / "server.properties"
        server.write_text("".join(f"{key}={value}\n" for key, value in self.properties().items()))
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(
            "status = warn\n"
            "appender.out.type = Console\n"
            "appender.out.name = OUT\n"
            "appender.out.layout.type = PatternLayout\n"
            "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.out.ref = OUT\n"
            "logger.kafka.name = kafka\n"
            "logger.kafka.level = WARN\n"
            "logger.state.name = state.change.logger\n"
            "logger.state.level = WARN\n"
            "logger.controller.name = org.apache.kafka.controller\n"
            "logger.controller.level = WARN\n"
            "logger.coordinator.name = org.apache.kafka.coordinator\n"
            "logger.coordinator.level = WARN\n"
            "logger.startup.name = kafka.server.KafkaRaftServer\n"
            "logger.startup.level = INFO\n"
        )
        return server, log4j

    def _java(self, main: str, *args: str, log4j: Path) -> list[str]:
        libs = install()
        return [
            java_binary(java_home(prefer_newest=False)),
            self.heap,
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def format_once(self) -> None:
        """`StorageTool format` on a new data directory; an existing one keeps its cluster id and data."""
        server, log4j = self._write_config()
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        cluster_id = _cluster_id()
        command = self._java(
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            f"--config={server}",
            *self.format_args,
            log4j=log4j,
        )
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"kafka storage format failed: {result.stdout}\n{result.stderr}")

    async def start(self, *, within: float = 60.0) -> float:
        """Start and wait until the broker answers metadata requests; returns the seconds that took."""
        if self.running:
            return 0.0
        self.format_once()
        server, log4j = self._write_config()
        process = ServerProcess(
            "kafka",
            self._java("kafka.Kafka", str(server), log4j=log4j),
            log_file=self.log_file or self.data_dir / "kafka.log",
            tie_to_parent=self.tie_to_parent,
        )
        return await self._launch(process, self._answers, within=within)

    async def _answers(self) -> bool:
        if not port_open(self.host, self.port):  # aiokafka logs every refused connection: knock first
            return False
        client = AIOKafkaClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=2_000)
        try:
            await client.bootstrap()
            return bool(client.cluster.brokers())
        finally:
            await client.close()


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (what `random-uuid` prints)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
