"""Reading a request body within the configured limit.

A client that closes the connection before its body is in raises Starlette's
``ClientDisconnect`` from here; :class:`._frame.Frame` takes it as the quiet end it is.
"""

from __future__ import annotations

from fastapi import Request

from ..errors import BodyTooLarge


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
