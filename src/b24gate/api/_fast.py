"""The gateway's outermost ASGI layer: the request id, and the hot path ahead of FastAPI.

Every request gets an id: the client's own ``X-Request-Id`` when it sent a usable one (1C
can then find its call in the gateway's log), else one made here. It is in every log line
written while the request is served and in the answer's ``X-Request-Id``.

A call to ``/api/v1/call`` is the gateway's whole reason to exist, and FastAPI's generic
layers (telemetry, body limits, exit stacks, routing) cost as much CPU as the call itself.
This pure ASGI wrapper, outside FastAPI, hands that one route straight to its handler;
everything else (OpenAPI, the OAuth pages, the ``/rest/`` surface, the lifespan) goes to
FastAPI as usual. The route stays registered with FastAPI too, so the OpenAPI description
still shows it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from .._logs import REQUEST_ID

Handler = Callable[[Request], Awaitable[Response]]

# A client's id is taken as it is only when it cannot break a log line or a header.
_USABLE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,64}")


def request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            if _USABLE_ID.fullmatch(value):
                given: str = value.decode("ascii")
                return given
            break
    return secrets.token_hex(8)


class FastPaths:
    def __init__(self, app: FastAPI, routes: dict[tuple[str, str], Handler]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        token = REQUEST_ID.set(rid)
        header = (b"x-request-id", rid.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            handler = self.routes.get((scope["method"], scope["path"]))
            if handler is not None:
                scope["app"] = self.app  # what `request.app.state` reads
                response = await handler(Request(scope, receive))
                await response(scope, receive, send_with_id)
                return
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
