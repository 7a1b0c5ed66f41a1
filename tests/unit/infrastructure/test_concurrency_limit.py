"""The PSP concurrency limit follows the PSP's latency: it grows while the calls use it and the latency holds, shrinks
when the latency rises past the tolerance (the PSP is queueing our calls), takes a steady new latency as normal, and
stays within its bounds."""

from __future__ import annotations

import pytest

from payment_infrastructure.psp.concurrency_limit import GradientLimit, LimitSettings


def windows(limit: GradientLimit, seconds: float, count: int, *, busy: float = 1.0) -> list[int]:
    """`count` windows of calls taking `seconds`, with `busy` x the limit in flight; the limit after each."""
    seen = []
    for _ in range(count):
        for _ in range(20):
            limit.on_call(seconds, max(1, round(limit.current * busy)))
        seen.append(limit.current)
    return seen


def test_it_grows_while_the_calls_use_it_and_the_latency_holds_up_to_its_ceiling() -> None:
    limit = GradientLimit(LimitSettings(initial=32, minimum=8, maximum=96))
    seen = windows(limit, 0.1, 60)
    assert seen == sorted(seen) and seen[0] > 32
    assert seen[-1] == 96


def test_it_does_not_grow_when_the_calls_leave_most_of_it_unused() -> None:
    limit = GradientLimit(LimitSettings(initial=32, minimum=8, maximum=96))
    assert windows(limit, 0.1, 20, busy=0.4)[-1] == 32


def test_a_rising_latency_shrinks_it_in_proportion_never_below_its_floor() -> None:
    limit = GradientLimit(LimitSettings(initial=64, minimum=8, maximum=96))
    windows(limit, 0.1, 5)
    before = limit.current
    after = windows(limit, 0.3, 3)  # three times slower: past the 1.5 tolerance
    assert after == sorted(after, reverse=True) and after[-1] < before
    assert after[0] >= before * 0.9 - 1  # a fifth of the way to at most half per window: no cliff
    floored = GradientLimit(LimitSettings(initial=24, minimum=16, maximum=96))
    windows(floored, 0.1, 5)
    assert windows(floored, 5.0, 10)[-1] == 16


def test_a_mix_of_fast_calls_and_timeouts_is_a_latency_like_any_other() -> None:
    """NORMAL: four calls in five answer in ~100 ms, one waits out the 500 ms timeout; the mean is steady."""
    limit = GradientLimit(LimitSettings(initial=32, minimum=8, maximum=96))
    for _ in range(60):
        for i in range(20):
            limit.on_call(0.5 if i % 5 == 0 else 0.1, limit.current)
    assert limit.current == 96


def test_a_steady_new_latency_becomes_normal_after_the_long_run_memory() -> None:
    limit = GradientLimit(LimitSettings(initial=64, minimum=8, maximum=96))
    windows(limit, 0.1, 5)
    shrunk = windows(limit, 0.25, 10)[-1]
    grown = windows(limit, 0.25, 80)[-1]
    assert grown > shrunk


def test_its_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="minimum <= initial <= maximum"):
        LimitSettings(initial=100, minimum=8, maximum=96)
    with pytest.raises(ValueError, match="tolerance >= 1"):
        LimitSettings(initial=10, minimum=8, maximum=96, tolerance=0.5)
