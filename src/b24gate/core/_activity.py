"""What clients' calls did, for the admin page: the refused and failed calls and each
client's calls and errors per hour, counted off the hot path.

The handler frame (``api/_frame.py``) tells :meth:`Activity.seen` how each call ended; that
costs a dictionary update and, for a refusal, an append to a bounded buffer. Every second
:meth:`Activity.run` writes what gathered in one transaction (:meth:`Activity.flush`), and
now and then prunes the table to :data:`KEEP_FOR` and :data:`KEEP_ROWS`. A flood of
refusals therefore costs at most :data:`BUFFER` rows a second, whatever its rate: what
overflows is counted (:attr:`Activity.dropped`), not kept. Nothing kept holds a key, a
token or a parameter.

The counts are per process and summed in the store, so the page shows every replica's
calls, up to the last second of each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from contextvars import ContextVar
from dataclasses import replace
from typing import Final

from ..store import HourUsage, Refusal, Store
from ._access import mask_keys

log = logging.getLogger("b24gate")

# How often what was counted is written, and how many refusals a process keeps between two
# writes (more are counted in `dropped`, not kept).
FLUSH_EVERY: Final = 1.0
BUFFER: Final = 1000
# How long, and how many, refused calls are kept; how long the hourly counts are kept.
KEEP_FOR: Final = 7 * 24 * 3600.0
KEEP_ROWS: Final = 10_000
KEEP_HOURS_FOR: Final = 31 * 24 * 3600.0
PRUNE_EVERY: Final = 60.0

# The portal the call being served is about: the name (or domain) the client gave, then the
# portal it resolved to. The dispatcher sets it; the frame reads it for a refusal's row.
CALL_PORTAL: ContextVar[str | None] = ContextVar("b24gate_call_portal", default=None)


def _masked(text: str | None) -> str | None:
    return None if text is None else mask_keys(text)


def _keyless(refusal: Refusal) -> Refusal:
    """``refusal`` with any client key in its method or portal masked (done when written,
    a buffer's worth a second at most, not on the call's path)."""
    return replace(refusal, method=_masked(refusal.method), portal=_masked(refusal.portal))


class Activity:
    """One process's counts of its clients' calls, and their writer."""

    def __init__(self, store: Store, *, buffer: int = BUFFER) -> None:
        """``buffer``: the refusals kept between two writes (:data:`BUFFER`)."""
        self._store = store
        self._buffer = buffer
        # Refusals of known clients, and of calls with no valid key (anyone's): a buffer
        # each, so that a flood of the second cannot push the first out.
        self._refusals: deque[Refusal] = deque(maxlen=buffer)
        self._strangers: deque[Refusal] = deque(maxlen=buffer)
        # (client id, hour) → [calls, errors, last use]
        self._usage: dict[tuple[int, int], list[float]] = {}
        self._lock = asyncio.Lock()
        self._pruned_at = 0.0
        self.dropped = 0

    def seen(
        self,
        *,
        surface: str,
        status: int,
        code: str | None,
        client_id: int | None,
        client: str | None,
        portal: str | None,
        method: str | None,
        address: str | None,
    ) -> None:
        """A call ended with ``status``; ``code`` is its error's code when it failed."""
        now = time.time()
        failed = status >= 400
        if client_id:
            counts = self._usage.get((client_id, int(now // 3600)))
            if counts is None:
                counts = self._usage[(client_id, int(now // 3600))] = [0, 0, now]
            counts[0] += 1
            counts[1] += failed
            counts[2] = now
        if failed and code is not None:
            kept = self._refusals if client is not None else self._strangers
            if len(kept) == self._buffer:
                self.dropped += 1
            kept.append(Refusal(now, code, status, surface, client, portal, method, address))

    async def flush(self) -> None:
        """Write what was counted since the last flush (the admin page calls it too, so
        that it shows this process's last second)."""
        async with self._lock:
            refusals = sorted([*self._refusals, *self._strangers], key=lambda r: r.at)
            self._refusals.clear()
            self._strangers.clear()
            usage, self._usage = self._usage, {}
            if not refusals and not usage:
                return
            counts = {k: (int(v[0]), int(v[1]), v[2]) for k, v in usage.items()}
            await self._store.activity.add([_keyless(r) for r in refusals], counts)

    async def prune(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        await self._store.activity.prune(
            before=now - KEEP_FOR, keep=KEEP_ROWS, hours_before=now - KEEP_HOURS_FOR
        )
        self._pruned_at = now

    async def run(self) -> None:
        """Flush every :data:`FLUSH_EVERY` seconds and prune every :data:`PRUNE_EVERY`,
        until cancelled; a last flush then."""
        try:
            while True:
                await asyncio.sleep(FLUSH_EVERY)
                try:
                    await self.flush()
                    if time.time() - self._pruned_at > PRUNE_EVERY:
                        await self.prune()
                except Exception:  # a failed write must not end the loop; counts are lost
                    log.exception("writing the calls' activity failed")
        finally:
            with contextlib.suppress(Exception):
                await self.flush()

    async def usage(self, hours: int) -> list[HourUsage]:
        """Every client's counts of the last ``hours`` hours (this one included)."""
        await self.flush()
        return await self._store.activity.usage(int(time.time() // 3600) - hours + 1)
