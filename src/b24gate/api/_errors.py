"""Errors as the JSON every client gets (DESIGN §4)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import orjson
from starlette.responses import Response

from .._logs import fields_text
from ..errors import B24GateError, BitrixError, RateLimited

call_log = logging.getLogger("b24gate.calls")


def dumps(body: Any) -> bytes:
    return orjson.dumps(body)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_body(exc: B24GateError) -> tuple[dict[str, Any], dict[str, str]]:
    body: dict[str, Any] = {
        "success": False,
        "error": exc.message,
        "code": exc.code,
        "status": exc.status,
    }
    headers: dict[str, str] = {}
    if isinstance(exc, BitrixError):
        body["bitrix"] = {"error": exc.error, "error_description": exc.description}
    if isinstance(exc, RateLimited):
        seconds = max(1, math.ceil(exc.retry_after))
        body["retry_after"] = seconds
        headers["Retry-After"] = str(seconds)
    elif exc.status == 503:
        body["retry_after"] = 1
        headers["Retry-After"] = "1"
    return body, headers


def error_response(exc: B24GateError) -> Response:
    body, headers = error_body(exc)
    return json_response(body, exc.status, headers)


def log_call(
    who: str,
    portal: str,
    method: str,
    status: int,
    started: float,
    upstream_ms: float,
    surface: str,
) -> None:
    """The one log line per call: who, where, what, how it ended and how long it took.

    Never the parameters, a token or a key. The client chose its name and the method, so
    each value is escaped (:func:`b24gate._logs.field`) and JSON lines get them as fields.
    """
    fields = {
        "client": who,
        "portal": portal,
        "method": method,
        "status": status,
        "total_ms": round((time.perf_counter() - started) * 1000, 1),
        "upstream_ms": round(upstream_ms, 1),
        "surface": surface,
    }
    call_log.info("%s", fields_text(fields), extra={"fields": fields})
