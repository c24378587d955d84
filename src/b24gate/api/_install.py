"""``POST /bitrix/install``: where Bitrix24 sends the app's installation callback and its
``ONAPPINSTALL`` / ``ONAPPUNINSTALL`` events.

Bitrix24 posts a form with PHP brackets (``auth[access_token]=…``); the same fields as a
JSON object are accepted too. The body is checked in :mod:`b24gate.core._install`;
Bitrix24 ignores the answer, which is ``{"result": "ok"}`` or the gateway's JSON error.
Anyone can post here, so each source address gets a small budget of events (a request
with no address, over a unix socket, is not counted), and the body is small and parsed
with PHP's own caps before anything else happens.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from .._json import read_json, without_bom
from .._logs import field
from .._php import parse_php_query
from ..core import Gateway, address_bucket
from ..errors import InvalidJson, RateLimited
from ._body import read_body
from ._errors import json_response
from ._frame import Frame, peer

log = logging.getLogger("b24gate.install")

# An event is a few hundred bytes (a long scope list included); anyone can post here.
EVENT_BODY_LIMIT = 16 * 1024
# Per source address: a burst of 20 events, then one every 3 s. A portal sends one event
# per install or uninstall, so this only ever holds back someone posting in a loop.
EVENT_BURST = 20
EVENTS_PER_MINUTE = 20.0
# How many addresses are remembered; past it the least recently seen is forgotten first.
TRACKED_PEERS = 10_000


class PeerBudget:
    """A token bucket per source address, in this process's memory.

    An IPv6 address counts as its /64, which one host usually holds whole. Memory is
    bounded: at most ``peers`` addresses, the least recently seen dropped first (a dropped
    address starts again with a full bucket, which is what a quiet one has).
    """

    def __init__(
        self,
        burst: int = EVENT_BURST,
        per_minute: float = EVENTS_PER_MINUTE,
        peers: int = TRACKED_PEERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = float(burst)
        self._rate = per_minute / 60.0
        self._peers = peers
        self._clock = clock
        # address -> (tokens left, when counted, whether its refusal was logged)
        self._buckets: OrderedDict[str, tuple[float, float, bool]] = OrderedDict()

    def take(self, peer: str) -> float:
        """Spend one event of ``peer``'s budget: 0.0, or the seconds until one is free."""
        key = address_bucket(peer)
        now = self._clock()
        tokens, since, logged = self._buckets.pop(key, (self._burst, now, False))
        tokens = min(self._burst, tokens + (now - since) * self._rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens, logged = tokens - 1.0, False
        else:
            wait = (1.0 - tokens) / self._rate
            if not logged:  # once per flood, not once per request: the log is no target
                log.warning("install events from %s are over their budget; refused", field(key))
                logged = True
        self._buckets[key] = (tokens, now, logged)
        while len(self._buckets) > self._peers:
            self._buckets.popitem(last=False)
        return wait


def parse_event(raw: bytes, content_type: str) -> dict[str, Any]:
    """The event's fields, nested: a JSON object, or a form with PHP brackets."""
    try:
        text = without_bom(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJson("the body is not UTF-8") from None
    if content_type.split(";")[0].strip().lower() == "application/json":
        try:
            body = read_json(raw)
        except ValueError:  # deep nesting is as malformed as bad syntax
            raise InvalidJson("the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise InvalidJson("the body must be a JSON object")
        return body
    return parse_php_query(text)


def add_install_routes(app: FastAPI) -> None:
    budget = PeerBudget()

    @app.post("/bitrix/install", include_in_schema=False)
    async def bitrix_install(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        # No call line: an event is no client's call (the installer logs what it did).
        with Frame(None, "/bitrix/install", log=log) as frame:
            source = peer(request, gw)
            # No address at all (a unix socket: the proxy in front is the operator's own) is
            # no sender to tell apart; one bucket for all of them would let any one sender
            # hold back every genuine event, so they are not counted per address.
            wait = budget.take(source) if source else 0.0
            if wait > 0:
                raise RateLimited("too many events from this address; retry later", wait)
            raw = await read_body(request, min(EVENT_BODY_LIMIT, gw.settings.body_limit))
            fields = parse_event(raw, request.headers.get("content-type", ""))
            await gw.installer.handle(fields)
            return json_response({"result": "ok"})
        return frame.refusal
