"""Reading Bitrix24's ``batch`` answers: PHP's empty maps, and per-command errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import BitrixError

# Errors reported per command inside a batch carry no HTTP status; these are the statuses
# the same errors have on their own (protocol file §6). Method-level errors are 400.
_STATUS = {
    "expired_token": 401,
    "invalid_token": 401,
    "NO_AUTH_FOUND": 401,
    "INVALID_CREDENTIALS": 401,
    "insufficient_scope": 401,
    "ACCESS_DENIED": 403,
    "ERROR_METHOD_NOT_FOUND": 404,
    "OPERATION_TIME_LIMIT": 429,
    "INTERNAL_SERVER_ERROR": 500,
    "QUERY_LIMIT_EXCEEDED": 503,
}


def as_map(value: Any) -> Mapping[str, Any]:
    """A map of a batch answer; PHP writes an empty one as ``[]``."""
    return value if isinstance(value, Mapping) else {}


def command_error(error: Any) -> BitrixError:
    """The error of one command of a batch (an entry of ``result_error``)."""
    body = as_map(error)
    code = str(body.get("error", ""))
    description = str(body.get("error_description", ""))
    return BitrixError(_STATUS.get(code, 400), code, description, dict(body))
