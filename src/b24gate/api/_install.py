"""``POST /bitrix/install``: where Bitrix24 sends the local app's installation callback and
its ``ONAPPINSTALL`` / ``ONAPPUNINSTALL`` events.

Bitrix24 posts a form with PHP brackets (``auth[access_token]=…``); the same fields as a
JSON object are accepted too. The body is checked in :mod:`b24gate.core._install`;
Bitrix24 ignores the answer, which is ``{"result": "ok"}`` or the gateway's JSON error.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from .._php import parse_php_query
from ..core import Gateway
from ..errors import B24GateError, RequestError
from ._body import read_body
from ._errors import error_response, json_response

log = logging.getLogger("b24gate.install")

# An event is a few hundred bytes; anyone can post here, so the limit is small.
EVENT_BODY_LIMIT = 64 * 1024
_BOM = b"\xef\xbb\xbf"


def parse_event(raw: bytes, content_type: str) -> dict[str, Any]:
    """The event's fields, nested: a JSON object, or a form with PHP brackets."""
    try:
        text = raw.removeprefix(_BOM).decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("the body is not UTF-8", code="invalid_json") from None
    if content_type.split(";")[0].strip().lower() == "application/json":
        try:
            body = json.loads(text)
        except ValueError:
            raise RequestError("the body is not valid JSON", code="invalid_json") from None
        if not isinstance(body, dict):
            raise RequestError("the body must be a JSON object", code="invalid_json")
        return body
    return parse_php_query(text)


def add_install_routes(app: FastAPI) -> None:
    @app.post("/bitrix/install", include_in_schema=False)
    async def bitrix_install(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        try:
            raw = await read_body(request, min(EVENT_BODY_LIMIT, gw.settings.body_limit))
            fields = parse_event(raw, request.headers.get("content-type", ""))
            await gw.installer.handle(fields)
        except B24GateError as exc:
            return error_response(exc)
        except Exception:
            log.exception("unexpected error in /bitrix/install")
            return error_response(B24GateError("internal error; see the gateway's log"))
        return json_response({"result": "ok"})
