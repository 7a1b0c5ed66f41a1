"""Settings of the PSP client (composed by payment-consumers as its ``psp`` group)."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, Field, field_validator, model_validator

from payment_infrastructure.psp.concurrency_limit import LimitSettings


class PspSettings(BaseModel):
    base_url: str = "http://127.0.0.1:8090"
    # The original's wait (its "1S" status name notwithstanding): covers queueing and the HTTP call.
    call_timeout_ms: int = Field(default=500, gt=0)
    # A charge still running at its call timeout is cancelled this much later (a backstop: the client's own
    # per-phase timeouts normally end it first); until then its request may still be going out.
    call_grace_ms: int = Field(default=1000, ge=0)
    status_timeout_ms: int = Field(default=1000, gt=0)
    # Below call_timeout_ms, so an unreachable PSP is told apart from a slow one.
    connect_timeout_ms: int = Field(default=200, gt=0)
    # The most calls at once. With adaptive_workers the limit follows the PSP's latency between min_workers and
    # this, starting at initial_workers (each capped at workers); without, it is fixed at workers.
    workers: int = Field(default=96, gt=0)
    adaptive_workers: bool = True
    min_workers: int = Field(default=8, gt=0)
    initial_workers: int = Field(default=32, gt=0)
    queue_size: int = Field(default=256, gt=0)
    max_connections: int = Field(default=96, gt=0)
    # Shorter than the PSP's own keep-alive, so we never reuse a connection it is closing.
    keepalive_expiry_s: float = Field(default=4.0, gt=0)
    drain_timeout_ms: int = Field(default=5000, ge=0)

    @property
    def call_budget_seconds(self) -> float:
        """The longest a charge can take from being handed to the client (queued for a worker) until nothing of it
        can reach the PSP any more: its call timeout, then the cancelling backstop."""
        return (self.call_timeout_ms + self.call_grace_ms) / 1000

    def concurrency_limit(self) -> LimitSettings | None:
        if not self.adaptive_workers:
            return None
        minimum = min(self.min_workers, self.workers)
        return LimitSettings(
            initial=min(max(self.initial_workers, minimum), self.workers), minimum=minimum, maximum=self.workers
        )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("psp base_url must be an http(s) URL, e.g. http://127.0.0.1:8090")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _enough_connections(self) -> Self:
        if self.max_connections < self.workers:
            raise ValueError(
                f"psp max_connections ({self.max_connections}) must be >= workers ({self.workers}), "
                "or workers would wait for a connection inside their call timeout"
            )
        return self
