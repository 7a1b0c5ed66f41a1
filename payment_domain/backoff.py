"""Equal-jitter backoff: a guaranteed minimum wait (protects the PSP) plus spread (avoids herds)."""

from __future__ import annotations

from collections.abc import Callable

RandInt = Callable[[int, int], int]
"""`randint(a, b)` inclusive on both ends, e.g. `random.Random(seed).randint`."""


def equal_jitter_backoff_ms(attempt: int, *, base_ms: int, max_ms: int, randint: RandInt) -> int:
    """cap = min(max, base * 2^(attempt-1)); result uniform in [cap/2, cap] (integer ms)."""
    if attempt < 1:
        raise ValueError("attempt must be >= 1")
    if base_ms <= 0 or max_ms < base_ms:
        raise ValueError("need 0 < base_ms <= max_ms")
    cap = min(max_ms, base_ms * (1 << min(attempt - 1, 62)))
    half = cap // 2
    return half + randint(0, cap - half)
