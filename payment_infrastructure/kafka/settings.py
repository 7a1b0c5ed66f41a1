"""Kafka client settings shared by every process (owned by the Kafka adapter)."""

from __future__ import annotations

from typing import Literal, Self

from aiokafka import codec
from pydantic import BaseModel, Field, model_validator

CompressionType = Literal["none", "gzip", "lz4", "zstd", "snappy"]

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

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.enable_idempotence and self.acks != "all":
            raise ValueError("kafka.enable_idempotence requires kafka.acks=all")
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"kafka.min_insync_replicas ({self.min_insync_replicas}) must not exceed kafka.replication_factor "
                f"({self.replication_factor}): no write could ever be acknowledged"
            )
        if self.delivery_timeout_ms < self.request_timeout_ms:
            raise ValueError("kafka.delivery_timeout_ms must be >= kafka.request_timeout_ms")
        if not _CODEC_AVAILABLE[self.compression_type]():
            raise ValueError(
                f"kafka.compression_type={self.compression_type} needs the 'cramjam' package; install it or use gzip"
            )
        return self

    @property
    def delivery_timeout_seconds(self) -> float:
        return self.delivery_timeout_ms / 1000
