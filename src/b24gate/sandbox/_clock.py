"""The one clock every part of the sandbox reads, so tests move time instead of sleeping."""

from __future__ import annotations

import time


class Clock:
    """Wall-clock time plus an offset that tests (or the control API) can advance.

    A frozen clock stands still until advanced, which makes bucket timing exact in tests.
    """

    def __init__(self, *, frozen_at: float | None = None) -> None:
        self._offset = 0.0
        self._frozen_at = frozen_at

    def now(self) -> float:
        if self._frozen_at is not None:
            return self._frozen_at
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        if self._frozen_at is not None:
            self._frozen_at += seconds
        else:
            self._offset += seconds

    def freeze(self) -> None:
        self._frozen_at = self.now()

    def unfreeze(self) -> None:
        if self._frozen_at is not None:
            self._offset = self._frozen_at - time.time()
            self._frozen_at = None

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None
