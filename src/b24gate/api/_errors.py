"""Errors as answers (docs/design.md §7): one renderer for every surface.

:func:`error_response` turns an error into the HTTP answer. The surface picks only the
shape (:data:`Shape`): the status and body in its own words, the gateway's JSON on
``/api/v1`` (:func:`gateway_shape`), Bitrix24's on ``/rest/`` (``bitrix_shape`` in
:mod:`._rest`). What every error answer carries is decided here, once:
``Cache-Control: no-store``, and ``Retry-After`` when the client should wait
(:func:`retry_after`: a rate limit's wait, or a second for any other 503).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from starlette.responses import Response

from ..bitrix import with_command_errors
from ..errors import B24GateError, BitrixError, RateLimited

Shape = Callable[[B24GateError], tuple[int, Any]]
"""A surface's words for an error: the status it answers and the body."""


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
    """A ``batch`` answer whose per-command errors (``result.result_error``, a map or a
    list) hold only Bitrix24's two fields each."""
    return with_command_errors(body, bitrix_words)


def retry_after(exc: B24GateError, status: int) -> int | None:
    """The whole seconds a client waits before it tries again, when ``exc`` is answered
    with ``status``; ``None``: no advice.

    A rate limit's wait is rounded up (a client back a fraction early is only refused
    again), and is at least a second; any other 503 (Bitrix24, a lock or the OAuth server
    busy for a moment) says one second.
    """
    if isinstance(exc, RateLimited):
        return max(1, math.ceil(exc.retry_after))
    if status == 503:
        return 1
    return None


def error_body(exc: B24GateError) -> dict[str, Any]:
    """The gateway's own JSON for an error: ``/api/v1``'s answer, and each failed command's
    place in a bulk answer."""
    body: dict[str, Any] = {
        "success": False,
        "error": exc.message,
        "code": exc.code,
        "status": exc.status,
    }
    if isinstance(exc, BitrixError):
        body["bitrix"] = {"error": exc.error, "error_description": exc.description}
    wait = retry_after(exc, exc.status)
    if wait is not None:
        body["retry_after"] = wait
    return body


def gateway_shape(exc: B24GateError) -> tuple[int, Any]:
    """``/api/v1``'s :data:`Shape`: the error's own status, :func:`error_body`."""
    return exc.status, error_body(exc)


def error_response(exc: B24GateError, shape: Shape = gateway_shape) -> Response:
    """The one renderer: ``exc`` in the surface's ``shape``, with the headers every error
    answer carries."""
    status, body = shape(exc)
    wait = retry_after(exc, status)
    return json_response(body, status, None if wait is None else {"Retry-After": str(wait)})
