"""log-shipper settings: env prefix PAYMENTS_, one group, `logs` (PAYMENTS_LOGS__OPENSEARCH_URL=...)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from payment_infrastructure.logs.settings import LogsSettings


class ShipperSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAYMENTS_", env_nested_delimiter="__", env_ignore_empty=True, extra="ignore"
    )

    logs: LogsSettings = LogsSettings()
