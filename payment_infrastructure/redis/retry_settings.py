"""Retry settings (group `retry`): the backoff policy, the Redis keys and the dispatcher's pacing."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, Field, model_validator


class RetrySettings(BaseModel):
    base_delay_ms: int = Field(default=2_000, ge=1, description="equal-jitter backoff: cap of attempt 1")
    max_delay_ms: int = Field(default=60_000, ge=1, description="equal-jitter backoff: largest cap")
    max_retries: int = Field(default=5, ge=0, description="PSP calls after the first one")
    batch_size: int = Field(default=300, ge=1, le=10_000, description="due items claimed per round")
    visibility_timeout_ms: int = Field(
        default=30_000, ge=1, description="an item in flight this long without an ack goes back to the queue"
    )
    max_idle_ms: int = Field(
        default=500, ge=1, description="longest idle sleep, so an item scheduled earlier than the known next is seen"
    )
    reclaim_interval_ms: int = Field(default=5_000, ge=1, description="how often expired in-flight items are reclaimed")
    failure_max_backoff_ms: int = Field(
        default=5_000, ge=1, description="longest pause after a failed round (doubles from max_idle_ms)"
    )
    queue_key: str = "payment_retry_queue"
    inflight_key: str = "payment_retry_inflight"
    payloads_key: str = "payment_retry_payloads"

    @model_validator(mode="after")
    def _delays_are_ordered(self) -> Self:
        if self.max_delay_ms < self.base_delay_ms:
            raise ValueError("retry.max_delay_ms must be >= retry.base_delay_ms")
        return self


def check_visibility_outlives_delivery(settings: RetrySettings, delivery_timeout_seconds: float) -> None:
    """A publish must end (acked or failed) before its item may be reclaimed, or every slow batch is sent twice."""
    if settings.visibility_timeout_ms <= delivery_timeout_seconds * 1000:
        raise ValueError(
            f"retry.visibility_timeout_ms ({settings.visibility_timeout_ms}) must exceed the Kafka delivery "
            f"timeout ({delivery_timeout_seconds * 1000:.0f} ms)"
        )
