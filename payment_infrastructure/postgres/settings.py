"""Database settings for a deployable's pool."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class DatabaseSettings(BaseModel):
    url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/payments"
    pool_size: int = Field(default=10, ge=1)
    max_overflow: int = Field(default=0, ge=0)
    pool_timeout_seconds: float = Field(default=1.0, gt=0)
    connect_timeout_seconds: float = Field(default=2.0, gt=0)
    statement_timeout_ms: int = Field(default=500, gt=0)
    lock_timeout_ms: int = Field(default=250, gt=0)
    idle_in_transaction_timeout_ms: int = Field(default=5_000, ge=0)
    # libpq's sslmode. "prefer" (the driver's default) encrypts whenever the server offers TLS, as Debian's does
    # out of the box; the local stack says "disable" for its loopback server, where TLS protects nothing and
    # costs CPU on both ends of every statement.
    ssl: SslMode = "prefer"
