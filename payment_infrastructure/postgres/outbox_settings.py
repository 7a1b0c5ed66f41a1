"""Outbox dispatcher and partition maintenance settings."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, Field, model_validator


class OutboxSettings(BaseModel):
    # Dispatcher
    batch_size: int = Field(default=500, ge=1, le=10_000)
    # A lease must outlive a publish (kafka.delivery_timeout_ms) or a slow publisher's rows are taken over
    # while it still sends them; `check_lease_outlives_delivery` enforces it at start-up.
    lease_seconds: float = Field(default=30.0, gt=0)
    workers: int = Field(default=2, ge=1, le=16)
    idle_min_wait_seconds: float = Field(default=0.05, gt=0)
    # Longest sleep of an idle dispatcher without a NOTIFY; also bounds how late an expired lease is noticed.
    idle_max_wait_seconds: float = Field(default=1.0, gt=0)
    failure_min_backoff_seconds: float = Field(default=0.1, gt=0)
    failure_max_backoff_seconds: float = Field(default=5.0, gt=0)
    # After a commit's wake-up, how long the relay waits for more commits before its round (at most idle_min).
    linger_seconds: float = Field(default=0.02, ge=0)
    notify_channel: str = "outbox_event_new"
    # Partition maintenance (30-minute windows)
    windows_ahead: int = Field(default=4, ge=1, le=96)
    retention_hours: float = Field(default=24.0, gt=0)
    maintenance_interval_seconds: float = Field(default=300.0, gt=0)
    # Longest wait for another maintenance run (and for locks no read or write of rows conflicts with). A lock a
    # create may wait for is never waited for, and held at most half the create path's db.lock_timeout_ms.
    maintenance_lock_timeout_ms: int = Field(default=1_000, gt=0)
    # Metrics
    metrics_refresh_seconds: float = Field(default=5.0, gt=0)
    dispatcher_metrics_host: str = "127.0.0.1"
    dispatcher_metrics_port: int | None = Field(default=9002, ge=0, le=65535)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.idle_max_wait_seconds < self.idle_min_wait_seconds:
            raise ValueError("outbox.idle_max_wait_seconds must be >= outbox.idle_min_wait_seconds")
        if self.failure_max_backoff_seconds < self.failure_min_backoff_seconds:
            raise ValueError("outbox.failure_max_backoff_seconds must be >= outbox.failure_min_backoff_seconds")
        return self


def check_lease_outlives_delivery(outbox: OutboxSettings, delivery_timeout_seconds: float) -> None:
    """Raise when a lease could expire while its holder is still waiting for the broker's acknowledgement."""
    if outbox.lease_seconds <= delivery_timeout_seconds:
        raise ValueError(
            f"outbox.lease_seconds ({outbox.lease_seconds}) must exceed the Kafka delivery timeout "
            f"({delivery_timeout_seconds}s), or a slow publish would be taken over and sent twice"
        )
