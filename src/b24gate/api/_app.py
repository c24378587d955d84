"""The HTTP surface (docs/design.md §4): ``/api/v1/call``, the OAuth connect pages, health checks;
the bulk routes (``/api/v1/batch``, ``/api/v1/list``) come from :mod:`._bulk`."""

from __future__ import annotations

import hmac
import html
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from starlette.responses import HTMLResponse, RedirectResponse, Response

from .. import __version__
from ..bitrix import is_read
from ..core import Gateway, bearer
from ..errors import (
    B24GateError,
    Forbidden,
    InvalidTicket,
    RateLimited,
    RequestError,
    UnknownPortal,
)
from ..settings import Settings
from ._admin_page import add_admin_routes
from ._admin_session import SignInLimit
from ._body import read_body
from ._bulk import add_bulk_routes
from ._errors import error_response, gateway_shape, json_response, reduced_batch, retry_after
from ._events import add_event_routes
from ._fast import FastPaths
from ._frame import Frame, caller, peer
from ._idempotency import SendHook, keyed, once
from ._install import add_install_routes
from ._jobs import add_job_routes
from ._metrics import scrape
from ._openapi import describe
from ._parse import json_object, params_object, target
from ._rest import add_rest_routes

_CALL_FIELDS = frozenset({"portal", "domain", "method", "params"})


class CallRequest(BaseModel):
    """The body of ``POST /api/v1/call`` (documentation; parsing is stricter, see below)."""

    portal: str | None = Field(None, description="A registered portal's name.")
    domain: str | None = Field(
        None, description="Or its registered domain, e.g. company.bitrix24.ru."
    )
    method: str = Field(description="A Bitrix24 REST method, e.g. crm.deal.add.")
    params: dict[str, Any] = Field(default_factory=dict, description="The method's parameters.")


@dataclass(frozen=True)
class Call:
    method: str
    params: dict[str, Any]
    portal: str | None
    domain: str | None


def parse_call(raw: bytes) -> Call:
    """Strict: a JSON object (a UTF-8 BOM allowed, as 1C writes one) with known fields."""
    body = json_object(raw, _CALL_FIELDS)
    method = body.get("method")
    if not isinstance(method, str) or not method:
        raise RequestError("`method` is required and must be a string")
    portal, domain = target(body)
    return Call(method, params_object(body.get("params"), "params"), portal, domain)


# The connect pages: no script, no frame, no cache, no referrer. They are reached through
# URLs carrying a ticket or an OAuth code, and show a portal's member_id; nothing of them
# may be framed (clickjacking the connect step), kept by a cache, or sent on as a Referer.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


def _page(title: str, message: str, status: int) -> HTMLResponse:
    body = (
        "<!doctype html><meta charset='utf-8'><title>b24gate: " + html.escape(title) + "</title>"
        "<body style='font-family:sans-serif;max-width:40em;margin:3em auto'>"
        f"<h1>{html.escape(title)}</h1><p>{message}</p></body>"
    )
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


def create_app(
    settings: Settings, gateway: Gateway | None = None, *, close_gateway: bool = False
) -> FastPaths:
    """The ASGI app; it opens its own :class:`Gateway` unless one is given (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Closing in the lifespan's shutdown: uvicorn re-raises SIGTERM once it has stopped,
        # so code after `server.serve()` may never run.
        gw = gateway or await Gateway.open(settings)
        app.state.gateway = gw
        if gateway is None:
            gw.start_background()
        try:
            yield
        finally:
            if gateway is None or close_gateway:
                await gw.close()

    app = FastAPI(
        title="b24gate",
        summary="An OAuth 2.0 gateway between 1C (or any HTTP client) and Bitrix24.",
        version=__version__,
        lifespan=lifespan,
    )
    # Wrong admin tokens per address, on every route that takes one (sign-in, /metrics,
    # /oauth/start?portal=): one budget, so no route is a way around another's limit.
    app.state.admin_token_guesses = SignInLimit()

    @app.post(
        "/api/v1/call",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": CallRequest.model_json_schema()}},
            },
            "security": [{"clientKey": []}],
        },
    )
    async def call(request: Request) -> Response:
        """Forward one REST call to a portal with the portal's own token."""
        gw: Gateway = request.app.state.gateway
        with Frame("api", "/api/v1/call") as frame:
            who = await caller(request, gw)
            frame.who = who.client.name
            raw = await read_body(request, gw.settings.body_limit)
            key = keyed(request, raw)
            payload = parse_call(raw)
            method = payload.method
            frame.method = method if len(method) <= 100 else method[:100] + "…"

            async def run(on_send: SendHook | None) -> Response:
                result = await gw.dispatcher.call(
                    who.client,
                    method,
                    payload.params,
                    portal_name=payload.portal,
                    domain=payload.domain,
                    address=who.address,
                    on_send=on_send,
                )
                frame.served(result)
                data = reduced_batch(result.body) if method.lower() == "batch" else result.body
                return json_response({"success": True, "data": data})

            reads = is_read(method, payload.params)
            return await once(gw, frame, gateway_shape, key, who.client.id, reads=reads, run=run)
        return frame.refusal

    @app.get("/oauth/start", include_in_schema=False)
    async def oauth_start(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        ticket = request.query_params.get("ticket")
        try:
            if not ticket:
                ticket_url = await _admin_ticket(gw, request)
                ticket = ticket_url.split("ticket=", 1)[1]
            target = await gw.connector.start(ticket)
        except B24GateError as exc:
            page = _page("Cannot connect the portal", html.escape(exc.message), exc.status)
            wait = retry_after(exc, exc.status)
            if wait is not None:
                page.headers["Retry-After"] = str(wait)
            return page
        # The redirect leaves the ticket's URL behind: no Referer carries it to the portal.
        return RedirectResponse(target, status_code=302, headers=PAGE_HEADERS)

    @app.get("/oauth/callback", include_in_schema=False)
    async def oauth_callback(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        try:
            done = await gw.connector.callback(dict(request.query_params))
        except B24GateError as exc:
            return _page("The portal was not connected", html.escape(exc.message), exc.status)
        notes = "".join(f"<br>Warning: {html.escape(w)}." for w in done.warnings)
        return _page(
            "Portal connected",
            f"<b>{html.escape(done.portal)}</b> ({html.escape(done.domain)}, member_id "
            f"{html.escape(done.member_id)}) is connected with scope "
            f"<code>{html.escape(done.scope or '-')}</code>. You can close this page.{notes}",
            200,
        )

    def openapi() -> dict[str, Any]:
        # The client key as a bearer scheme, so that Swagger UI's "Try it out" can send one.
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "clientKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A client key from `b24gate client add`.",
                }
            }
            app.openapi_schema = describe(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    add_bulk_routes(app)
    add_job_routes(app)
    add_event_routes(app)
    add_rest_routes(app)
    add_install_routes(app)
    add_admin_routes(app)

    @app.get("/healthz")
    async def healthz() -> Response:
        """The process is alive."""
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        """The store is reachable."""
        gw: Gateway = request.app.state.gateway
        try:
            await gw.store.ping()
        except Exception as exc:  # any failure of the store means not ready
            return json_response({"status": "unavailable", "error": type(exc).__name__}, 503)
        return json_response({"status": "ok"})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus metrics of the per-portal queues and of each portal's state and tokens,
        for the admin token only."""
        gw: Gateway = request.app.state.gateway
        try:
            admin = _is_admin(gw, request)
        except RateLimited as exc:
            return error_response(exc)
        if not admin:
            return error_response(
                Forbidden(
                    "/metrics needs `Authorization: Bearer <admin token>` (B24GATE_ADMIN_TOKEN)"
                )
            )
        return Response(await scrape(gw), media_type=CONTENT_TYPE_LATEST)

    return FastPaths(app, {("POST", "/api/v1/call"): call})


def _is_admin(gw: Gateway, request: Request) -> bool:
    """The request carries the admin token (and one is configured).

    Wrong tokens count against the caller's address in the same budget as the admin page's
    sign-in form (:class:`SignInLimit`, on ``app.state``): past it, 429 ``rate_limited``
    before the token is even compared, so these routes are no way around that limit."""
    expected = gw.settings.admin_token
    given = bearer(request.headers.get("authorization"))
    if expected is None or given is None:
        return False
    guesses: SignInLimit = request.app.state.admin_token_guesses
    address = peer(request, gw) or "-"
    wait = guesses.retry_after(address)
    if wait > 0:
        raise RateLimited("too many wrong admin tokens from this address; retry later", wait)
    if hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        return True
    guesses.failed(address)
    return False


async def _admin_ticket(gw: Gateway, request: Request) -> str:
    """``/oauth/start?portal=NAME`` with the admin token: a ticket made on the spot."""
    name = request.query_params.get("portal")
    if not name or not _is_admin(gw, request):
        raise InvalidTicket("a valid ticket (from `b24gate portal authorize`) is required")
    portal = await gw.store.portal(name)
    if portal is None:
        raise UnknownPortal(f"no portal {name!r}")
    return await gw.connector.ticket_url(portal, force=request.query_params.get("force") == "1")
