"""JSON as b24gate receives it: UTF-8, with or without a byte order mark.

1C writes a UTF-8 BOM before the JSON it sends, and an on-premise portal whose PHP files were
saved with one prints it before every answer. Every JSON body the gateway reads, from a
client (``/api/v1``, ``/rest/``, ``/bitrix/install``) or from Bitrix24, is read here, so that
the BOM is allowed in exactly the same way everywhere.
"""

from __future__ import annotations

from typing import Any

import orjson

BOM = b"\xef\xbb\xbf"


def without_bom(raw: bytes) -> bytes:
    """``raw`` without one leading UTF-8 BOM."""
    return raw.removeprefix(BOM)


def read_json(raw: bytes) -> Any:
    """The JSON value of ``raw`` (UTF-8, one leading BOM allowed).

    Raises :class:`ValueError` for anything else: bytes that are not UTF-8, text that is not
    JSON, or JSON nested over 1,024 levels (which orjson refuses itself, before any stack
    could run out).
    """
    try:
        return orjson.loads(raw.removeprefix(BOM))
    except RecursionError:
        # orjson caps nesting itself; should a RecursionError still come, the input is as
        # malformed as bad syntax, and its reader answers it the same way.
        raise ValueError("JSON nested too deep") from None


def read_object(raw: bytes) -> dict[str, Any] | None:
    """The JSON object of ``raw`` as :func:`read_json` reads it; None when ``raw`` is not
    one (not JSON, or another JSON value): an answer from Bitrix24 or its OAuth server
    that its caller then reports as malformed."""
    try:
        body = read_json(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
