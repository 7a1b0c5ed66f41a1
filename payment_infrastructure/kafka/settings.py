"""Kafka client settings shared by every process (owned by the Kafka adapter)."""

from __future__ import annotations

from typing import Literal, Self

from aiokafka import codec
from pydantic import BaseModel, Field, SecretStr, model_validator

CompressionType = Literal["none", "gzip", "lz4", "zstd", "snappy"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]

STOP_FLUSH_SECONDS = 5.0
"""How long a producer's stop waits for its unacknowledged records before it drops them (kafka/lifecycle.py)."""

_CODEC_AVAILABLE = {
    "none": lambda: True,
    "gzip": codec.has_gzip,
    "lz4": codec.has_lz4,
    "zstd": codec.has_zstd,
    "snappy": codec.has_snappy,
}


class KafkaSettings(BaseModel):
    """Producer defaults follow the original's "batch" producer (acks=all, large batches, short linger).

    Idempotence is on (it needs acks=all): a retried produce request never writes a record twice, and one
    partition's records keep their order across retries.
    lz4/zstd/snappy need the `cramjam` package (aiokafka's optional codec backend); gzip needs nothing.
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "payments"
    enable_idempotence: bool = True
    acks: Literal["0", "1", "all"] = "all"
    linger_ms: int = Field(default=5, ge=0)
    max_batch_size: int = Field(default=262_144, ge=1_024)
    max_request_size: int = Field(default=1_048_576, ge=1_024)
    compression_type: CompressionType = "zstd"
    request_timeout_ms: int = Field(default=15_000, ge=100)
    # How long a publish may wait for every acknowledgement; the outbox lease must outlive it.
    delivery_timeout_ms: int = Field(default=20_000, ge=100)
    retry_backoff_ms: int = Field(default=100, ge=0)
    metadata_max_age_ms: int = Field(default=300_000, ge=1_000)
    # Topic layout (created by `admin.ensure_topics`): the original ran 48 partitions on its hot topics.
    partitions: int = Field(default=8, ge=1)
    status_check_partitions: int = Field(default=1, ge=1)
    # Durability of an acknowledged record (acks=all waits for min_insync_replicas copies). Production: 3 and 2,
    # so a record survives the loss of any one broker and writes go on while one is down. 1 and 1 (a single
    # development broker) means an acknowledged record is lost with that broker's disk.
    replication_factor: int = Field(default=1, ge=1)
    min_insync_replicas: int = Field(default=1, ge=1)
    # A secured cluster (payment_infrastructure/kafka/security.py): TLS to the brokers (SSL, SASL_SSL) verified
    # against ssl_cafile (the system's CAs when unset), a client certificate for mutual TLS, and SASL: PLAIN or
    # SCRAM with a user and password, or OAUTHBEARER with tokens of an OAuth client (client credentials).
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True
    oauth_token_url: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: SecretStr | None = None
    oauth_scope: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.enable_idempotence and self.acks != "all":
            raise ValueError("kafka.enable_idempotence requires kafka.acks=all")
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"kafka.min_insync_replicas ({self.min_insync_replicas}) must not exceed kafka.replication_factor "
                f"({self.replication_factor}): no write could ever be acknowledged"
            )
        self._secured_consistently()
        if self.delivery_timeout_ms < self.request_timeout_ms:
            raise ValueError("kafka.delivery_timeout_ms must be >= kafka.request_timeout_ms")
        if not _CODEC_AVAILABLE[self.compression_type]():
            raise ValueError(
                f"kafka.compression_type={self.compression_type} needs the 'cramjam' package; install it or use gzip"
            )
        return self

    def _secured_consistently(self) -> None:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl != (self.sasl_mechanism is not None):
            raise ValueError(
                f"kafka.security_protocol {self.security_protocol} "
                + ("needs kafka.sasl_mechanism" if sasl else "takes no kafka.sasl_mechanism (use SASL_SSL)")
            )
        if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(f"kafka.sasl_mechanism {self.sasl_mechanism} needs kafka.sasl_username and sasl_password")
        if self.sasl_mechanism == "OAUTHBEARER" and not (
            self.oauth_token_url and self.oauth_client_id and self.oauth_client_secret
        ):
            raise ValueError(
                "kafka.sasl_mechanism OAUTHBEARER needs kafka.oauth_token_url, oauth_client_id and oauth_client_secret"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("kafka.ssl_certfile and kafka.ssl_keyfile go together (a client certificate and its key)")
        if self.security_protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and (self.ssl_cafile or self.ssl_certfile):
            raise ValueError(
                f"kafka.ssl_* settings need security_protocol SSL or SASL_SSL, not {self.security_protocol}"
            )

    @property
    def delivery_timeout_seconds(self) -> float:
        return self.delivery_timeout_ms / 1000
