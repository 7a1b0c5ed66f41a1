"""The consumers' own defaults survive a deployment's environment, and a batch always fits the PSP pool."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.payment_consumers.settings import ConsumersSettings


def test_setting_the_database_url_keeps_the_consumers_own_database_and_kafka_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every deployment sets these; they used to drop the consumers' statement timeout (2 s) back to the API's 500 ms.
    monkeypatch.setenv("PAYMENTS_DB__URL", "postgresql+asyncpg://consumers@db.internal/payments")
    monkeypatch.setenv("PAYMENTS_KAFKA__BOOTSTRAP_SERVERS", "kafka.internal:9092")

    settings = ConsumersSettings()

    assert settings.db.url == "postgresql+asyncpg://consumers@db.internal/payments"
    assert (settings.db.statement_timeout_ms, settings.db.pool_timeout_seconds) == (2_000, 30)
    assert settings.kafka.bootstrap_servers == "kafka.internal:9092"
    assert settings.kafka.client_id == "payment-consumers"


def test_an_operator_can_still_override_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENTS_DB__STATEMENT_TIMEOUT_MS", "750")
    assert ConsumersSettings().db.statement_timeout_ms == 750


def test_the_records_running_at_once_must_fit_in_the_psp_pool() -> None:
    with pytest.raises(ValidationError, match="max_concurrent_records"):
        ConsumersSettings.model_validate(
            {"consumer": {"max_concurrent_records": 200}, "psp": {"workers": 32, "queue_size": 256}}
        )
    fits = ConsumersSettings.model_validate({"consumer": {"max_concurrent_records": 144}, "kafka": {"partitions": 48}})
    assert fits.consumer.max_concurrent_records == 144
