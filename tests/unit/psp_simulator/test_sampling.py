"""Every scenario's mix is honoured over thousands of seeded draws (pure sampling, no sleeping)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from pydantic import ValidationError

from services.psp_simulator.profiles import SCENARIOS, Outcome, ScenarioProfile, UnknownScenario, build_profile
from services.psp_simulator.sampling import TIMEOUT_BUCKET, plan_charge, plan_pending_resolution

DRAWS = 2000


def assert_share(count: int, total: int, percent: float) -> None:
    """Within four standard deviations of the binomial expectation (exact at 0 % and 100 %)."""
    p = percent / 100
    tolerance = 4 * math.sqrt(p * (1 - p) / total) + 1e-9
    assert abs(count / total - p) <= tolerance, f"{count}/{total} is not {percent} %"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_timeouts_latency_and_outcomes_follow_the_profile(name: str) -> None:
    profile = SCENARIOS[name]
    rng = random.Random(name)
    plans = [plan_charge(profile, rng) for _ in range(DRAWS)]

    timed_out = [p for p in plans if p.timed_out]
    assert_share(len(timed_out), DRAWS, profile.timeout_percent)
    assert all(p.delay_ms == profile.timeout_duration_ms for p in timed_out)

    in_time = [p for p in plans if not p.timed_out]
    buckets = Counter(p.bucket for p in in_time)
    for bucket in profile.latency:
        assert_share(buckets[bucket.name], len(in_time), bucket.percent)
        assert all(bucket.min_ms <= p.delay_ms <= bucket.max_ms for p in in_time if p.bucket == bucket.name)

    outcomes = Counter(p.outcome for p in plans)
    assert_share(outcomes[Outcome.SUCCESSFUL_FINAL], DRAWS, profile.success_percent)
    assert_share(outcomes[Outcome.FAILED_TRANSIENT_ERROR], DRAWS, profile.retryable_percent)
    assert_share(outcomes[Outcome.DECLINED_FINAL], DRAWS, profile.declined_percent)
    assert outcomes[Outcome.PENDING] == 0


def test_named_scenarios_are_the_originals_shipped_profiles() -> None:
    table = {
        name: (p.timeout_percent, [b.percent for b in p.latency], p.success_percent, p.retryable_percent)
        for name, p in SCENARIOS.items()
    }
    assert table == {
        "NORMAL": (20, [100, 0, 0], 70, 20),
        "PEAK": (25, [30, 50, 20], 50, 45),
        "DEGRADED": (30, [20, 20, 60], 50, 40),
        "BEST_PSP_EVER": (0, [100], 100, 0),
    }
    assert all(p.timeout_duration_ms == 5000 for p in SCENARIOS.values())


def test_pending_percent_is_carved_out_of_the_mix_in_proportion() -> None:
    profile = build_profile("NORMAL", {"pendingPercent": 10})
    rng = random.Random(11)
    outcomes = Counter(plan_charge(profile, rng).outcome for _ in range(DRAWS))

    assert (profile.success_percent, profile.retryable_percent, profile.declined_percent) == (63, 18, 9)
    assert_share(outcomes[Outcome.PENDING], DRAWS, 10)
    assert_share(outcomes[Outcome.SUCCESSFUL_FINAL], DRAWS, 63)


def test_pending_charges_resolve_in_the_ratio_of_success_to_declined() -> None:
    profile = build_profile("NORMAL", {"pendingPercent": 10, "pendingResolveMinMs": 1000, "pendingResolveMaxMs": 3000})
    rng = random.Random(12)
    resolutions = [plan_pending_resolution(profile, rng) for _ in range(DRAWS)]

    successes = sum(1 for r in resolutions if r.outcome is Outcome.SUCCESSFUL_FINAL)
    assert_share(successes, DRAWS, 100 * 70 / 80)
    assert {r.outcome for r in resolutions} == {Outcome.SUCCESSFUL_FINAL, Outcome.DECLINED_FINAL}
    assert all(1000 <= r.delay_ms <= 3000 for r in resolutions)


def test_same_seed_gives_the_same_draws() -> None:
    profile = SCENARIOS["PEAK"]
    first = [plan_charge(profile, random.Random(5)) for _ in range(50)]
    second = [plan_charge(profile, random.Random(5)) for _ in range(50)]

    assert first == second


def test_timeout_bucket_applies_only_to_the_timeout_share() -> None:
    always = build_profile("BEST_PSP_EVER", {"timeoutPercent": 100, "timeoutDurationMs": 750})
    rng = random.Random(3)

    plans = [plan_charge(always, rng) for _ in range(100)]

    assert {(p.bucket, p.delay_ms) for p in plans} == {(TIMEOUT_BUCKET, 750.0)}


@pytest.mark.parametrize(
    "overrides",
    [
        {"successPercent": 20},  # mix no longer adds up to 100
        {"latency": [{"name": "x", "percent": 80, "minMs": 1, "maxMs": 2}] * 2},  # buckets over 100 %
        {"latency": [{"name": "x", "percent": 100, "minMs": 9, "maxMs": 2}]},  # max below min
        {"pendingResolveMinMs": 10, "pendingResolveMaxMs": 5},
        {"timeoutPercent": 101},
        {"chargedThenUnavailablePercent": 101},
        {"chargedThenUnavailablePercent": -1},
        {"noSuchField": 1},
    ],
)
def test_inconsistent_profile_is_rejected(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        build_profile("NORMAL", overrides)


def test_unknown_scenario_is_rejected() -> None:
    with pytest.raises(UnknownScenario):
        build_profile("FASTEST")


def test_profile_round_trips_through_its_wire_form() -> None:
    profile = build_profile("DEGRADED", {"pendingPercent": 5})

    assert ScenarioProfile.model_validate(profile.model_dump(by_alias=True)) == profile
