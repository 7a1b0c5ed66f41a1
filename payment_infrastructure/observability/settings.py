"""Logging settings every deployable shares (its `logging` group)."""

from __future__ import annotations

from pydantic import BaseModel


class LoggingSettings(BaseModel):
    level: str = "INFO"
    json_output: bool = True
