"""Errors as the JSON every client gets (docs/design.md §4), and the one log line per call."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from .._logs import fields_text
from ..errors import B24GateError, BitrixError, RateLimited

call_log = logging.getLogger("b24gate.calls")


def dumps(body: Any) -> bytes:
    return orjson.dumps(body)


# Answers carry portal data and the gateway's own errors: no cache on the way keeps them.
NO_STORE = {"Cache-Control": "no-store"}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        dumps(body),
        status_code=status,
        media_type="application/json",
        headers={**NO_STORE, **(headers or {})},
    )


def bitrix_words(error: Any) -> dict[str, str]:
    """Of an error Bitrix24 answered, only its ``error`` and ``error_description``: other
    fields (a portal's debug output, whatever a future version adds) are not the client's."""
    body = error if isinstance(error, Mapping) else {}
    return {
        "error": str(body.get("error") or ""),
        "error_description": str(body.get("error_description") or ""),
    }


def reduced_batch(body: dict[str, Any]) -> dict[str, Any]:
    """A ``batch`` answer whose per-command errors (``result.result_error``) hold only
    Bitrix24's two fields each."""
    outer = body.get("result")
    if not isinstance(outer, dict) or not isinstance(outer.get("result_error"), Mapping):
        return body
    errors = {key: bitrix_words(error) for key, error in outer["result_error"].items()}
    return {**body, "result": {**outer, "result_error": errors}}


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
