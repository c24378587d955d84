"""Strict parsing of the JSON bodies of ``/api/v1/*``: machine codes for every mistake.

Parameters nest at most :data:`~b24gate._php.MAX_INPUT_NESTING` levels, as a PHP form can
(``a[b][c]``), so that nothing after the parser (the batch packer's query strings, the
answer's encoder) meets a structure deep enough to exhaust the stack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

from .._json import read_json
from .._php import MAX_INPUT_NESTING
from ..errors import InvalidJson, RequestError, TooDeep

# Values looked at between two pauses of check_depth_yielding: about a millisecond.
_STEP = 20_000


def too_deep(where: str) -> TooDeep:
    return TooDeep(f"{where} is nested deeper than {MAX_INPUT_NESTING} levels")


def _depth_steps(value: Any, where: str, limit: int) -> Iterator[None]:
    """Walk ``value`` iteratively (no recursion to exhaust), raising :func:`too_deep` when
    its maps and lists nest deeper than ``limit`` below it (``{"a": {"b": 1}}`` is one
    level, as ``a[b]=1`` is); a pause every few thousand values for a caller that yields."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                if depth >= limit:
                    raise too_deep(where)
                stack.append((child, depth + 1))
            seen += 1
            if seen >= _STEP:
                seen = 0
                yield


def check_depth(value: Any, where: str, limit: int = MAX_INPUT_NESTING) -> None:
    for _ in _depth_steps(value, where, limit):
        pass


async def check_depth_yielding(value: Any, where: str, limit: int = MAX_INPUT_NESTING) -> None:
    """:func:`check_depth` for a body of megabytes: other requests are served meanwhile."""
    for _ in _depth_steps(value, where, limit):
        await asyncio.sleep(0)


def json_object(raw: bytes, fields: frozenset[str]) -> dict[str, Any]:
    """A JSON object (a UTF-8 BOM allowed, as 1C writes one) with no unknown fields."""
    try:
        body = read_json(raw)
    except ValueError:
        raise InvalidJson("the body is not valid UTF-8 JSON") from None
    if not isinstance(body, dict):
        raise InvalidJson("the body must be a JSON object")
    unknown = sorted(set(body) - fields)
    if unknown:
        raise RequestError(f"unknown field(s): {', '.join(unknown)}")
    return body


def target(body: Mapping[str, Any]) -> tuple[str | None, str | None]:
    portal, domain = body.get("portal"), body.get("domain")
    for name, value in (("portal", portal), ("domain", domain)):
        if value is not None and (not isinstance(value, str) or not value):
            raise RequestError(f"`{name}` must be a non-empty string")
    if portal is not None and domain is not None:
        raise RequestError("give `portal` or `domain`, not both")
    return portal, domain


def params_object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f"`{where}` must be a JSON object")
    check_depth(value, f"`{where}`")
    return value
