"""Equal-jitter backoff: the original's delay table, the cap, and exact bounds with an injected randint."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payment_domain.backoff import RandInt, equal_jitter_backoff_ms

BASE_MS = 2000
MAX_MS = 60000


def lowest(a: int, b: int) -> int:
    return a


def highest(a: int, b: int) -> int:
    return b


def backoff(attempt: int, randint: RandInt) -> int:
    return equal_jitter_backoff_ms(attempt, base_ms=BASE_MS, max_ms=MAX_MS, randint=randint)


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 1000, 2000), (2, 2000, 4000), (3, 4000, 8000), (4, 8000, 16000), (5, 16000, 32000)],
)
def test_the_original_delay_table_holds(attempt: int, low: int, high: int) -> None:
    assert backoff(attempt, lowest) == low
    assert backoff(attempt, highest) == high
    rng = random.Random(attempt)
    assert all(low <= backoff(attempt, rng.randint) <= high for _ in range(200))


@pytest.mark.parametrize("attempt", [6, 7, 10, 63, 64, 1000])
def test_large_attempts_are_capped_at_the_maximum(attempt: int) -> None:
    assert backoff(attempt, lowest) == MAX_MS // 2
    assert backoff(attempt, highest) == MAX_MS
    rng = random.Random(attempt)
    assert all(30000 <= backoff(attempt, rng.randint) <= 60000 for _ in range(200))


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_below_one_are_rejected(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff(attempt, random.Random(0).randint)


@pytest.mark.parametrize(("base_ms", "max_ms"), [(0, 1000), (-5, 1000), (2000, 1999)])
def test_a_non_positive_base_or_a_max_below_the_base_is_rejected(base_ms: int, max_ms: int) -> None:
    with pytest.raises(ValueError):
        equal_jitter_backoff_ms(1, base_ms=base_ms, max_ms=max_ms, randint=random.Random(0).randint)


def test_the_random_draw_is_asked_for_the_jitter_span_only() -> None:
    draws: list[tuple[int, int]] = []

    def recording(a: int, b: int) -> int:
        draws.append((a, b))
        return a

    equal_jitter_backoff_ms(3, base_ms=BASE_MS, max_ms=MAX_MS, randint=recording)
    assert draws == [(0, 4000)]


@given(attempt=st.integers(min_value=1, max_value=10_000), seed=st.integers(min_value=0, max_value=2**32))
def test_a_seeded_delay_always_lies_between_half_the_cap_and_the_cap(attempt: int, seed: int) -> None:
    cap = min(MAX_MS, BASE_MS * 2 ** min(attempt - 1, 64))
    delay = backoff(attempt, random.Random(seed).randint)
    assert cap / 2 <= delay <= cap


@given(
    attempt=st.integers(min_value=1, max_value=200),
    base_ms=st.integers(min_value=1, max_value=10_000),
    extra_ms=st.integers(min_value=0, max_value=10**7),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_any_policy_keeps_the_delay_within_the_equal_jitter_band(
    attempt: int, base_ms: int, extra_ms: int, seed: int
) -> None:
    max_ms = base_ms + extra_ms
    cap = min(max_ms, base_ms * 2 ** (attempt - 1))
    rng = random.Random(seed)
    delay = equal_jitter_backoff_ms(attempt, base_ms=base_ms, max_ms=max_ms, randint=rng.randint)
    assert cap // 2 <= delay <= cap
    assert equal_jitter_backoff_ms(attempt, base_ms=base_ms, max_ms=max_ms, randint=lowest) == cap // 2
    assert equal_jitter_backoff_ms(attempt, base_ms=base_ms, max_ms=max_ms, randint=highest) == cap


def test_the_same_seed_gives_the_same_delays() -> None:
    first = [backoff(n, random.Random(7).randint) for n in range(1, 8)]
    again = [backoff(n, random.Random(7).randint) for n in range(1, 8)]
    assert first == again
