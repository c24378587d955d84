"""Strict parsing of the JSON bodies of ``/api/v1/*``: machine codes for every mistake."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ..errors import RequestError

_BOM = b"\xef\xbb\xbf"


def json_object(raw: bytes, fields: frozenset[str]) -> dict[str, Any]:
    """A JSON object (a UTF-8 BOM allowed, as 1C writes one) with no unknown fields."""
    try:
        body = orjson.loads(raw.removeprefix(_BOM))
    except (UnicodeDecodeError, ValueError):
        raise RequestError("the body is not valid UTF-8 JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object", code="invalid_json")
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
    return value
