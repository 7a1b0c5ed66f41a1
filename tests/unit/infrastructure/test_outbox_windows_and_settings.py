"""Pure parts of the outbox and Kafka adapters: window arithmetic, names, and settings validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from payment_infrastructure.kafka.settings import KafkaSettings
from payment_infrastructure.postgres.outbox_partitions import (
    HOLD_MS,
    hold_for_creates,
    partition_name,
    window_of,
    window_start,
)
from payment_infrastructure.postgres.outbox_settings import OutboxSettings, check_lease_outlives_delivery


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2025, 8, 13, 20, 30, tzinfo=UTC), datetime(2025, 8, 13, 20, 30, tzinfo=UTC)),
        (datetime(2025, 8, 13, 20, 59, 59, 999_999, tzinfo=UTC), datetime(2025, 8, 13, 20, 30, tzinfo=UTC)),
        (datetime(2025, 8, 13, 21, 0, tzinfo=UTC), datetime(2025, 8, 13, 21, 0, tzinfo=UTC)),
        (datetime(2025, 8, 13, 23, 15, tzinfo=timezone(timedelta(hours=2))), datetime(2025, 8, 13, 21, 0, tzinfo=UTC)),
    ],
)
def test_windows_are_half_hours_aligned_to_utc(moment: datetime, expected: datetime) -> None:
    assert window_start(moment) == expected


def test_partition_names_follow_the_original_and_parse_back() -> None:
    start = datetime(2025, 8, 13, 20, 30, tzinfo=UTC)

    assert partition_name(start + timedelta(minutes=12)) == "outbox_event_20250813_2030"
    assert window_of("outbox_event_20250813_2030") == start
    assert window_of("outbox_event_default") is None
    assert window_of("outbox_event_20250813_2030_old") is None


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        window_start(datetime(2025, 8, 13, 20, 30))


def test_idempotence_requires_acks_all() -> None:
    with pytest.raises(ValidationError, match="acks"):
        KafkaSettings(enable_idempotence=True, acks="1")
    assert KafkaSettings(enable_idempotence=True).acks == "all"


def test_delivery_timeout_may_not_be_shorter_than_a_request() -> None:
    with pytest.raises(ValidationError, match="delivery_timeout_ms"):
        KafkaSettings(request_timeout_ms=10_000, delivery_timeout_ms=5_000)


def test_a_lease_shorter_than_a_publish_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="lease_seconds"):
        check_lease_outlives_delivery(OutboxSettings(lease_seconds=10), KafkaSettings().delivery_timeout_seconds)
    check_lease_outlives_delivery(OutboxSettings(), KafkaSettings().delivery_timeout_seconds)


def test_settings_come_from_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.payment_service.settings import ServiceSettings

    monkeypatch.setenv("PAYMENTS_KAFKA__ENABLE_IDEMPOTENCE", "true")
    monkeypatch.setenv("PAYMENTS_KAFKA__PARTITIONS", "48")
    monkeypatch.setenv("PAYMENTS_OUTBOX__BATCH_SIZE", "250")

    settings = ServiceSettings()

    assert settings.kafka.enable_idempotence is True
    assert settings.kafka.partitions == 48
    assert settings.outbox.batch_size == 250


def test_maintenance_holds_a_lock_a_create_may_wait_for_at_most_half_the_creates_lock_timeout() -> None:
    assert hold_for_creates(250) == HOLD_MS == 125
    assert hold_for_creates(1) == 1
