"""Bitrix24's events: ``POST /bitrix/events/<secret>``, where Bitrix24 delivers the events
a portal is subscribed to online, and ``GET /api/v1/events``, where consumers read each
portal's log after their cursor (docs/events.md).

The handler's URL carries a secret of the portal's: a request without a known one is
refused before its body is read. A delivery is then checked against the portal
(``member_id``, ``application_token``), kept, and answered: Bitrix24 never repeats one.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from starlette.responses import Response

from ..core import Delivery, Gateway, event_view
from ..errors import EventRefused, RequestError
from ._body import read_body
from ._bulk import NDJSON
from ._errors import dumps, json_response
from ._frame import Frame, caller
from ._install import EVENT_BODY_LIMIT, parse_event

log = logging.getLogger("b24gate.events")

_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
PAGE_DEFAULT = 100
PAGE_MAX = 1000
WAIT_MAX = 60.0


def _number(request: Request, name: str, default: float, high: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RequestError(f"`{name}` must be a number") from None
    if not 0 <= value <= high:
        raise RequestError(f"`{name}` must be from 0 to {high:g}")
    return value


def _cursor(request: Request) -> int | None:
    raw = request.query_params.get("after")
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise RequestError("`after` must be a cursor: a whole number from 0")
    return int(raw)


def add_event_routes(app: FastAPI) -> None:
    @app.post("/bitrix/events/{secret}", include_in_schema=False)
    async def bitrix_events(request: Request, secret: str) -> Response:
        gw: Gateway = request.app.state.gateway
        with Frame(None, "/bitrix/events", log=log) as frame:
            if not _SECRET.fullmatch(secret):
                raise EventRefused()
            portal = await gw.events.portal_for(secret)
            raw = await read_body(request, min(EVENT_BODY_LIMIT, gw.settings.body_limit))
            fields = parse_event(raw, request.headers.get("content-type", ""))
            await gw.events.receive(portal, Delivery.parse(fields))
            return json_response({"result": "ok"})
        return frame.refusal

    @app.get(
        "/api/v1/events",
        openapi_extra={
            "security": [{"clientKey": []}],
            "parameters": [
                {"name": "portal", "in": "query", "schema": {"type": "string"}},
                {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": PAGE_MAX},
                },
                {
                    "name": "wait",
                    "in": "query",
                    "schema": {"type": "number", "minimum": 0, "maximum": WAIT_MAX},
                },
                {"name": "format", "in": "query", "schema": {"enum": ["json", "ndjson"]}},
            ],
        },
        responses={200: {"content": {NDJSON: {}}}},
    )
    async def read_events(request: Request) -> Response:
        """The portal's events after ``after`` (or the key's cursor), waiting up to ``wait``
        seconds for the first; passing ``after`` acknowledges every event up to it."""
        gw: Gateway = request.app.state.gateway
        with Frame("api", "/api/v1/events") as frame:
            who = await caller(request, gw)
            frame.who = who.client.name
            wants = request.query_params.get("format")
            if wants is None and NDJSON in request.headers.get("accept", ""):
                wants = "ndjson"
            if wants not in (None, "json", "ndjson"):
                raise RequestError("`format` must be json or ndjson")
            limit = int(_number(request, "limit", PAGE_DEFAULT, PAGE_MAX)) or 1
            page = await gw.events.page(
                who.client,
                request.query_params.get("portal"),
                address=who.address,
                after=_cursor(request),
                limit=limit,
                wait=_number(request, "wait", 0.0, WAIT_MAX),
            )
            frame.status = 200
            headers = {"Cache-Control": "no-store", "X-Next-Cursor": str(page.next)}
            if wants == "ndjson":
                lines = b"".join(dumps(event_view(e)) + b"\n" for e in page.events)
                return Response(lines, media_type=NDJSON, headers=headers)
            return json_response(
                {
                    "success": True,
                    "portal": page.portal,
                    "events": [event_view(e) for e in page.events],
                    "next": page.next,
                    "missed": page.missed,
                },
                headers=headers,
            )
        return frame.refusal
