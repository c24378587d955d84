"""A slow portal: the server time a request, a method and a list page cost, and the cap on
one request's time (60 s on cloud portals since August 2026, docs/protocol.md §9).

The time is waited for real with ``asyncio.sleep``, so requests in flight overlap as they do
on a real server, and it is server work: it shows in the ``time`` block and is billed as
operating time. What the cap cuts off is decided by the modeled time (the latencies plus the
time really spent in Python), not by how late the event loop woke up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass
class Latency:
    """Seconds of server work added; all zero (off) by default.

    ``request`` once per REST request (a batch is one), ``command`` per method run (a call
    alone or each command of a batch), ``page`` in addition per page of a list method.
    """

    request: float = 0.0
    command: float = 0.0
    page: float = 0.0

    def of_method(self, method: str) -> float:
        """One method's work; a list method's call is one page (``crm.deal.list``, ...)."""
        return self.command + (self.page if method.endswith(".list") else 0.0)


class RequestCutOff(Exception):
    """The request's modeled time reached the cap: it stopped there, mid-work."""


class RequestTimer:
    """One request's server time so far against the cap (``limit`` 0 = no cap), and the
    synthetic operating time (``--method-cost``) its methods add to the bill."""

    def __init__(self, started: float, limit: float) -> None:
        self.started = started
        self.limit = limit
        self.elapsed = 0.0
        self.synthetic = 0.0

    async def work(self, seconds: float) -> None:
        """Spend ``seconds`` of server time; one that would pass the cap waits only up to
        it and raises :class:`RequestCutOff`, so what it was for never happens."""
        if self.limit > 0 and self.elapsed + seconds > self.limit:
            await asyncio.sleep(max(0.0, self.limit - self.elapsed))
            self.elapsed = max(self.elapsed, self.limit)
            raise RequestCutOff
        if seconds > 0:
            await asyncio.sleep(seconds)
        self.elapsed += seconds

    @property
    def billed(self) -> float:
        """The operating time this request costs its method."""
        return self.elapsed + self.synthetic
