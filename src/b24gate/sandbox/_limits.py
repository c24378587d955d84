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


class OperatingBudget:
    """Per-method sums of execution time over a sliding 10-minute window."""

    def __init__(self, clock: Clock, limit: float) -> None:
        self._clock = clock
        self.limit = limit
        self._spent: dict[str, deque[tuple[float, float]]] = {}

    def _window(self, method: str) -> deque[tuple[float, float]]:
        entries = self._spent.setdefault(method, deque())
        horizon = self._clock.now() - OPERATING_WINDOW
        while entries and entries[0][0] <= horizon:
            entries.popleft()
        return entries

    def blocked(self, method: str) -> bool:
        return sum(cost for _, cost in self._window(method)) > self.limit

    def charge(self, method: str, cost: float) -> tuple[float, int]:
        """Record ``cost`` seconds; return the method's sum in the window and when part frees."""
        entries = self._window(method)
        entries.append((self._clock.now(), cost))
        total = sum(c for _, c in entries)
        reset_at = int(entries[0][0] + OPERATING_WINDOW)
        return total, reset_at

    def reset(self) -> None:
        self._spent.clear()
