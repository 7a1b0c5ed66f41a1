"""Pure parts of the consumer runtime: settings validation, backoff, dead-letter headers, record conversion."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from payment_infrastructure.kafka.consumer_settings import ConsumerSettings
from payment_infrastructure.kafka.dead_letter_format import DeadLetter
from payment_infrastructure.kafka.dead_letters import DEAD_LETTER_HEADERS, dead_letter_headers
from payment_infrastructure.kafka.record_processor import record_log_context
from payment_infrastructure.kafka.records import ConsumedRecord, PoisonMessage, consumed_record

AT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
RECORD = ConsumedRecord("payment_order_created_topic", 3, 41, "order-9", b"{}", {"traceId": b"t-9"}, 0)


def test_in_place_backoff_doubles_under_equal_jitter_and_stops_at_the_cap() -> None:
    """Records failed together (one coalesced statement) must not be retried in lockstep: the wait is spread."""
    settings = ConsumerSettings(in_place_backoff_ms=200, in_place_backoff_max_ms=1_000)

    def top(low: int, high: int) -> int:
        return high

    def bottom(low: int, high: int) -> int:
        return low

    assert [settings.in_place_backoff_seconds(n, top) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert [settings.in_place_backoff_seconds(n, bottom) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    spread = {settings.in_place_backoff_seconds(3, random.Random(seed).randint) for seed in range(20)}
    assert len(spread) > 10


def test_no_in_place_backoff_stays_none() -> None:
    assert ConsumerSettings(in_place_backoff_ms=0).in_place_backoff_seconds(3, random.randint) == 0.0


def test_dependency_backoff_doubles_under_equal_jitter_and_stops_at_the_cap() -> None:
    settings = ConsumerSettings(dependency_backoff_ms=200, dependency_backoff_max_ms=1_000)

    def top(low: int, high: int) -> int:
        return high

    def bottom(low: int, high: int) -> int:
        return low

    assert [settings.dependency_backoff_seconds(n, top) for n in (1, 2, 3, 4, 1_000)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert [settings.dependency_backoff_seconds(n, bottom) for n in (1, 2, 3, 4, 1_000)] == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_dead_letter_backoff_is_capped_even_after_many_failures() -> None:
    settings = ConsumerSettings(in_place_backoff_ms=100, dead_letter_backoff_max_ms=3_000)

    assert settings.dead_letter_backoff_seconds(1) == 0.1
    assert settings.dead_letter_backoff_seconds(10_000) == 3.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"heartbeat_interval_ms": 10_000, "session_timeout_ms": 10_000}, "heartbeat_interval_ms"),
        ({"drain_timeout_seconds": 30.0, "rebalance_timeout_ms": 30_000}, "drain_timeout_seconds"),
        ({"request_timeout_ms": 30_000, "rebalance_timeout_ms": 30_000}, "request_timeout_ms"),
        ({"in_place_backoff_ms": 500, "in_place_backoff_max_ms": 100}, "in_place_backoff_max_ms"),
        ({"dependency_backoff_ms": 500, "dependency_backoff_max_ms": 100}, "dependency_backoff_max_ms"),
        ({"dependency_backoff_ms": 0}, "dependency_backoff_ms"),
        ({"max_in_flight_per_partition": 0}, "max_in_flight_per_partition"),
        ({"stalled_poll_timeout_ms": 30_000, "rebalance_timeout_ms": 30_000}, "stalled_poll_timeout_ms"),
    ],
)
def test_inconsistent_consumer_settings_are_rejected_with_the_setting_named(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ConsumerSettings.model_validate(overrides)


def test_dead_letter_headers_keep_the_originals_and_say_what_failed_where() -> None:
    headers = dict(dead_letter_headers(RECORD, PoisonMessage("bad amount"), group_id="g", attempts=1, recovered_at=AT))

    assert headers["traceId"] == b"t-9"
    assert headers["x-error-class"] == b"payment_infrastructure.kafka.records.PoisonMessage"
    assert headers["x-error-message"] == b"bad amount"
    assert headers["x-original-topic"] == b"payment_order_created_topic"
    assert headers["x-original-partition"] == b"3"
    assert headers["x-original-offset"] == b"41"
    assert headers["x-consumer-group"] == b"g"
    assert headers["x-attempts"] == b"1"
    assert headers["x-recovered-at"] == b"2026-03-04T05:06:07+00:00"
    assert set(headers) == DEAD_LETTER_HEADERS | {"traceId"}


def test_a_long_error_message_is_cut_to_8000_characters() -> None:
    headers = dict(dead_letter_headers(RECORD, ValueError("x" * 20_000), group_id="g", attempts=4, recovered_at=AT))

    assert len(headers["x-error-message"]) == 8_000
    assert headers["x-error-class"] == b"ValueError"


def test_a_dead_letter_of_a_dead_letter_replaces_the_earlier_error_headers() -> None:
    first = dict(dead_letter_headers(RECORD, RuntimeError("first"), group_id="g", attempts=4, recovered_at=AT))
    again = ConsumedRecord("payment_order_created_topic.DLQ", 3, 0, "order-9", b"{}", first, 0)

    headers = dead_letter_headers(again, RuntimeError("second"), group_id="g2", attempts=1, recovered_at=AT)

    assert [name for name, _ in headers].count("x-error-message") == 1
    assert dict(headers)["x-error-message"] == b"second"


def test_a_replay_keeps_the_original_headers_only() -> None:
    letter = DeadLetter(
        ConsumedRecord(
            "payment_order_created_topic.DLQ",
            3,
            0,
            "order-9",
            b"{}",
            dict(dead_letter_headers(RECORD, RuntimeError("e"), group_id="g", attempts=4, recovered_at=AT)),
            0,
        )
    )

    assert letter.original_headers() == [("traceId", b"t-9")]
    assert (letter.original_topic, letter.original_partition, letter.original_offset) == (
        "payment_order_created_topic",
        3,
        41,
    )


def test_a_key_that_is_not_utf8_survives_the_round_trip_to_the_dlq() -> None:
    raw = ConsumerRecord(
        topic="t",
        partition=0,
        offset=1,
        timestamp=5,
        timestamp_type=0,
        key=b"\xffkey",
        value=None,
        checksum=None,
        serialized_key_size=4,
        serialized_value_size=0,
        headers=[("eventId", b"e")],
    )

    record = consumed_record(raw)

    assert record.key_bytes == b"\xffkey"
    assert record.value == b""
    assert record.headers == {"eventId": b"e"}


def test_the_log_context_names_the_record_and_its_envelope_ids() -> None:
    record = ConsumedRecord(
        "t", 2, 9, "k", b"", {"eventId": b"e-1", "traceId": b"t-1", "aggregateId": b"a-1", "eventType": b"x"}, 0
    )

    assert record_log_context(record) == {
        "topic": "t",
        "partition": 2,
        "offset": 9,
        "event_id": "e-1",
        "trace_id": "t-1",
        "aggregate_id": "a-1",
        "event_type": "x",
    }
