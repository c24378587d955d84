"""Bitrix24's operating-time budget, as the gateway sees it (docs/protocol.md §5.2).

Bitrix24 charges each answer's ``time.operating`` to its method and blocks a method that
passes its budget within 10 minutes. The budget is the portal's configuration:
:data:`~b24gate.bitrix.OPERATING_LIMIT` (480 s, the docs' example) until Bitrix24 blocks a
method below it, and from then on the figure it blocked at, for that portal. The gateway
keeps each method's latest figure and when its budget next frees up, from the ``time``
blocks of the answers it forwards; a method near the limit waits here until part of its
budget frees up (or gets 429 when that is further away than the queue's longest wait),
rather than being sent to be blocked. A packed request is billed to ``batch`` as a whole
(docs/protocol.md §5.2), so the scheduler asks :meth:`OperatingBudget.wait_for_room`
before it sends one.

One :class:`OperatingBudget` per gateway: the dispatcher holds calls with it, the scheduler
checks it when a queued call's turn comes, and the forwarder records what Bitrix24 says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..bitrix import OPERATING_LIMIT, BatchAnswer, parse_batch
from ..errors import OperationTimeLimit, RateLimited, RequestError
from ..store import Portal

# How close to the limit a method is held back.
OPERATING_MARGIN = 20.0
# How long a block lasts when Bitrix24 does not say (`operating_reset_at` is missing, as
# inside a batch).
OPERATING_WAIT = 60.0


class OperatingBudget:
    """Each method's operating time per portal, and the holds and 429s that follow."""

    def __init__(self, *, max_wait: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        """``max_wait``: the longest a call is held before it gets 429 instead."""
        self._max_wait = max_wait
        self._clock = clock
        # Each method's operating time and when its budget next frees up, from `time` blocks.
        self._reset_at: dict[tuple[int, str], float] = {}
        self._operating: dict[tuple[int, str], float] = {}
        # Each portal's budget, once Bitrix24 blocked a method below OPERATING_LIMIT.
        self._limit: dict[int, float] = {}

    def limit(self, portal: Portal) -> float:
        """The operating time a method of ``portal`` may spend in 10 minutes, as far as known."""
        return self._limit.get(portal.id, OPERATING_LIMIT)

    def usage(self, portal: Portal) -> dict[str, tuple[float, float | None]]:
        """Each method's latest operating time (seconds in Bitrix24's 10-minute window) and
        when part of it frees up, as this process last heard, by method."""
        now = self._clock()
        found: dict[str, tuple[float, float | None]] = {}
        for (portal_id, method), seconds in sorted(self._operating.items()):
            reset_at = self._reset_at.get((portal_id, method))
            if portal_id == portal.id and (reset_at is None or reset_at > now):
                found[method] = (seconds, reset_at)
        return found

    def wait_for_room(self, portal: Portal, method: str, seconds: float) -> float:
        """How long to wait before ``method`` may be charged ``seconds`` more without
        coming near its budget: 0 now, else until part of the budget frees up."""
        key = (portal.id, method.lower())
        if self._operating.get(key, 0.0) + seconds < self.limit(portal) - OPERATING_MARGIN:
            return 0.0
        wait = self._reset_at.get(key, 0.0) - self._clock()
        if wait <= 0:
            self._operating.pop(key, None)  # the figure predates the freed-up part
            return 0.0
        return wait

    def refusal(self, portal: Portal, method: str) -> RateLimited | None:
        """The 429 for ``method`` while it is at or near Bitrix24's operating-time budget
        (``retry_after``: until part of it frees up); None when it may run now."""
        wait = self.wait_for_room(portal, method, 0.0)
        if wait <= 0:
            return None
        return RateLimited(
            f"{method} is near Bitrix24's operating-time limit", wait, operation_time=True
        )

    async def hold(self, portal: Portal, method: str) -> None:
        """A method near Bitrix24's operating-time budget waits until part of it frees up,
        rather than being blocked (OPERATION_TIME_LIMIT) for every application."""
        refused = self.refusal(portal, method)
        if refused is None:
            return
        if refused.retry_after > self._max_wait:
            raise refused
        await asyncio.sleep(refused.retry_after)

    def blocked(self, portal: Portal, method: str, exc: OperationTimeLimit) -> RateLimited:
        """Bitrix24 blocked ``method`` for its operating time: the client's 429, and until
        the block lifts further calls to the method wait here (or get 429) rather than
        reaching Bitrix24."""
        key = (portal.id, method.lower())
        now = self._clock()
        reset_at = exc.reset_at or self._reset_at.get(key)
        if reset_at is None or reset_at <= now:
            reset_at = now + OPERATING_WAIT  # Bitrix24 did not say (a command of a batch)
        known = self._operating.get(key, 0.0)
        if OPERATING_MARGIN < known < self.limit(portal):
            # Blocked below the budget we assumed: this portal's is smaller.
            self._limit[portal.id] = known
        self._reset_at[key] = reset_at
        self._operating[key] = self.limit(portal)
        return RateLimited(
            f"Bitrix24 blocked {method} for its operating time",
            max(1.0, reset_at - now),
            operation_time=True,
        )

    def record(self, portal: Portal, method: str, body: Mapping[str, Any]) -> None:
        """An answer's ``time`` block: the operating time charged to ``method`` so far, and
        when part of its budget frees up."""
        timing = body.get("time")
        if not isinstance(timing, Mapping):
            return
        key = (portal.id, method.lower())
        operating = timing.get("operating")
        if (
            isinstance(operating, int | float)
            and self._operating.get(key, 0.0) > operating
            and self._reset_at.get(key, 0.0) > self._clock()
        ):
            # Answers of concurrent requests come back in any order: until the budget
            # frees up, the higher figure is the later one.
            return
        reset_at = timing.get("operating_reset_at")
        if isinstance(reset_at, int | float):
            self._reset_at[key] = float(reset_at)
        if isinstance(operating, int | float):
            self._operating[key] = float(operating)

    def blocked_commands(
        self, portal: Portal, params: Mapping[str, Any], body: Mapping[str, Any]
    ) -> dict[str, RateLimited]:
        """A ``batch`` sent as such (an export's pages, a client's own): a command refused
        because its own method is blocked blocks the method here too. Returns the 429 of
        each such command (:meth:`blocked`), by its key.

        The commands' ``time`` blocks are not charged to their methods: Bitrix24 bills the
        whole batch to ``batch``, whose figure the forwarder recorded from the request's
        own block, and shows that figure in each command's block (docs/protocol.md §5.2).
        """
        try:
            commands = parse_batch(params).commands
        except RequestError:  # never for a batch that was admitted
            return {}
        answer = BatchAnswer.of(body)
        refusals: dict[str, RateLimited] = {}
        for command in commands:
            error = answer.error(command.key)
            if isinstance(error, OperationTimeLimit):
                refusals[command.key] = self.blocked(portal, command.method, error)
        return refusals
