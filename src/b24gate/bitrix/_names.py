"""Bitrix24 method names: which are well-formed, and which only read (safe to retry).

A read may be sent again after a timeout; a write may not, because Bitrix24 may have done
it already. When in doubt a method counts as a write: the cost is one retry not taken.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

METHOD_NAME = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")

# Last segments of methods that only read (compared lower-cased: Bitrix24 method names are
# case-insensitive). Exact matches only: `getExternalLink` starts with "get" and creates a link.
READ_VERBS = frozenset(
    {"count", "current", "fields", "get", "getfields", "getlist", "info", "list", "search", "time"}
)
# Whole methods that read although their last segment is not a verb above.
READ_METHODS = frozenset({"app.info", "methods", "profile", "scope", "server.time"})


def valid_method(name: str) -> bool:
    """True when ``name`` is a method name DESIGN §5 allows (no ``/``, ``?``, ``..``, spaces)."""
    # fullmatch, not match: "$" also matches before a trailing newline.
    return isinstance(name, str) and METHOD_NAME.fullmatch(name) is not None


def _method_reads(method: str) -> bool:
    if not valid_method(method):
        return False
    lowered = method.lower()
    return lowered in READ_METHODS or lowered.rsplit(".", 1)[-1] in READ_VERBS


def _batch_commands(cmd: Any) -> list[Any] | None:
    if isinstance(cmd, Mapping):
        return list(cmd.values())
    if isinstance(cmd, list):
        return cmd
    return None


def is_read(method: str, params: Mapping[str, Any] | None = None) -> bool:
    """True when calling ``method`` with ``params`` changes nothing on the portal.

    A ``batch`` reads only if every command in ``params["cmd"]`` (a map or a list of
    ``"method?query"`` strings) reads; an empty or unreadable ``cmd`` counts as a write.
    """
    if not isinstance(method, str):
        return False
    if method.lower() != "batch":
        return _method_reads(method)
    commands = _batch_commands((params or {}).get("cmd"))
    if not commands:
        return False
    for command in commands:
        if not isinstance(command, str):
            return False
        # A nested batch is refused by Bitrix24 and never a read here.
        sub_method = command.partition("?")[0].strip()
        if sub_method.lower() == "batch" or not _method_reads(sub_method):
            return False
    return True
