"""Bitrix24 method names: which are well-formed, and which only read (safe to retry).

A read may be sent again after a timeout; a write may not, because Bitrix24 may have done
it already. When in doubt a method counts as a write: the cost is one retry not taken.
"""

from __future__ import annotations

import re

METHOD_NAME = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")

# Last segments of methods that only read (compared lower-cased: Bitrix24 method names are
# case-insensitive). Exact matches only: `getExternalLink` starts with "get" and creates a link.
READ_VERBS = frozenset(
    {"count", "current", "fields", "get", "getfields", "getlist", "info", "list", "search", "time"}
)
# Whole methods that read although their last segment is not a verb above.
READ_METHODS = frozenset({"app.info", "methods", "profile", "scope", "server.time"})


def valid_method(name: str) -> bool:
    """True when ``name`` is a method name docs/design.md §5.2 allows (no ``/``, ``?``,
    ``..``, spaces)."""
    # fullmatch, not match: "$" also matches before a trailing newline.
    return isinstance(name, str) and METHOD_NAME.fullmatch(name) is not None


def method_reads(method: str) -> bool:
    """True when ``method`` only reads; a ``batch`` reads as its commands do
    (:func:`~._commands.is_read`)."""
    if not valid_method(method):
        return False
    lowered = method.lower()
    return lowered in READ_METHODS or lowered.rsplit(".", 1)[-1] in READ_VERBS
