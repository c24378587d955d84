"""Which error of :mod:`b24gate.errors` an error of Bitrix24 is: the one classifier, for a
call's answer and for a command's entry in a ``batch``'s ``result_error`` alike.

Bitrix24's codes are compared case-insensitively, as Bitrix24's own SDKs compare them
(docs/protocol.md §1.5, §6): its tables spell ``expired_token`` in lower case and
``QUERY_LIMIT_EXCEEDED`` in upper case, and a portal may answer either spelling. The
class is what retry policy keys off; nothing else looks at the code's text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ..errors import (
    BitrixError,
    CredentialsRejected,
    OperationTimeLimit,
    QueryLimitExceeded,
    TokenRejected,
)

# The statuses Bitrix24 gives these errors on their own (docs/protocol.md §6), for an error
# that comes without one: a command's error inside a batch. Anything else is a method's own
# error, 400. Keys are upper-cased codes.
STATUS_OF: Final[Mapping[str, int]] = {
    "EXPIRED_TOKEN": 401,
    "INVALID_TOKEN": 401,
    "NO_AUTH_FOUND": 401,
    "INVALID_CREDENTIALS": 401,
    "INSUFFICIENT_SCOPE": 401,
    "ACCESS_DENIED": 403,
    "ERROR_METHOD_NOT_FOUND": 404,
    "OPERATION_TIME_LIMIT": 429,
    "INTERNAL_SERVER_ERROR": 500,
    "QUERY_LIMIT_EXCEEDED": 503,
}

# The codes that have a class of their own; every other code is a plain BitrixError.
_CLASSES: Final[Mapping[str, type[BitrixError]]] = {
    "EXPIRED_TOKEN": TokenRejected,  # the access token is over an hour old
    "INVALID_TOKEN": TokenRejected,  # unknown or revoked
    "INVALID_CREDENTIALS": CredentialsRejected,  # an incoming webhook's user and code
    "QUERY_LIMIT_EXCEEDED": QueryLimitExceeded,  # not executed
    "OPERATION_TIME_LIMIT": OperationTimeLimit,  # the method is blocked for a while
}


def _reset_at(body: Any) -> float | None:
    """``time.operating_reset_at`` of an OPERATION_TIME_LIMIT answer (a blocked command
    inside a batch has none)."""
    timing = body.get("time") if isinstance(body, Mapping) else None
    if not isinstance(timing, Mapping):
        return None
    value = timing.get("operating_reset_at")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def classify(status: int | None, error: str, description: str, body: Any = None) -> BitrixError:
    """The error Bitrix24 answered: ``error`` and ``description`` are its two fields (the
    caller has taken them out of the answer's shape and scrubbed them), ``body`` the whole
    answer, ``status`` the HTTP status, or None for a command inside a batch, which has
    none: then the status the same error has on its own."""
    key = error.upper()
    if status is None:
        status = STATUS_OF.get(key, 400)
    cls = _CLASSES.get(key, BitrixError)
    if cls is OperationTimeLimit:
        return OperationTimeLimit(status, error, description, body, reset_at=_reset_at(body))
    return cls(status, error, description, body)
