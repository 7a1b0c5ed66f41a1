"""payment-consumers settings: env prefix PAYMENTS_, nested groups with `__` (PAYMENTS_PSP__BASE_URL=...)."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from payment_infrastructure.kafka.consumer_settings import ConsumerSettings
from payment_infrastructure.kafka.settings import STOP_FLUSH_SECONDS, KafkaSettings
from payment_infrastructure.ledger_settings import LedgerSettings
from payment_infrastructure.observability.settings import LoggingSettings
from payment_infrastructure.postgres.settings import DatabaseSettings
from payment_infrastructure.psp.settings import PspSettings
from payment_infrastructure.redis.retry_settings import RetrySettings
from payment_infrastructure.redis.settings import RedisSettings


class Worker(StrEnum):
    """The parts one payment-consumers process can run; by default all of them."""

    ENQUEUER = "enqueuer"
    PSP_CALL_EXECUTOR = "psp-call-executor"
    RESULT_APPLIER = "result-applier"
    STATUS_CHECK_EXECUTOR = "status-check-executor"
    RETRY_DISPATCHER = "retry-dispatcher"
    STATUS_CHECK_SCHEDULER = "status-check-scheduler"
    REFUND_EXECUTOR = "refund-executor"


class StatusCheckSettings(BaseModel):
    # Kill Bill-like schedule: soon, then further apart; after the last, the order needs reconciliation.
    delays_seconds: tuple[float, ...] = (5, 30, 120, 600, 3_600)
    batch_size: int = Field(default=200, ge=1)
    lease_seconds: float = Field(default=30, gt=0)
    poll_interval_seconds: float = Field(default=0.5, gt=0)

    @field_validator("delays_seconds")
    @classmethod
    def _non_empty_positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(d <= 0 for d in value):
            raise ValueError("status_checks.delays_seconds needs at least one positive delay")
        return value


class SweeperSettings(BaseModel):
    """The stale-order sweeper, run by every payment-consumers process (claims never overlap)."""

    enabled: bool = True
    # Well above every legitimate silence: a retry waits at most retry.max_delay_ms, then its visibility timeout.
    # Scheduled status checks, queued retries, live PSP-call claims and unsent outbox rows are checked, not timed.
    stale_after_seconds: float = Field(default=600, gt=0)
    interval_seconds: float = Field(default=30, gt=0)
    batch_size: int = Field(default=100, ge=1, le=10_000)


class RequerySettings(BaseModel):
    """The periodic re-query of orders parked in NEEDS_RECONCILIATION (every payment-consumers process; claims
    never overlap). Long by design: the whole status-check schedule has already passed for these orders."""

    enabled: bool = True
    every_seconds: float = Field(default=3_600, gt=0)
    poll_interval_seconds: float = Field(default=60, gt=0)
    batch_size: int = Field(default=100, ge=1, le=10_000)


class ProcessSettings(BaseModel):
    management_host: str = "127.0.0.1"
    management_port: int = Field(default=9001, ge=0, le=65535)
    workers: tuple[Worker, ...] = tuple(Worker)
    psp_claim_lease_seconds: float = Field(default=30, gt=0)
    # The claim statement's bounds: a row locked elsewhere fails it after the lock timeout (and its batch's other
    # claims are made one by one), instead of holding a claim slot, and with it every PSP call, for as long.
    psp_claim_statement_timeout_ms: int = Field(default=2_000, gt=0)
    psp_claim_lock_timeout_ms: int = Field(default=500, gt=0)
    inbox_retention_days: float = Field(default=7, gt=0)
    # Each step of closing the clients after the workers stopped (the coalesced batches' drain, the producers' stop
    # after their bounded flush, Redis and the connection pool) gets this long; past it, it is cut off.
    close_step_timeout_seconds: float = Field(default=5, gt=0)
    # The longest a graceful stop may take before the process exits anyway (status 75): above the sum of the stop's
    # own bounds (ConsumersSettings.stop_bound_seconds), below the chart's terminationGracePeriodSeconds (60).
    shutdown_timeout_seconds: float = Field(default=45, gt=0)


class LagExporterOptions(BaseModel):
    """The broker-side lag exporter (services/payment_consumers/lag_exporter.py): one per Kafka cluster. It is a
    process of the payment-consumers deployable (same image, same settings); it reads only `kafka` and this."""

    host: str = "127.0.0.1"
    port: int = Field(default=9003, ge=0, le=65535)
    interval_seconds: float = Field(default=10, gt=0, description="how often the broker is asked")
    # Ready while the last good reading is younger than this (a scrape then shows what the broker said recently).
    stale_after_seconds: float = Field(default=60, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.stale_after_seconds <= self.interval_seconds:
            raise ValueError("lag_exporter.stale_after_seconds must exceed lag_exporter.interval_seconds")
        return self


class ConsumersDatabaseSettings(DatabaseSettings):
    """The consumers' own defaults, as a class: an instance default would be dropped as soon as any `DB__` variable
    is set (pydantic-settings builds the nested model from the environment alone).

    A record that finds every connection busy waits its turn (a batch of many orders shares the pool) rather than
    backing off; a database that is down still fails at once, on connect, and is waited out by the consumer runtime.
    """

    statement_timeout_ms: int = Field(default=2_000, gt=0)
    pool_timeout_seconds: float = Field(default=30, gt=0)


class ConsumersKafkaSettings(KafkaSettings):
    client_id: str = "payment-consumers"


class ConsumersSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAYMENTS_", env_nested_delimiter="__", env_ignore_empty=True, extra="ignore"
    )

    process: ProcessSettings = ProcessSettings()
    db: ConsumersDatabaseSettings = ConsumersDatabaseSettings()
    redis: RedisSettings = RedisSettings()
    kafka: ConsumersKafkaSettings = ConsumersKafkaSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    psp: PspSettings = PspSettings()
    retry: RetrySettings = RetrySettings()
    status_checks: StatusCheckSettings = StatusCheckSettings()
    sweeper: SweeperSettings = SweeperSettings()
    requery: RequerySettings = RequerySettings()
    ledger: LedgerSettings = LedgerSettings()
    lag_exporter: LagExporterOptions = LagExporterOptions()
    logging: LoggingSettings = LoggingSettings()

    @property
    def stop_bound_seconds(self) -> float:
        """The longest a graceful stop takes by its own bounds, in the order it runs: the consumers' drain, final
        commit and leave (all consumers at once), then the clients' close in three stages: the coalesced batches and
        the PSP calls' drain, the producers (their flush, then the stop), Redis and the pool."""
        step = self.process.close_step_timeout_seconds
        return (
            self.consumer.stop_bound_seconds
            + max(step, self.psp.drain_timeout_ms / 1000 + step)
            + (STOP_FLUSH_SECONDS + step)
            + step
        )

    @model_validator(mode="after")
    def _shutdown_outlasts_the_stop(self) -> Self:
        if self.process.shutdown_timeout_seconds <= self.stop_bound_seconds:
            raise ValueError(
                f"process.shutdown_timeout_seconds ({self.process.shutdown_timeout_seconds:g}) must exceed the "
                f"stop's own bounds ({self.stop_bound_seconds:g} s): consumer.drain_timeout_seconds + "
                "2 x consumer.close_timeout_seconds + psp.drain_timeout_ms + the producers' flush + "
                "3 x process.close_step_timeout_seconds"
            )
        return self

    @model_validator(mode="after")
    def _sweeper_outwaits_a_retry(self) -> Self:
        longest_retry_ms = self.retry.max_delay_ms + self.retry.visibility_timeout_ms
        if self.sweeper.stale_after_seconds * 1000 <= longest_retry_ms:
            raise ValueError(
                f"sweeper.stale_after_seconds ({self.sweeper.stale_after_seconds:g}) must exceed the longest wait of a "
                f"retry, retry.max_delay_ms + retry.visibility_timeout_ms ({longest_retry_ms} ms)"
            )
        return self

    @model_validator(mode="after")
    def _claims_and_checks_fit_the_call_budget(self) -> Self:
        """A claim's lease must outlast a call (and a claim that waited its whole statement timeout must still
        leave a call time to run inside the lease); a status check must not be due before a call of its attempt
        could have run its whole budget."""
        budget = self.psp.call_budget_seconds
        process = self.process
        if process.psp_claim_lock_timeout_ms > process.psp_claim_statement_timeout_ms:
            raise ValueError(
                f"process.psp_claim_lock_timeout_ms ({process.psp_claim_lock_timeout_ms}) must not exceed "
                f"process.psp_claim_statement_timeout_ms ({process.psp_claim_statement_timeout_ms})"
            )
        if process.psp_claim_statement_timeout_ms / 1000 + budget >= process.psp_claim_lease_seconds:
            raise ValueError(
                f"process.psp_claim_lease_seconds ({process.psp_claim_lease_seconds:g}) must exceed "
                f"process.psp_claim_statement_timeout_ms ({process.psp_claim_statement_timeout_ms}) plus the PSP "
                f"call budget, psp.call_timeout_ms + psp.call_grace_ms ({budget * 1000:g} ms)"
            )
        first_check = self.status_checks.delays_seconds[0]
        if first_check < budget:
            raise ValueError(
                f"status_checks.delays_seconds[0] ({first_check:g}) must be at least the PSP call budget, "
                f"psp.call_timeout_ms + psp.call_grace_ms ({budget * 1000:g} ms)"
            )
        return self

    @model_validator(mode="after")
    def _psp_pool_holds_every_call_in_flight(self) -> Self:
        """The charges and the status checks a process runs at once must fit in the PSP pool (running + queued),
        or calls are refused by our own pool, each refusal costing an attempt."""
        in_flight = 2 * self.consumer.max_concurrent_records
        if in_flight > self.psp.workers + self.psp.queue_size:
            raise ValueError(
                f"2 x consumer.max_concurrent_records ({in_flight}, charges and status checks) "
                f"must not exceed psp.workers + psp.queue_size ({self.psp.workers + self.psp.queue_size})"
            )
        return self
