"""The arithmetic of `make bench-e2e`, kept free of I/O so it can be unit-tested: k6's per-request lines, windows,
per-second buckets, percentiles, trends and CPU per order.

Every time here is a Unix timestamp in seconds (float); a bucket `i` of a window is `[start + i, start + i + 1)`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

ACCEPTED = "accepted"
SHED = "shed"
ERROR = "error"

SHED_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Request:
    """One POST /payments as k6 saw it: when it was sent, the answer (0: timeout or no connection), how long it
    took, and how many payment orders its body carried."""

    started: float
    status: int
    duration_ms: float
    orders: int

    @property
    def outcome(self) -> str:
        return outcome_of(self.status)


def outcome_of(status: int) -> str:
    """202 is accepted; 429 and 503 are load shedding (the API said "not now"); anything else is an error."""
    if status == 202:
        return ACCEPTED
    if status in SHED_STATUSES:
        return SHED
    return ERROR


def parse_k6_line(line: str) -> Request | None:
    """`<epoch ms> <status> <duration ms> <orders>`, as tests/benchmarks/k6/e2e_rate.js logs each request; any
    other line (k6's own warnings) is None."""
    parts = line.split()
    if len(parts) != 4:
        return None
    try:
        return Request(int(parts[0]) / 1000.0, int(parts[1]), float(parts[2]), int(parts[3]))
    except ValueError:
        return None


@dataclass(frozen=True)
class Window:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 0.0)

    def __contains__(self, moment: object) -> bool:
        return isinstance(moment, int | float) and self.start <= moment < self.end


@dataclass(frozen=True)
class Order:
    """One payment order from the database: when it was created and, once final, when it became so."""

    created: float
    final: float | None
    waited: bool = False
    """It took a retry or a status check: part of its create→final is the scenario's designed waiting (backoff,
    status-check delays), not queueing."""

    @property
    def latency(self) -> float:
        """Seconds from create to final; infinite while it is not final (it counts against every percentile)."""
        return math.inf if self.final is None else self.final - self.created


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks (numpy's default); NaN when
    empty. Infinite values (orders never final) sort last and make any percentile that reaches them infinite."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    if ordered[high] == math.inf:
        return math.inf if rank > low or ordered[low] == math.inf else ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def bucket_counts(
    times: Iterable[float], start: float, seconds: int, weights: Iterable[int] | None = None
) -> list[int]:
    """How many `times` fall in each one-second bucket from `start` (optionally each counting `weights`);
    times outside the `seconds` buckets are ignored."""
    counts = [0] * seconds
    weight_list = list(weights) if weights is not None else None
    for i, moment in enumerate(times):
        index = math.floor(moment - start)
        if 0 <= index < seconds:
            counts[index] += weight_list[i] if weight_list is not None else 1
    return counts


def bucket_percentiles(points: Iterable[tuple[float, float]], start: float, seconds: int, q: float) -> list[float]:
    """The q-th percentile of the values whose time falls in each one-second bucket; NaN for an empty bucket."""
    grouped: list[list[float]] = [[] for _ in range(seconds)]
    for moment, value in points:
        index = math.floor(moment - start)
        if 0 <= index < seconds:
            grouped[index].append(value)
    return [percentile(values, q) for values in grouped]


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (units of y per unit of x); 0 with fewer than two distinct xs."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    n = len(xs)
    if n < 2:
        return 0.0
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def per_second(count: float, window: Window) -> float:
    return count / window.seconds if window.seconds > 0 else 0.0


def cpu_ms_per_order(cpu_seconds: float, orders: int) -> float | None:
    """CPU milliseconds a part spent per order settled in the same window; None when nothing settled."""
    return cpu_seconds * 1000.0 / orders if orders > 0 else None


def cpu_seconds_between(cumulative: Sequence[tuple[float, float]], window: Window) -> float:
    """CPU seconds used within `window` from (time, cumulative CPU seconds) samples: the last sample at or before
    the window's end minus the last at or before its start (the first sample when the window starts earlier)."""
    if not cumulative:
        return 0.0

    def at(moment: float) -> float:
        value = cumulative[0][1]
        for sampled, seconds in cumulative:
            if sampled > moment:
                break
            value = seconds
        return value

    return max(at(window.end) - at(window.start), 0.0)


def cpu_rates(cumulative: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Cores in use between consecutive (time, cumulative CPU seconds) samples, at the later sample's time."""
    return [(t1, max(c1 - c0, 0.0) / (t1 - t0)) for (t0, c0), (t1, c1) in itertools.pairwise(cumulative) if t1 > t0]


def consumer_lag(
    committed: Mapping[str, Mapping[tuple[str, int], int]],
    end_offsets: Mapping[tuple[str, int], int],
) -> dict[str, int]:
    """Per consumer group: over every partition of every topic the group has committed on, the end offset minus
    the committed one. A partition of such a topic with no commit yet counts from offset 0 (the group reads its
    topics from the beginning of a fresh broker); a negative committed offset means none."""
    lag: dict[str, int] = {}
    for group, offsets in committed.items():
        topics = {topic for topic, _ in offsets}
        total = 0
        for (topic, partition), end in end_offsets.items():
            if topic in topics:
                total += max(end - max(offsets.get((topic, partition), 0), 0), 0)
        lag[group] = total
    return lag
