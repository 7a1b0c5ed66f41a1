"""Drawing one charge's fate from a profile: pure functions of the profile and an injected random.Random.

Kept free of sleeping and I/O so the mix of every scenario can be checked over thousands of seeded draws.
The three steps are the original NetworkSimulator's: timeout, then latency bucket, then response.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from services.psp_simulator.profiles import Outcome, ScenarioProfile

TIMEOUT_BUCKET = "timeout"
# A draw past the last latency bucket (only when the buckets add up to less than 100 %).
UNBUCKETED = "unbucketed"


@dataclass(frozen=True)
class ChargePlan:
    delay_ms: float
    bucket: str  # the latency bucket's name, TIMEOUT_BUCKET or UNBUCKETED
    outcome: Outcome

    @property
    def timed_out(self) -> bool:
        return self.bucket == TIMEOUT_BUCKET


@dataclass(frozen=True)
class PendingResolution:
    delay_ms: float
    outcome: Outcome  # SUCCESSFUL_FINAL or DECLINED_FINAL


def _percent_draw(rng: random.Random) -> float:
    return rng.random() * 100


def plan_charge(profile: ScenarioProfile, rng: random.Random) -> ChargePlan:
    delay_ms, bucket = _draw_delay(profile, rng)
    return ChargePlan(delay_ms=delay_ms, bucket=bucket, outcome=draw_outcome(profile, rng))


def _draw_delay(profile: ScenarioProfile, rng: random.Random) -> tuple[float, str]:
    if profile.timeout_percent > 0 and _percent_draw(rng) < profile.timeout_percent:
        return float(profile.timeout_duration_ms), TIMEOUT_BUCKET
    draw = _percent_draw(rng)
    cumulative = 0.0
    for bucket in profile.latency:
        cumulative += bucket.percent
        if draw < cumulative:
            return rng.uniform(bucket.min_ms, bucket.max_ms), bucket.name
    return float(profile.timeout_duration_ms), UNBUCKETED


def draw_outcome(profile: ScenarioProfile, rng: random.Random) -> Outcome:
    draw = _percent_draw(rng)
    cumulative = profile.success_percent
    if draw < cumulative:
        return Outcome.SUCCESSFUL_FINAL
    cumulative += profile.retryable_percent
    if draw < cumulative:
        return Outcome.FAILED_TRANSIENT_ERROR
    cumulative += profile.declined_percent
    # Without a pending share, rounding in the percentages must not invent a pending answer.
    if draw < cumulative or profile.pending_percent == 0:
        return Outcome.DECLINED_FINAL
    # The original's "else" branch: what the other three shares leave.
    return Outcome.PENDING


def plan_pending_resolution(profile: ScenarioProfile, rng: random.Random) -> PendingResolution:
    delay_ms = rng.uniform(profile.pending_resolve_min_ms, profile.pending_resolve_max_ms)
    success = _percent_draw(rng) < profile.resolved_pending_success_percent
    return PendingResolution(delay_ms, Outcome.SUCCESSFUL_FINAL if success else Outcome.DECLINED_FINAL)
