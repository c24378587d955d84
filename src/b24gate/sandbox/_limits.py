"""Bitrix24's two limits: the per-portal leaky bucket and the per-method operating time."""

from __future__ import annotations

from collections import deque

from ._clock import Clock
from ._config import OPERATING_WINDOW


class LeakyBucket:
    """Every request adds 1; the level drains at ``rate`` per second.

    A request that finds ``burst`` or more in the bucket is refused and adds nothing
    (Bitrix24 answers it 503 ``QUERY_LIMIT_EXCEEDED`` without executing it).
    ``rate == 0`` turns the limit off.
    """

    def __init__(self, clock: Clock, rate: float, burst: int) -> None:
        self._clock = clock
        self.rate = rate
        self.burst = burst
        self._level = 0.0
        self._at = clock.now()

    def level(self) -> float:
        now = self._clock.now()
        if now > self._at:
            self._level = max(0.0, self._level - (now - self._at) * self.rate)
            self._at = now
        return self._level

    def try_acquire(self) -> bool:
        if self.rate <= 0:
            return True
        if self.level() >= self.burst:
            return False
        self._level += 1.0
        return True

    def reset(self) -> None:
        self._level = 0.0
        self._at = self._clock.now()


class _MethodWindow:
    """One method's charges in the window, with their running sum."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, float]] = deque()
        self.total = 0.0


class OperatingBudget:
    """Per-method sums of execution time over a sliding 10-minute window."""

    def __init__(self, clock: Clock, limit: float) -> None:
        self._clock = clock
        self.limit = limit
        self._spent: dict[str, _MethodWindow] = {}

    def _window(self, method: str) -> _MethodWindow:
        window = self._spent.get(method)
        if window is None:
            window = self._spent[method] = _MethodWindow()
        horizon = self._clock.now() - OPERATING_WINDOW
        entries = window.entries
        while entries and entries[0][0] <= horizon:
            window.total -= entries.popleft()[1]
        if not entries:
            window.total = 0.0  # no float drift left behind
        return window

    def blocked(self, method: str) -> bool:
        return self._window(method).total > self.limit

    def charge(self, method: str, cost: float) -> tuple[float, int]:
        """Record ``cost`` seconds; return the method's sum in the window and when part frees."""
        window = self._window(method)
        now = self._clock.now()
        entries = window.entries
        # Charges within one second share an entry, so a window holds at most 600 of them.
        if entries and int(entries[-1][0]) == int(now):
            entries[-1] = (entries[-1][0], entries[-1][1] + cost)
        else:
            entries.append((now, cost))
        window.total += cost
        return self.standing(method)

    def standing(self, method: str) -> tuple[float, int]:
        """The method's sum in the window and when part of it frees (a window with nothing
        in it would start now)."""
        window = self._window(method)
        first = window.entries[0][0] if window.entries else self._clock.now()
        return window.total, int(first + OPERATING_WINDOW)

    def reset(self) -> None:
        self._spent.clear()
