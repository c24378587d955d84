"""The admin page's routes at ``/admin`` (docs/admin.md): portals, clients, refused calls,
jobs and event subscriptions, rendered by :mod:`._admin_views`.

Signed in with the admin token (:mod:`._admin_session`); with no admin token configured
every ``/admin`` path is a 404 that says how to set one. Every answer carries
:data:`~._admin_views.ADMIN_HEADERS` (a CSP that allows only the page's own stylesheet and
script, no frames, no cache); every POST must carry the session's CSRF token and come from
the gateway's own origin, or it changes nothing (403). Every change goes through
:mod:`b24gate.core`'s administration, as the command line's does.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Final
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from starlette.responses import Response

from ..core import Gateway, add_client, new_client, revoke_client, set_client_methods
from ..errors import B24GateError, RequestError
from ._admin_session import SESSION_TTL, Sessions, SignInLimit, cookie_name, same_origin
from ._admin_text import LANGUAGES, texts
from ._admin_views import (
    ADMIN_HEADERS,
    Form,
    Page,
    answer,
    calls_page,
    clients_page,
    connect_page,
    events_page,
    jobs_page,
    language_of,
    not_found_page,
    off_page,
    portals_page,
    redirect,
    refused_page,
    revoke_page,
    sign_in_page,
    split_list,
)
from ._body import read_body
from ._frame import peer

# The largest form the page reads, and its most fields.
FORM_LIMIT: Final = 64 * 1024
FORM_FIELDS: Final = 20
_STATIC: Final = {
    "admin.css": "text/css",
    "admin.js": "text/javascript",
    "icon.svg": "image/svg+xml",  # or the browser asks for /favicon.ico, a 404 on every page
}
# What the session keys are derived for, from the master key.
_PURPOSE: Final = b"admin page"

Show = Callable[[Page, Request], Awaitable[Response]]
Act = Callable[[Page, Form, Request], Awaitable[Response]]


def _sessions(gw: Gateway) -> Sessions | None:
    token = gw.settings.admin_token
    if token is None or not token.get_secret_value():
        return None
    return Sessions(gw.store.derive_key(_PURPOSE), token.get_secret_value())


async def _read_form(request: Request) -> Form:
    """The posted form; :class:`RequestError` over :data:`FORM_LIMIT` or
    :data:`FORM_FIELDS`."""
    raw = await read_body(request, FORM_LIMIT)
    try:
        pairs = parse_qsl(
            raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=FORM_FIELDS
        )
    except ValueError:  # past max_num_fields: anyone's sign-in form, so no 500
        raise RequestError(f"a form has at most {FORM_FIELDS} fields") from None
    return dict(pairs)


# -- the routes -------------------------------------------------------------------------


def add_admin_routes(app: FastAPI) -> None:
    """The admin page's routes on ``app``."""

    def gateway(request: Request) -> Gateway:
        gw: Gateway = request.app.state.gateway
        return gw

    async def signed_in(request: Request) -> Page | Response:
        """The request's page, or the answer for one that may not see it."""
        gw = gateway(request)
        sessions = _sessions(gw)
        if sessions is None:
            return off_page(language_of(request))
        cookie = request.cookies.get(cookie_name(gw.settings.public_url))
        if cookie is None or not sessions.valid(cookie):
            return redirect("/admin/sign-in")
        if await gw.store.signed_out(sessions.name(cookie)):
            return redirect("/admin/sign-in")
        lang = language_of(request)
        return Page(gw, lang, texts(lang), cookie, sessions.csrf(cookie))

    async def posted(request: Request) -> tuple[Page, Form] | Response:
        """A signed-in POST from the page's own form, with its form; else the refusal."""
        page = await signed_in(request)
        if isinstance(page, Response):
            return page
        sessions = _sessions(page.gw)
        assert sessions is not None  # signed_in() found an admin token
        if not _from_here(page.gw, request):
            return refused_page(page.lang)
        try:
            form = await _read_form(request)
        except B24GateError:  # over FORM_LIMIT or FORM_FIELDS
            return refused_page(page.lang)
        if not sessions.csrf_valid(page.cookie, form.get("csrf")):
            return refused_page(page.lang)
        return page, form

    def shows(path: str, show: Show) -> None:
        """A GET page for signed-in administrators."""

        async def route(request: Request) -> Response:
            page = await signed_in(request)
            return page if isinstance(page, Response) else await show(page, request)

        app.add_api_route(path, route, methods=["GET"], include_in_schema=False)

    def acts(path: str, act: Act) -> None:
        """A POST from the page's own form: checked (:func:`posted`) before ``act`` runs."""

        async def route(request: Request) -> Response:
            checked = await posted(request)
            if isinstance(checked, Response):
                return checked
            return await act(*checked, request)

        app.add_api_route(path, route, methods=["POST"], include_in_schema=False)

    @app.get("/admin", include_in_schema=False)
    async def admin_root(request: Request) -> Response:
        page = await signed_in(request)
        return page if isinstance(page, Response) else redirect("/admin/portals")

    @app.get("/admin/sign-in", include_in_schema=False)
    async def sign_in_form(request: Request) -> Response:
        if _sessions(gateway(request)) is None:
            return off_page(language_of(request))
        return sign_in_page(language_of(request), None, 200)

    @app.post("/admin/sign-in", include_in_schema=False)
    async def sign_in(request: Request) -> Response:
        gw = gateway(request)
        sessions = _sessions(gw)
        lang = language_of(request)
        if sessions is None:
            return off_page(lang)
        t = texts(lang)
        address = peer(request, gw) or "-"
        sign_in_limit: SignInLimit = request.app.state.admin_token_guesses
        wait = sign_in_limit.retry_after(address)
        if wait > 0:
            retry = {"Retry-After": str(int(wait + 0.999))}
            return sign_in_page(lang, t["sign_in.limited"], 429, retry)
        # Login CSRF: another site must not sign a browser in (with a token of its own).
        if not _from_here(gw, request):
            return refused_page(lang)
        try:
            given = (await _read_form(request)).get("token", "")
        except B24GateError:  # over FORM_LIMIT or FORM_FIELDS
            given = ""
        expected = gw.settings.admin_token
        assert expected is not None  # _sessions() found one
        if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
            sign_in_limit.failed(address)
            return sign_in_page(lang, t["sign_in.wrong"], 401)
        response = redirect("/admin/portals")
        response.set_cookie(
            cookie_name(gw.settings.public_url),
            sessions.issue(),
            max_age=int(SESSION_TTL),
            path="/",
            secure=gw.settings.public_url.startswith("https://"),
            httponly=True,
            samesite="strict",
        )
        return response

    async def sign_out(page: Page, form: Form, request: Request) -> Response:
        # The browser forgets its cookie, and the store remembers it signed out until it
        # would have expired, so a copy of it is no session on any replica either.
        sessions = _sessions(page.gw)
        assert sessions is not None  # posted() found an admin token
        await page.gw.store.sign_out(sessions.name(page.cookie), sessions.expires_at(page.cookie))
        response = redirect("/admin/sign-in")
        response.delete_cookie(
            cookie_name(page.gw.settings.public_url),
            path="/",
            secure=page.gw.settings.public_url.startswith("https://"),
            httponly=True,
            samesite="strict",
        )
        return response

    @app.get("/admin/lang/{lang}", include_in_schema=False)
    async def switch_language(request: Request, lang: str) -> Response:
        if _sessions(gateway(request)) is None:
            return off_page(language_of(request))
        wanted = request.query_params.get("next", "")
        # Only a page of this admin: never a redirect anywhere else.
        if not wanted.startswith("/admin") or "//" in wanted or "\\" in wanted:
            wanted = "/admin"
        response = redirect(wanted)
        if lang in LANGUAGES:
            response.set_cookie(
                "lang",
                lang,
                max_age=365 * 86400,
                path="/admin",
                secure=gateway(request).settings.public_url.startswith("https://"),
                httponly=True,
                samesite="lax",
            )
        return response

    async def show_portals(page: Page, request: Request) -> Response:
        return await portals_page(page)

    async def show_clients(page: Page, request: Request) -> Response:
        return await clients_page(page)

    async def show_calls(page: Page, request: Request) -> Response:
        return await calls_page(page, request.query_params)

    async def show_jobs(page: Page, request: Request) -> Response:
        return await jobs_page(page)

    async def show_events(page: Page, request: Request) -> Response:
        return await events_page(page)

    async def connect(page: Page, form: Form, request: Request) -> Response:
        name = request.path_params["name"]
        portal = await page.gw.store.portal(name)
        if portal is None:
            return await portals_page(page, f"no portal named {name!r}")
        try:
            url = await page.gw.connector.ticket_url(portal)
        except B24GateError as exc:  # a webhook portal: nothing to authorize
            return await portals_page(page, exc.message)
        # The real connect flow: /oauth/start spends the ticket and sends the browser on.
        return connect_page(page, portal.name, url)

    async def create_client(page: Page, form: Form, request: Request) -> Response:
        try:
            wanted = new_client(
                form.get("name", "").strip(),
                split_list(form.get("portals")),
                methods=split_list(form.get("methods")),
                ips=split_list(form.get("ips")),
                events=split_list(form.get("events")),
            )
            issued = await add_client(page.gw.store, wanted)
        except B24GateError as exc:
            return await clients_page(page, error=exc.message, given=form)
        # Shown in this answer only: not in a URL, not stored, never shown again.
        return await clients_page(page, key=issued.key)

    async def revoke(page: Page, form: Form, request: Request) -> Response:
        name = form.get("name", "")
        if form.get("confirm") != "yes":
            return revoke_page(page, name)
        try:
            await revoke_client(page.gw.store, name)
        except B24GateError as exc:
            return await clients_page(page, error=exc.message)
        return await clients_page(page, notice=page.t["done.revoked"].format(name=name))

    async def change_methods(page: Page, form: Form, request: Request) -> Response:
        name = form.get("name", "")
        try:
            await set_client_methods(page.gw.store, name, split_list(form.get("methods")))
        except B24GateError as exc:
            return await clients_page(page, error=exc.message)
        return await clients_page(page, notice=page.t["done.methods"].format(name=name))

    shows("/admin/portals", show_portals)
    shows("/admin/clients", show_clients)
    shows("/admin/calls", show_calls)
    shows("/admin/jobs", show_jobs)
    shows("/admin/events", show_events)
    acts("/admin/sign-out", sign_out)
    acts("/admin/portals/{name}/connect", connect)
    acts("/admin/clients", create_client)
    acts("/admin/clients/revoke", revoke)
    acts("/admin/clients/methods", change_methods)

    @app.get("/admin/static/{name}", include_in_schema=False)
    async def static(request: Request, name: str) -> Response:
        kind = _STATIC.get(name)
        if kind is None:
            return answer("", 404)
        body = resources.files(__package__).joinpath("admin_static", name).read_bytes()
        return Response(body, media_type=kind, headers=ADMIN_HEADERS)

    @app.api_route("/admin/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
    async def elsewhere(request: Request, rest: str) -> Response:
        if _sessions(gateway(request)) is None:
            return off_page(language_of(request))
        return not_found_page(language_of(request))


def _from_here(gw: Gateway, request: Request) -> bool:
    return same_origin(
        gw.settings.public_url, request.headers.get("origin"), request.headers.get("referer")
    )
