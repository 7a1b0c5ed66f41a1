"""The sweeper's settings: read from PAYMENTS_SWEEPER__*, and a threshold that cannot undercut a waiting retry."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.payment_consumers.settings import ConsumersSettings


def test_the_defaults_leave_every_legitimate_wait_well_alone() -> None:
    settings = ConsumersSettings()

    assert settings.sweeper.enabled
    assert settings.sweeper.stale_after_seconds == 600
    assert settings.sweeper.stale_after_seconds * 1000 > 5 * (
        settings.retry.max_delay_ms + settings.retry.visibility_timeout_ms
    )


def test_sweeper_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENTS_SWEEPER__STALE_AFTER_SECONDS", "900")
    monkeypatch.setenv("PAYMENTS_SWEEPER__INTERVAL_SECONDS", "5")
    monkeypatch.setenv("PAYMENTS_SWEEPER__BATCH_SIZE", "40")
    monkeypatch.setenv("PAYMENTS_SWEEPER__ENABLED", "false")

    sweeper = ConsumersSettings().sweeper

    assert (sweeper.stale_after_seconds, sweeper.interval_seconds, sweeper.batch_size, sweeper.enabled) == (
        900,
        5,
        40,
        False,
    )


def test_a_threshold_a_queued_retry_could_outlast_is_refused_with_the_setting_named() -> None:
    with pytest.raises(ValidationError, match=r"sweeper\.stale_after_seconds \(60\) must exceed .* \(90000 ms\)"):
        ConsumersSettings.model_validate({"sweeper": {"stale_after_seconds": 60}})


@pytest.mark.parametrize("field", ["stale_after_seconds", "interval_seconds", "batch_size"])
def test_non_positive_values_are_refused(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        ConsumersSettings.model_validate({"sweeper": {field: 0}})
