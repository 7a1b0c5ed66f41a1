"""Every Kafka client of the system against a secured broker: TLS verified against the cluster's CA and SASL/SCRAM
(a real Apache Kafka with a SASL_SSL listener, its certificate made here). Producing, consuming through the
partition-ordered consumer, creating topics and reading the groups' lag all work with the settings alone; a wrong
password, an unknown CA or a plain-text client are refused."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devstack.kafka import KafkaBroker
from devstack.process import free_port
from payment_infrastructure.kafka.admin import create_topics
from payment_infrastructure.kafka.consumer import ConsumedRecord
from payment_infrastructure.kafka.group_lag import BrokerGroupLag
from payment_infrastructure.kafka.producer import build_producer
from payment_infrastructure.kafka.settings import KafkaSettings
from tests.fixtures.broker import TEST_BROKER_PROPERTIES, unique_topic
from tests.fixtures.ports import wait_until
from tests.integration.kafka.consumer_support import fast_settings, running

pytestmark = pytest.mark.asyncio(loop_scope="module")
USER, PASSWORD = "payments", "scram-secret-for-tests"


@dataclass(frozen=True)
class SecuredBroker:
    bootstrap: str
    ca_file: Path

    def settings(self, **overrides: object) -> KafkaSettings:
        values: dict[str, object] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": USER,
            "sasl_password": PASSWORD,
            "ssl_cafile": str(self.ca_file),
            "linger_ms": 1,
            "request_timeout_ms": 5_000,
            "delivery_timeout_ms": 5_000,
        }
        return KafkaSettings.model_validate(values | overrides)


def certificates(directory: Path) -> tuple[Path, Path]:
    """A CA, and the broker's key and certificate for 127.0.0.1 signed by it: (CA file, broker PEM keystore)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "payments test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    keystore = directory / "broker.pem"
    keystore.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(serialization.Encoding.PEM)
        + ca.public_bytes(serialization.Encoding.PEM)
    )
    return ca_file, keystore


@pytest.fixture(scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SecuredBroker]:
    directory = tmp_path_factory.mktemp("secured-kafka")
    ca_file, keystore = certificates(directory)
    secured_port = free_port()
    broker = KafkaBroker(
        directory / "data",
        format_args=(f"--add-scram=SCRAM-SHA-256=[name={USER},password={PASSWORD}]",),
        extra_properties={
            **TEST_BROKER_PROPERTIES,
            # The plain listener stays for the broker itself (readiness, inter-broker); clients use the secured one.
            "listeners": "PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{secured},CONTROLLER://127.0.0.1:{ctl}",
            "advertised.listeners": "PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{secured}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-256",
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
            "listener.name.sasl_ssl.ssl.keystore.location": str(keystore),
        },
    )
    props = broker.extra_properties
    for name in ("listeners", "advertised.listeners"):
        props[name] = props[name].format(port=broker.port, secured=secured_port, ctl=broker.controller_port)
    await broker.start()
    try:
        yield SecuredBroker(f"127.0.0.1:{secured_port}", ca_file)
    finally:
        await broker.stop()


async def test_every_client_works_over_sasl_ssl_with_the_settings_alone(secured: SecuredBroker) -> None:
    settings = secured.settings()
    topic = unique_topic("secured")
    assert await create_topics(settings, {topic: 2}) == [topic]
    producer = build_producer(settings)
    await producer.start()
    try:
        for i in range(4):
            await producer.send_and_wait(topic, f"v{i}".encode(), key=f"k{i}".encode(), partition=i % 2)
    finally:
        await producer.stop()
    seen: list[bytes] = []

    async def handle(record: ConsumedRecord) -> None:
        seen.append(record.value)

    group = unique_topic("secured-group")
    async with running(settings, fast_settings(), group_id=group, topics=[topic], handler=handle):
        await wait_until(lambda: _true(len(seen) == 4), timeout=30, what="the records consumed over SASL_SSL")
    assert sorted(seen) == [b"v0", b"v1", b"v2", b"v3"]
    reader = BrokerGroupLag(settings, client_id="secured-lag")
    await reader.start()
    try:
        lags = await reader.read({group: [topic]})
    finally:
        await reader.close()
    assert [p.lag for p in lags] == [0, 0]  # the consumer committed all of it


@pytest.mark.parametrize(
    "overrides",
    [
        {"sasl_password": "wrong"},
        {"ssl_cafile": None},  # the system's CAs do not know the cluster's
        {"security_protocol": "PLAINTEXT", "sasl_mechanism": None, "ssl_cafile": None},
    ],
    ids=["wrong password", "unknown CA", "plain text"],
)
async def test_a_client_without_the_right_credentials_or_trust_is_refused(
    secured: SecuredBroker, overrides: dict[str, object]
) -> None:
    producer = build_producer(secured.settings(**overrides))
    with pytest.raises((KafkaError, KafkaConnectionError, OSError, asyncio.TimeoutError)):
        await asyncio.wait_for(producer.start(), 20)
    await producer.stop()


async def _true(value: bool) -> bool:
    return value
