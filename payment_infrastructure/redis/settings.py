"""Redis connection settings."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"
    socket_timeout_seconds: float = Field(default=0.5, gt=0)
    connect_timeout_seconds: float = Field(default=0.5, gt=0)
    max_connections: int = Field(default=32, ge=1)
    id_block_size: int = Field(default=500, ge=1, description="ids reserved per INCRBY round trip")
