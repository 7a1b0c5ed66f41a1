"""How many PSP calls may run at once, following the PSP's latency instead of a fixed number.

Little's law ties the two: calls in flight = calls a second x their latency. A fixed cap that is right for a PSP
answering in 2 ms starves one answering in 150 ms (or letting a fifth of the calls wait out their 500 ms timeout):
the calls queue in front of idle capacity and time out there. A cap sized for the slow one lets a struggling PSP be
hit by everything at once. So the limit follows the latency as a gradient limit does (Netflix's concurrency-limits
`Gradient2Limit`): it grows, by about its square root per window, while calls are using at least half of it and the
window's mean latency stays within `tolerance` of the long-run mean; it shrinks in proportion when the latency
rises past that (the PSP is queueing our calls), at most by half per window, and always stays within
[`minimum`, `maximum`]. The long-run mean follows a steady change slowly (a PSP that got slower for good is the new
normal after a few hundred calls), and faster downwards once the window's mean is less than half of it.

Pure and clock-free: the pool gives it each call's duration and the calls in flight at the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LimitSettings:
    initial: int
    minimum: int
    maximum: int
    tolerance: float = 1.5
    window_calls: int = 20  # calls in a window before it moves the limit (fewer: the mean is noise)
    smoothing: float = 0.2  # how far a window moves the limit towards what it says
    long_run_calls: int = 600  # the long-run mean's memory, in calls

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.initial <= self.maximum:
            raise ValueError("need 1 <= minimum <= initial <= maximum")
        if self.tolerance < 1 or self.window_calls < 1 or not 0 < self.smoothing <= 1 or self.long_run_calls < 1:
            raise ValueError("need tolerance >= 1, window_calls >= 1, 0 < smoothing <= 1, long_run_calls >= 1")


class GradientLimit:
    def __init__(self, settings: LimitSettings) -> None:
        self._s = settings
        self._estimate = float(settings.initial)
        self._long_run: float | None = None
        self._window_sum = 0.0
        self._window_calls = 0
        self._window_busiest = 0

    @property
    def current(self) -> int:
        return int(self._estimate)

    def on_call(self, seconds: float, in_flight: int) -> bool:
        """A call ended after `seconds` with `in_flight` calls running (itself included); True if the limit moved."""
        self._window_sum += seconds
        self._window_calls += 1
        self._window_busiest = max(self._window_busiest, in_flight)
        if self._window_calls < self._s.window_calls:
            return False
        before = self.current
        self._update(self._window_sum / self._window_calls, self._window_busiest)
        self._window_sum, self._window_calls, self._window_busiest = 0.0, 0, 0
        return self.current != before

    def _update(self, short: float, busiest: int) -> None:
        if short <= 0:
            return
        long_run = self._long_run = short if self._long_run is None else self._long_run
        if long_run / short > 2:  # much faster now: forget the slow past sooner
            long_run = self._long_run = long_run * 0.95
        weight = self._s.window_calls / self._s.long_run_calls
        self._long_run = long_run + min(weight, 1.0) * (short - long_run)
        if busiest < self._estimate / 2:
            return  # the calls did not need the limit: no evidence that more would help, and nothing to cut
        gradient = max(0.5, min(1.0, self._s.tolerance * long_run / short))
        wanted = self._estimate * gradient + math.sqrt(self._estimate)
        estimate = self._estimate + self._s.smoothing * (wanted - self._estimate)
        self._estimate = min(max(estimate, float(self._s.minimum)), float(self._s.maximum))
