"""payment-service settings: env prefix PAYMENTS_, nested groups with `__` (PAYMENTS_DB__URL=...)."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from payment_infrastructure.auth.settings import AuthSettings
from payment_infrastructure.kafka.settings import KafkaSettings
from payment_infrastructure.observability.settings import LoggingSettings
from payment_infrastructure.postgres.outbox_settings import OutboxSettings
from payment_infrastructure.postgres.settings import DatabaseSettings
from payment_infrastructure.redis.settings import RedisSettings


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    management_host: str = "127.0.0.1"
    management_port: int = Field(default=9000, ge=0, le=65535)
    workers: int = Field(
        default=1, ge=1, le=64, description="API processes sharing the port (SO_REUSEPORT); 1 per pod on Kubernetes"
    )
    idempotency_ttl_hours: float = Field(default=24, gt=0)
    idempotency_purge_interval_seconds: float = Field(default=300, gt=0)
    idempotency_purge_batch: int = Field(default=5_000, ge=1)
    partition_maintenance_interval_seconds: float = Field(default=300, gt=0)
    retry_after_seconds: int = Field(default=1, ge=1)
    keep_alive_seconds: int = Field(
        default=75,
        gt=0,
        description="how long an idle client connection stays open; above the upstream keep-alive of the proxy in "
        "front (ingress-nginx: 60 s), so the proxy, never the API, closes an idle connection and no request is sent "
        "on one the API is closing",
    )
    create_writers: int = Field(
        default=2, ge=1, le=64, description="concurrent create transactions per process (at most the pool size)"
    )
    create_batch_max_payments: int = Field(
        default=32, ge=1, le=1_000, description="most payments one group-commit transaction writes (1: no batching)"
    )
    create_queue_max: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="most creates one process holds at once (more are refused with 503 overloaded); "
        "unset: 2 x writers x batch size",
    )


class AdmissionSettings(BaseModel):
    """Flow control from the pipeline's state (services/payment_service/api/pipeline_budget.py): creates are refused
    with 503 `pipeline-behind` while more orders are queued in front of their first PSP call than the pipeline, at
    the rate it takes them, starts calling within `settle_target_seconds` (Little's law, re-sized on every reading),
    or when `max_in_flight` orders await their first answer. The target aims at the 95th-percentile wait before the
    call: create->final adds the PSP's own latency and applying its answer, so keep it below the bound you promise by
    that much (0.45 s leaves 0.55 s of a 1 s bound with a fast PSP: measured at capacity, 0.6 s gave p95 1.27 s)."""

    settle_target_seconds: float = Field(default=0.45, gt=0)
    min_in_flight: int = Field(default=50, ge=1, description="admitted whatever the waits (stuck orders never block)")
    max_in_flight: int = Field(default=2_000, ge=1)
    in_flight_budget: int | None = Field(default=None, ge=1, description="a fixed budget instead of the adaptive one")
    refresh_seconds: float = Field(default=0.2, gt=0, description="how often the backlog is read while creates come")
    stale_after_seconds: float = Field(default=3.0, gt=0, description="an older reading refuses nothing")
    enabled: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.refresh_seconds >= self.stale_after_seconds:
            raise ValueError("admission.refresh_seconds must be below admission.stale_after_seconds")
        if self.min_in_flight > self.max_in_flight:
            raise ValueError("admission.min_in_flight must be at most admission.max_in_flight")
        return self


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAYMENTS_", env_nested_delimiter="__", env_ignore_empty=True, extra="ignore"
    )

    api: ApiSettings = ApiSettings()
    admission: AdmissionSettings = AdmissionSettings()
    db: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    kafka: KafkaSettings = KafkaSettings()
    outbox: OutboxSettings = OutboxSettings()
    auth: AuthSettings = AuthSettings()
    logging: LoggingSettings = LoggingSettings()
