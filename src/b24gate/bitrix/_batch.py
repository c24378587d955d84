"""Reading Bitrix24's ``batch`` answers: PHP's empty maps, and per-command errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import BitrixError, OperationTimeLimit, QueryLimitExceeded

# Errors reported per command inside a batch carry no HTTP status; these are the statuses
# the same errors have on their own (docs/protocol.md §6). Method-level errors are 400.
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
    """A map of a batch answer. PHP writes one keyed 0..n-1 (a ``cmd`` sent as a list) as a
    list, and an empty one as ``[]``: the list's items are keyed "0".."n-1" here."""
    if isinstance(value, Mapping):
        return value
    if isinstance(value, list):
        return {str(i): item for i, item in enumerate(value)}
    return {}


def command_error(error: Any) -> BitrixError:
    """The error of one command of a batch (an entry of ``result_error``), typed as the
    same error of a call on its own is, for the limits: the command was not executed
    (``QUERY_LIMIT_EXCEEDED``), or its method is blocked (``OPERATION_TIME_LIMIT``, which
    inside a batch does not say until when)."""
    body = as_map(error)
    code = str(body.get("error", ""))
    description = str(body.get("error_description", ""))
    status = _STATUS.get(code, 400)
    if code == "QUERY_LIMIT_EXCEEDED":
        return QueryLimitExceeded(status, code, description, dict(body))
    if code == "OPERATION_TIME_LIMIT":
        return OperationTimeLimit(status, code, description, dict(body))
    return BitrixError(status, code, description, dict(body))
