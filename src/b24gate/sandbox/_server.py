"""The sandbox over HTTP: portal, OAuth server and control API on one aiohttp server."""

from __future__ import annotations

import asyncio
import html
import json
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from . import _errors as errors
from ._clock import Clock
from ._config import SandboxConfig
from ._control import add_control_routes
from ._errors import RestError
from ._faults import Fault
from ._oauth import OAuthError
from ._params import Params, parse_php_pairs, parse_php_query
from ._portal import Portal

# Query keys that put a secret in a URL (counted: a well-behaved client never sends them).
_SECRET_QUERY_KEYS = frozenset({"auth", "access_token", "refresh_token", "client_secret", "code"})
_MALFORMED = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(body).encode(),
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def _error(exc: RestError) -> web.Response:
    return _json(exc.body(), exc.status)


def _error_v3(exc: RestError) -> web.Response:
    return _json({"error": {"code": exc.error, "message": exc.description}}, exc.status)


async def read_params(request: web.Request) -> Params:
    """The query string merged with the body (JSON, form or multipart), as PHP's $_REQUEST."""
    params = parse_php_query(request.query_string)
    if request.method != "POST" or not request.can_read_body:
        return params
    if request.content_type == "application/json":
        raw = await request.read()
        try:
            body = json.loads(raw.decode("utf-8-sig") or "{}")
        except (UnicodeDecodeError, ValueError):
            # Inferred: PHP's json_decode fails quietly and the method sees no parameters.
            body = {}
        if isinstance(body, dict):
            params.update(body)
    else:
        form = await request.post()
        params.update(parse_php_pairs((k, v) for k, v in form.items() if isinstance(v, str)))
    return params


class SandboxServer:
    """One running sandbox. ``async with SandboxServer(config) as sb: sb.base_url``."""

    def __init__(self, config: SandboxConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or SandboxConfig()
        self.portal = Portal(self.config, clock)
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/oauth/authorize/", self._authorize)
        self.app.router.add_route("*", "/oauth/authorize", self._authorize)
        self.app.router.add_route("*", "/oauth/token/", self._token)
        self.app.router.add_route("*", "/oauth/token", self._token)
        self.app.router.add_route("*", "/rest/{tail:.*}", self._rest)
        self.app.router.add_get("/", self._index)
        add_control_routes(self.app, self)
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.port = 0

    # -- life cycle -------------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext | None:
        if not self.config.tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return ctx

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.config.host, self.config.port, ssl_context=self._ssl()
        )
        await site.start()
        self.port = self._runner.addresses[0][1]
        host = self.config.host
        if host in ("0.0.0.0", ""):  # noqa: S104 - naming the wildcard, not binding it
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        self.portal.move(f"{host}:{self.port}")
        self.base_url = f"{self.config.scheme}://{host}:{self.port}"
        self.portal.events.server_endpoint = f"{self.base_url}/rest/"
        return self.base_url

    async def stop(self) -> None:
        # Deliveries not sent yet are cancelled, as a portal that stops loses them.
        await self.portal.events.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SandboxServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- helpers ----------------------------------------------------------------------

    def _record(self, request: web.Request) -> None:
        self.portal.received.append(request.path_qs)
        if any(key in _SECRET_QUERY_KEYS for key in request.query):
            self.portal.counters.secret_in_query += 1

    def _moved(self, request: web.Request) -> web.Response | None:
        if request.host in self.portal.old_domains:
            target = f"{request.scheme}://{self.portal.domain}{request.path_qs}"
            return web.Response(status=301, headers={"Location": target})
        return None

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.close()
        # Nothing reaches the client; aiohttp only notices the closed transport.
        return web.Response(status=500)

    async def _fault(self, request: web.Request, fault: Fault) -> web.Response | None:
        """Answer ``fault`` at once, or return None to go on (after a delay for ``slow``)."""
        if fault.kind == "500":
            return _error(errors.internal_error())
        if fault.kind == "503":
            self.portal.counters.rejected_503 += 1
            return _error(errors.query_limit_exceeded())
        if fault.kind == "malformed":
            return web.Response(body=_MALFORMED, status=200, content_type="text/html")
        if fault.kind == "drop":
            return self._drop(request)
        if fault.kind == "licence":
            target = f"{request.scheme}://{request.host}/bitrix/coupon_activation.php"
            return web.Response(status=302, headers={"Location": target})
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay)
        return None

    # -- the portal -------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        text = (
            "<!doctype html><title>b24gate sandbox</title><h1>b24gate sandbox</h1>"
            f"<p>Portal {html.escape(self.portal.domain)}, member_id {self.portal.member_id}.</p>"
            "<p>REST at <code>/rest/METHOD</code>, OAuth at <code>/oauth/authorize/</code> and "
            "<code>/oauth/token/</code>, control API at <code>/_sandbox/</code>.</p>"
        )
        return web.Response(text=text, content_type="text/html")

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        portal = self.portal
        counters = portal.counters
        counters.rest_calls += 1
        self._record(request)
        counters.in_flight += 1
        counters.max_concurrent = max(counters.max_concurrent, counters.in_flight)
        try:
            fault = portal.faults.take("rest")
            if fault is not None:
                answered = await self._fault(request, fault)
                if answered is not None:
                    return answered
            if portal.require_https and request.scheme != "https":
                return _error(errors.https_required())
            moved = self._moved(request)
            if moved is not None:
                return moved
            response = await self._call(request)
            if fault is not None and fault.kind == "drop-after":
                return self._drop(request)
            return response
        finally:
            counters.in_flight -= 1

    async def _call(self, request: web.Request) -> web.Response:
        portal = self.portal
        tail = request.match_info["tail"]
        # REST 3.0 (`/rest/api/…`): the same methods here, errors in its own shape
        # `{"error": {"code", "message"}}` (docs/protocol.md §6; its other differences, such as
        # camelCase parameters, are not emulated).
        v3 = tail.startswith("api/")
        error = _error_v3 if v3 else _error
        parts = tail.removeprefix("api/").split("/")
        method = parts[-1].removesuffix(".json")
        if len(parts) not in (1, 3) or not method:
            return error(errors.method_not_found())
        params = await read_params(request)
        token = params.pop("auth", None)
        try:
            if not portal.bucket.try_acquire():
                portal.counters.rejected_503 += 1
                raise errors.query_limit_exceeded()
            if len(parts) == 3:
                caller = portal.caller_for_webhook(parts[0], parts[1])
            elif isinstance(token, str) and token:
                caller = portal.caller_for_token(token)
            else:
                raise errors.no_auth_found()
            outcome, timing = await portal.request(caller, method, params)
        except RestError as exc:
            return error(exc)
        portal.counters.executed += 1
        return _json(portal.answer(outcome, timing))

    # -- the OAuth server -------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> web.Response:
        self.portal.received.append(request.path_qs)
        moved = self._moved(request)
        if moved is not None:
            return moved
        params = dict(request.query)
        if request.method == "POST":
            form = await request.post()
            params.update((k, v) for k, v in form.items() if isinstance(v, str))
        app = self.portal.oauth.apps.get(params.get("client_id", ""))
        if app is None or not app.installed:
            return self._page(
                "Application not found", "The application is not installed on this portal.", 400
            )
        requested = params.get("redirect_uri")
        if app.redirect_uri and requested and requested != app.redirect_uri:
            return self._page(
                "redirect_uri_mismatch",
                "The redirect_uri does not match the application's registered handler.",
                400,
            )
        target = app.redirect_uri or requested
        approved = self.portal.auto_approve or (
            request.method == "POST" and params.get("approve") == "1"
        )
        if not approved:
            return self._consent(app.client_id, params)
        code = self.portal.oauth.new_code(app, user_id=1)
        answer = {
            "code": code,
            "state": params.get("state", ""),
            "domain": self.portal.domain,
            "member_id": self.portal.member_id,
            "scope": ",".join(app.scope),
            "server_domain": request.host,
        }
        if not target:
            # Apps registered without a handler get the code shown to paste by hand.
            return self._page(
                "Authorization code", f"Your code: <code>{html.escape(code)}</code>", 200
            )
        separator = "&" if "?" in target else "?"
        return web.Response(
            status=302, headers={"Location": f"{target}{separator}{urlencode(answer)}"}
        )

    def _consent(self, client_id: str, params: Mapping[str, str]) -> web.Response:
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in params.items()
            if k in ("client_id", "state", "redirect_uri")
        )
        body = (
            f"<p>The application <b>{html.escape(client_id)}</b> asks for access to this portal "
            f"(scope: {html.escape(','.join(self.portal.oauth.apps[client_id].scope))}).</p>"
            f'<form method="post" action="/oauth/authorize/">{hidden}'
            '<button type="submit" name="approve" value="1">Allow</button></form>'
        )
        return self._page("Grant access", body, 200)

    @staticmethod
    def _page(title: str, body: str, status: int) -> web.Response:
        text = (
            f"<!doctype html><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>{body}"
        )
        return web.Response(text=text, status=status, content_type="text/html")

    async def _token(self, request: web.Request) -> web.Response:
        self._record(request)
        fault = self.portal.faults.take("oauth")
        if fault is not None:
            answered = await self._fault(request, fault)
            if answered is not None:
                return answered
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST":
            form = await request.post()
            params.update((k, v) for k, v in form.items() if isinstance(v, str))
        oauth = self.portal.oauth
        try:
            grant = oauth.exchange(params)
        except OAuthError as exc:
            return _error(exc)
        access, refresh, expires = oauth.tokens_for(grant)
        body = {
            "access_token": access,
            "expires": int(expires),
            "expires_in": self.config.access_ttl,
            # The docs' example shows "app" here, not the granted scope list.
            "scope": "app",
            "domain": request.host,
            "server_endpoint": f"{request.scheme}://{request.host}/rest/",
            "status": "L",
            "client_endpoint": self.portal.client_endpoint(request.scheme),
            "member_id": self.portal.member_id,
            "user_id": grant.user_id,
            "refresh_token": refresh,
        }
        if fault is not None and fault.kind == "drop-after":
            return self._drop(request)
        return _json(body)
