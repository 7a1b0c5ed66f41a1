"""The `logs` settings group (PAYMENTS_LOGS__*), read by the log shipper only."""

from __future__ import annotations

from pydantic import BaseModel, Field


class LogsSettings(BaseModel):
    # No URL, no shipping: `make run` starts a shipper (and an OpenSearch node) only when one is set.
    opensearch_url: str | None = None
    # The data stream the lines go to; the index template (infra/opensearch/) matches `payments-logs*`.
    data_stream: str = Field(default="payments-logs", pattern=r"^payments-logs[a-z0-9._-]*$")
    batch_size: int = Field(default=500, ge=1, le=10_000)
    # A line waits at most this long before it is sent (a partial batch is sent when the files go quiet).
    flush_interval_seconds: float = Field(default=1.0, gt=0)
    poll_interval_seconds: float = Field(default=0.2, gt=0)
    request_timeout_seconds: float = Field(default=10.0, gt=0)
