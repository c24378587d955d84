"""Faults injected into the next answers, for chaos tests of a client."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal["500", "503", "slow", "drop", "drop-after", "malformed", "licence"]
FAULT_KINDS: tuple[str, ...] = (
    "500",
    "503",
    "slow",
    "drop",
    "drop-after",
    "malformed",
    "licence",
)
Target = Literal["rest", "oauth", "any"]


@dataclass(frozen=True)
class Fault:
    """One injected answer.

    ``500``: INTERNAL_SERVER_ERROR, not executed. ``503``: QUERY_LIMIT_EXCEEDED, not executed.
    ``slow``: executed, answered after ``delay`` seconds. ``drop``: the connection is closed
    before anything is executed or sent. ``drop-after``: executed, then the connection is
    closed with no answer (the client cannot know the outcome). ``malformed``: a 200 answer
    whose body is not JSON, not executed. ``licence``: a 302 to the same host's
    ``/bitrix/coupon_activation.php``, as an on-premise portal whose licence expired answers.
    """

    kind: FaultKind
    target: Target = "rest"
    delay: float = 0.0


class FaultQueue:
    def __init__(self) -> None:
        self._queue: deque[Fault] = deque()

    def inject(self, fault: Fault, count: int) -> None:
        self._queue.extend([fault] * count)

    def take(self, target: Literal["rest", "oauth"]) -> Fault | None:
        for fault in self._queue:
            if fault.target in (target, "any"):
                self._queue.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)
