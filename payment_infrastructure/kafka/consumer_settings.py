"""Settings of the partition-ordered consumer runtime (one group per worker; the lead composes it per process)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, Field, model_validator

from payment_domain.backoff import RandInt, equal_jitter_backoff_ms


class ConsumerSettings(BaseModel):
    """Defaults sized for handlers that do a short database transaction or one PSP call per record.

    `max_in_flight_per_partition` bounds the records fetched but not yet finished for one partition: a
    partition whose queue is full is paused (and seeked back), so memory stays bounded when a handler is slow.
    `batch_size` is how many of a partition's queued records run at once: one key's records (a paymentOrderId's)
    still run one after another in offset order, different keys side by side, and the batch is committed when all
    of it is done. `max_concurrent_records` bounds the records running at once across all of a member's
    partitions, however many it is assigned, so what they share (the PSP pool, the database pool) is sized once.
    `drain_timeout_seconds` bounds how long a rebalance or a shutdown waits for the record a handler is busy
    with; a record still running then is cancelled and, never committed, is delivered again.
    `close_timeout_seconds` bounds each of the two broker steps of a shutdown after the drain: the final offset
    commit, and leaving the group (the client's close). A broker that does not answer would otherwise hold the stop
    for the request timeout, or, while the client waits for metadata it cannot get, for minutes; what was not
    committed is delivered again, and a member that did not leave is dropped by the group after its session timeout.
    `in_place_retries` bounds the retries of an unexpected failure only (each after a jittered backoff); a
    dependency failure (database, Redis, broker down) is retried for as long as it lasts, `dependency_backoff_ms`
    doubling up to the cap, with jitter so that every blocked partition does not knock on the recovering service
    at the same instant.
    """

    max_poll_records: int = Field(default=200, ge=1)
    max_in_flight_per_partition: int = Field(default=50, ge=1)
    batch_size: int = Field(default=16, ge=1)
    max_concurrent_records: int = Field(default=96, ge=1)
    poll_timeout_ms: int = Field(default=500, ge=10)
    # The broker answers a fetch once it has `fetch_min_bytes` (about 20 of our records) or `fetch_max_wait_ms`
    # passed: at a steady trickle, records then arrive a few dozen at a time instead of one per fetch, and every
    # stage after the fetch (claims, PSP calls, produce requests, result transactions) batches with them. It costs
    # at most `fetch_max_wait_ms` per hop when traffic is light.
    fetch_max_wait_ms: int = Field(default=50, ge=0)
    fetch_min_bytes: int = Field(default=16_384, ge=1)
    # After a poll that found nothing, fetches ask for one byte and may wait this long: an idle broker answers each
    # consumer twice a second instead of twenty times, and the first record after a quiet spell comes back at once.
    # At or below `fetch_max_wait_ms`, the fetch settings never change.
    idle_fetch_max_wait_ms: int = Field(default=500, ge=0)
    commit_interval_ms: int = Field(default=500, ge=10)
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    # The loop polls even while every partition is paused, so this only trips on a stuck event loop.
    max_poll_interval_ms: int = Field(default=300_000, ge=1_000)
    # How long the group waits for every member to rejoin; a member drains its partitions before it rejoins.
    rebalance_timeout_ms: int = Field(default=30_000, ge=1_000)
    # JoinGroup blocks on the broker for up to the rebalance timeout, so requests must be allowed longer.
    request_timeout_ms: int = Field(default=40_000, ge=1_000)
    # Liveness fails when the poll loop has not finished a turn for this long (a poll that hangs, a callback that
    # never returns): only a restart frees it. Above rebalance + poll timeouts, the longest a healthy turn takes.
    stalled_poll_timeout_ms: int = Field(default=120_000, ge=1_000)
    in_place_retries: int = Field(default=3, ge=0)
    in_place_backoff_ms: int = Field(default=200, ge=0)
    in_place_backoff_max_ms: int = Field(default=5_000, ge=0)
    dependency_backoff_ms: int = Field(default=200, ge=1)
    dependency_backoff_max_ms: int = Field(default=5_000, ge=1)
    # Publishing to the DLQ is retried forever (a record is never dropped); this caps the wait between tries.
    dead_letter_backoff_max_ms: int = Field(default=30_000, ge=1)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    drain_timeout_seconds: float = Field(default=10.0, gt=0)
    close_timeout_seconds: float = Field(default=3.0, gt=0)

    @property
    def stop_bound_seconds(self) -> float:
        """The longest a consumer's stop takes: the drain, the final commit, leaving the group."""
        return self.drain_timeout_seconds + 2 * self.close_timeout_seconds

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("consumer.heartbeat_interval_ms must be below consumer.session_timeout_ms")
        if self.drain_timeout_seconds * 1000 >= self.rebalance_timeout_ms:
            raise ValueError(
                "consumer.drain_timeout_seconds must be below consumer.rebalance_timeout_ms, "
                "or the group moves on without a member that is still draining"
            )
        if self.request_timeout_ms <= self.rebalance_timeout_ms:
            raise ValueError("consumer.request_timeout_ms must be above consumer.rebalance_timeout_ms")
        if self.stalled_poll_timeout_ms <= self.rebalance_timeout_ms + self.poll_timeout_ms:
            raise ValueError(
                "consumer.stalled_poll_timeout_ms must be above consumer.rebalance_timeout_ms + "
                "consumer.poll_timeout_ms, or a rebalance restarts a healthy consumer"
            )
        if self.in_place_backoff_max_ms < self.in_place_backoff_ms:
            raise ValueError("consumer.in_place_backoff_max_ms must be >= consumer.in_place_backoff_ms")
        if self.dependency_backoff_max_ms < self.dependency_backoff_ms:
            raise ValueError("consumer.dependency_backoff_max_ms must be >= consumer.dependency_backoff_ms")
        return self

    def in_place_backoff_seconds(self, retry: int, randint: RandInt) -> float:
        """Wait before in-place retry number `retry` (1-based): equal jitter under a doubling, capped ceiling, so
        records that failed together (one batch, one statement) do not come back together and fail together again."""
        if self.in_place_backoff_ms == 0:
            return 0.0
        return (
            equal_jitter_backoff_ms(
                retry, base_ms=self.in_place_backoff_ms, max_ms=self.in_place_backoff_max_ms, randint=randint
            )
            / 1000
        )

    def dependency_backoff_seconds(self, retry: int, randint: RandInt) -> float:
        """Wait before dependency retry number `retry` (1-based): equal jitter under a doubling, capped ceiling."""
        return (
            equal_jitter_backoff_ms(
                retry, base_ms=self.dependency_backoff_ms, max_ms=self.dependency_backoff_max_ms, randint=randint
            )
            / 1000
        )

    def dead_letter_backoff_seconds(self, failure: int) -> float:
        """Wait after the `failure`-th failed DLQ publish of one record (1-based)."""
        return _doubling(max(self.in_place_backoff_ms, 1), failure, self.dead_letter_backoff_max_ms)


def _doubling(base_ms: int, attempt: int, cap_ms: int) -> float:
    exponent = min(max(attempt - 1, 0), 32)
    return min(base_ms * (1 << exponent), cap_ms) / 1000
