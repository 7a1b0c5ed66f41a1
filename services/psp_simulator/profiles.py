"""Scenario profiles: how often the simulated PSP is slow, how slow, and what it answers.

The four named scenarios are the original's shipped `psp.simulation` YAML (reference §6.2), unchanged:

| scenario      | timeout % | latency buckets (ms)                          | success / retryable / declined |
|---------------|-----------|-----------------------------------------------|--------------------------------|
| NORMAL        | 20        | 100 % 50-150                                  | 70 / 20 / 10                   |
| PEAK          | 25        | 30 % 250-500, 50 % 501-1500, 20 % 1501-2500   | 50 / 45 / 5                    |
| DEGRADED      | 30        | 20 % 2000-2200, 20 % 2201-2600, 60 % 2601-2990 | 50 / 40 / 10                  |
| BEST_PSP_EVER | off       | 100 % 1-2                                     | 100 / 0 / 0                    |

They answer "PENDING, check later" 0 % of the time, as the original did. `pendingPercent` adds that answer:
given alone (e.g. `{"scenario": "NORMAL", "pendingPercent": 10}`) it is carved out of the other three
shares in proportion, so NORMAL becomes 63 / 18 / 9 / 10 (success / retryable / declined / pending).
A pending charge later resolves to success or declined in the ratio of the success and declined shares
(NORMAL: 7 to 1) unless `pendingSuccessPercent` says otherwise.

A "timeout" is the original's step 1: the call takes `timeoutDurationMs` (5,000 ms) instead of a latency
bucket, far past the caller's 500 ms wait, and then completes with an outcome drawn from the same mix;
the charge exists even though the caller gave up. Tests shorten `timeoutDurationMs`.

`chargedThenUnavailablePercent` (default 0) is a fault none of the originals has: that share of new charges and
refunds is executed and recorded as usual (the money moves), but the caller hears a 503 problem (`code`
"service_unavailable") once the charge is decided, as from a proxy whose upstream reset after the PSP charged.
A later call under the same key replays the charge normally.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

_PERCENT_TOLERANCE = 1e-6


class Outcome(StrEnum):
    """The first answer of an executed charge, as the PSP spells it on the wire."""

    SUCCESSFUL_FINAL = "SUCCESSFUL_FINAL"
    FAILED_TRANSIENT_ERROR = "FAILED_TRANSIENT_ERROR"
    DECLINED_FINAL = "DECLINED_FINAL"
    PENDING = "PENDING"


class _Wire(BaseModel):
    """camelCase on the wire; snake_case names are accepted too."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class LatencyBucket(_Wire):
    name: str
    percent: float = Field(ge=0, le=100)
    min_ms: int = Field(ge=0)
    max_ms: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_ms < self.min_ms:
            raise ValueError(f"latency bucket {self.name}: maxMs {self.max_ms} < minMs {self.min_ms}")
        return self


class ScenarioProfile(_Wire):
    name: str
    timeout_percent: float = Field(default=0, ge=0, le=100)
    timeout_duration_ms: int = Field(default=5000, ge=0)
    # Drawn by cumulative percentage; a draw past the last bucket sleeps timeoutDurationMs (the original).
    latency: tuple[LatencyBucket, ...] = ()
    success_percent: float = Field(ge=0, le=100)
    retryable_percent: float = Field(default=0, ge=0, le=100)
    declined_percent: float = Field(default=0, ge=0, le=100)
    pending_percent: float = Field(default=0, ge=0, le=100)
    pending_resolve_min_ms: int = Field(default=1000, ge=0)
    pending_resolve_max_ms: int = Field(default=3000, ge=0)
    # None: resolve pending charges in the ratio of success to declined (all success if both are 0).
    pending_success_percent: float | None = Field(default=None, ge=0, le=100)
    # Executed, then answered 503: drawn (one extra draw) only when above 0, so seeded runs without it are unchanged.
    charged_then_unavailable_percent: float = Field(default=0, ge=0, le=100)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        mix = self.success_percent + self.retryable_percent + self.declined_percent + self.pending_percent
        if abs(mix - 100) > _PERCENT_TOLERANCE:
            raise ValueError(
                f"successPercent + retryablePercent + declinedPercent + pendingPercent must be 100, got {mix:g}"
            )
        buckets = sum(b.percent for b in self.latency)
        if buckets > 100 + _PERCENT_TOLERANCE:
            raise ValueError(f"latency bucket percentages add up to {buckets:g} > 100")
        if self.pending_resolve_max_ms < self.pending_resolve_min_ms:
            raise ValueError("pendingResolveMaxMs must be >= pendingResolveMinMs")
        return self

    @property
    def resolved_pending_success_percent(self) -> float:
        if self.pending_success_percent is not None:
            return self.pending_success_percent
        final = self.success_percent + self.declined_percent
        return 100.0 if final == 0 else 100.0 * self.success_percent / final


def _bucket(name: str, percent: float, min_ms: int, max_ms: int) -> LatencyBucket:
    return LatencyBucket(name=name, percent=percent, min_ms=min_ms, max_ms=max_ms)


SCENARIOS: dict[str, ScenarioProfile] = {
    p.name: p
    for p in (
        ScenarioProfile(
            name="NORMAL",
            timeout_percent=20,
            latency=(_bucket("fast", 100, 50, 150), _bucket("moderate", 0, 150, 300), _bucket("slow", 0, 300, 600)),
            success_percent=70,
            retryable_percent=20,
            declined_percent=10,
        ),
        ScenarioProfile(
            name="PEAK",
            timeout_percent=25,
            latency=(
                _bucket("fast", 30, 250, 500),
                _bucket("moderate", 50, 501, 1500),
                _bucket("slow", 20, 1501, 2500),
            ),
            success_percent=50,
            retryable_percent=45,
            declined_percent=5,
        ),
        ScenarioProfile(
            name="DEGRADED",
            timeout_percent=30,
            latency=(
                _bucket("fast", 20, 2000, 2200),
                _bucket("moderate", 20, 2201, 2600),
                _bucket("slow", 60, 2601, 2990),
            ),
            success_percent=50,
            retryable_percent=40,
            declined_percent=10,
        ),
        ScenarioProfile(
            name="BEST_PSP_EVER",
            timeout_percent=0,
            latency=(_bucket("fast", 100, 1, 2),),
            success_percent=100,
        ),
    )
}

_MIX_FIELDS = ("success_percent", "retryable_percent", "declined_percent")


class UnknownScenario(ValueError):
    pass


def build_profile(scenario: str, overrides: dict[str, Any] | None = None) -> ScenarioProfile:
    """The named scenario with `overrides` (profile fields, camelCase or snake_case) applied on top.

    Raises UnknownScenario for a name not in SCENARIOS and pydantic.ValidationError for a bad profile.
    """
    try:
        base = SCENARIOS[scenario.strip().upper()]
    except KeyError:
        raise UnknownScenario(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}") from None
    if not overrides:
        return base
    by_name = {_field_name(key): value for key, value in overrides.items()}
    merged = base.model_dump() | by_name
    if "pending_percent" in by_name and not any(f in by_name for f in _MIX_FIELDS):
        _carve_out_pending(merged, base)
    if "name" not in by_name:
        merged["name"] = f"{base.name}+custom"
    return ScenarioProfile.model_validate(merged)


def _field_name(key: str) -> str:
    for name, field in ScenarioProfile.model_fields.items():
        if key in (name, field.alias):
            return name
    return key  # unknown: left for validation to reject (extra="forbid")


def _carve_out_pending(merged: dict[str, Any], base: ScenarioProfile) -> None:
    pending = float(merged["pending_percent"])
    rest = sum(getattr(base, f) for f in _MIX_FIELDS)
    for f in _MIX_FIELDS:
        merged[f] = getattr(base, f) * (100 - pending) / rest if rest else 0.0
