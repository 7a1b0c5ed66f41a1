"""Settings of the JWT verifier (composed by each deployable as its ``auth`` group)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator


class AuthSettings(BaseModel):
    issuer_url: str = "http://127.0.0.1:8082/realms/ecommerce-platform"
    audience: str | None = None
    leeway_seconds: float = Field(default=5, ge=0)
    jwks_min_refresh_interval_seconds: float = Field(default=10, ge=0)
    jwks_cache_ttl_seconds: float = Field(default=300, gt=0)
    http_timeout_seconds: float = Field(default=2, gt=0)
    write_role: str = "payment:write"
    read_role: str = "payment:read"
    finance_role: str = "finance:read"  # reads every seller's balance and statement
    verified_token_cache_size: int = Field(default=10_000, ge=0)

    @field_validator("issuer_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        """Keycloak's ``iss`` has no trailing slash; a configured one would reject every token."""
        if not value.startswith(("http://", "https://")):
            raise ValueError("issuer_url must be an http(s) URL, e.g. http://keycloak:8080/realms/<realm>")
        return value.rstrip("/")
