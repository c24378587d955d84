"""Bitrix24 method names: which are well-formed, and which only read (safe to retry).

A read may be sent again after a timeout; a write may not, because Bitrix24 may have done
it already. When in doubt a method counts as a write: the cost is one retry not taken.
"""

from __future__ import annotations

import re

METHOD_NAME = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
# The longest name taken: Bitrix24's longest run to some 60 characters; the store keeps 255.
MAX_METHOD_LENGTH = 255

# Last segments of methods that only read (compared lower-cased: Bitrix24 method names are
# case-insensitive). Exact matches only: `getExternalLink` starts with "get" and creates a link.
READ_VERBS = frozenset(
    {"count", "current", "fields", "get", "getfields", "getlist", "info", "list", "search", "time"}
)
# Whole methods that read although their last segment is not a verb above.
READ_METHODS = frozenset({"app.info", "methods", "profile", "scope", "server.time"})


# Last segments that are no part of a method: Bitrix24's REST entry point takes a final
# `.json` or `.xml` (any case) as the answer's format and runs what comes before it, so
# `batch.json` runs `batch` and `user.get.JSON` runs `user.get`. A name ending so would be
# checked as one method and run as another.
_FORMATS = frozenset({"json", "xml"})


def valid_method(name: str) -> bool:
    """True when ``name`` is a method name docs/design.md §5.2 allows (no ``/``, ``?``,
    ``..``, spaces, at most :data:`MAX_METHOD_LENGTH` characters) and exactly the method
    Bitrix24 runs for it (no last segment ``json`` or ``xml``, in any case: Bitrix24 would
    drop it)."""
    # fullmatch, not match: "$" also matches before a trailing newline.
    if (
        not isinstance(name, str)
        or len(name) > MAX_METHOD_LENGTH
        or METHOD_NAME.fullmatch(name) is None
    ):
        return False
    return name.rsplit(".", 1)[-1].lower() not in _FORMATS


def method_reads(method: str) -> bool:
    """True when ``method`` only reads; a ``batch`` reads as its commands do
    (:func:`~._commands.is_read`)."""
    if not valid_method(method):
        return False
    lowered = method.lower()
    return lowered in READ_METHODS or lowered.rsplit(".", 1)[-1] in READ_VERBS
