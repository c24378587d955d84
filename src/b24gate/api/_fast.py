"""The hot paths, served ahead of FastAPI's own middleware stack.

A call to ``/api/v1/call`` is the gateway's whole reason to exist, and FastAPI's generic
layers (telemetry, body limits, exit stacks, routing) cost as much CPU as the call itself.
This pure ASGI wrapper, outside FastAPI, hands that one route straight to its handler;
everything else (OpenAPI, the OAuth pages, the ``/rest/`` surface, the lifespan) goes to
FastAPI as usual. The route stays registered with FastAPI too, so the OpenAPI description
still shows it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

Handler = Callable[[Request], Awaitable[Response]]


class FastPaths:
    def __init__(self, app: FastAPI, routes: dict[tuple[str, str], Handler]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self.routes.get((scope["method"], scope["path"]))
            if handler is not None:
                scope["app"] = self.app  # what `request.app.state` reads
                response = await handler(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
