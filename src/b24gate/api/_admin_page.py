"""The admin page at ``/admin`` (docs/admin.md): portals, clients, refused calls, jobs and
event subscriptions, server-rendered, in English or Russian.

Signed in with the admin token (:mod:`._admin_session`); with no admin token configured
every ``/admin`` path is a 404 that says how to set one. Every answer carries
:data:`ADMIN_HEADERS` (a CSP that allows only the page's own stylesheet and script, no
frames, no cache); every POST must carry the session's CSRF token and come from the
gateway's own origin, or it changes nothing (403). Every change goes through
:mod:`b24gate.core`'s administration, as the command line's does.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Final
from urllib.parse import parse_qsl, quote

from fastapi import FastAPI, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..core import (
    Gateway,
    add_client,
    list_clients,
    list_portals,
    new_client,
    revoke_client,
    set_client_methods,
)
from ..errors import B24GateError
from ..store import Client
from ._admin_html import Markup, esc, hidden, join, moment, render, span
from ._admin_session import Sessions, SignInLimit, cookie_name, same_origin
from ._admin_text import LANGUAGES, language, texts
from ._body import read_body
from ._frame import peer

# The page's own stylesheet and script only; forms post only to the page; never framed.
# Referrer-Policy is same-origin, not no-referrer: with no-referrer a browser sends
# `Origin: null` on a form's POST, and the origin check below could not tell the page's
# own forms from another site's. Nothing leaves for another site either way.
ADMIN_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
}
# The largest form the page reads, and its most fields.
FORM_LIMIT: Final = 64 * 1024
FORM_FIELDS: Final = 20
_STATIC: Final = {"admin.css": "text/css", "admin.js": "text/javascript"}
_NAV: Final = ("portals", "clients", "calls", "jobs", "events")


@dataclass(frozen=True)
class Page:
    """A signed-in request: the gateway, the language and its strings, the session."""

    gw: Gateway
    lang: str
    t: Mapping[str, str]
    cookie: str
    csrf: str
    path: str


Form = dict[str, str]


def _lang(request: Request) -> str:
    return language(request.cookies.get("lang"), request.headers.get("accept-language"))


def _answer(body: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return HTMLResponse(body, status_code=status, headers={**ADMIN_HEADERS, **(headers or {})})


def _redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers=ADMIN_HEADERS)


def _document(lang: str, title: str, body: Markup) -> str:
    return render(
        "<!doctype html><html lang='{lang}'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>{title}</title><link rel='stylesheet' href='/admin/static/admin.css'>"
        "<script src='/admin/static/admin.js' defer></script></head><body>{body}</body></html>",
        lang=lang,
        title=title,
        body=body,
    )


def _bare(lang: str, heading: str, content: Markup, status: int) -> Response:
    """A page without the navigation: signed out, refused, or switched off."""
    t = texts(lang)
    body = render("<main class='narrow'><h1>{h}</h1>{c}</main>", h=heading, c=content)
    return _answer(_document(lang, f"{heading} · {t['title']}", body), status)


def _layout(page: Page, active: str, heading: str, content: Markup) -> Markup:
    t = page.t
    links = join(
        render(
            "<a id='nav-{name}' href='/admin/{name}'{cls}>{label}</a>",
            name=name,
            cls=Markup(" class='active'" if name == active else ""),
            label=t[f"nav.{name}"],
        )
        for name in _NAV
    )
    switch = join(
        render(
            "<a id='lang-{code}' href='/admin/lang/{code}?next={next}'{cls}>{label}</a>",
            code=code,
            next=quote(page.path, safe="/"),
            cls=Markup(" class='active'" if code == page.lang else ""),
            label=code.upper(),
        )
        for code in LANGUAGES
    )
    return render(
        "<header><strong>b24gate</strong><nav>{links}</nav><span class='lang'>{switch}</span>"
        "<form method='post' action='/admin/sign-out' class='inline'>{csrf}"
        "<button id='sign-out' type='submit'>{sign_out}</button></form></header>"
        "<main><h1>{heading}</h1>{content}</main>",
        links=links,
        switch=switch,
        csrf=hidden("csrf", page.csrf),
        sign_out=t["sign_out"],
        heading=heading,
        content=content,
    )


def _full(page: Page, active: str, heading: str, content: Markup, status: int = 200) -> Response:
    body = _layout(page, active, heading, content)
    return _answer(_document(page.lang, f"{heading} · {page.t['title']}", body), status)


def _form(page: Page, action: str, inner: Markup, cls: str = "") -> Markup:
    return render(
        "<form method='post' action='{action}' class='{cls}'>{csrf}{inner}</form>",
        action=action,
        cls=cls,
        csrf=hidden("csrf", page.csrf),
        inner=inner,
    )


def _message(text: str | None, *, error: bool = False) -> Markup:
    if not text:
        return Markup("")
    if error:
        return render("<p id='error' class='error' role='alert'>{text}</p>", text=text)
    return render("<p id='notice' class='notice' role='status'>{text}</p>", text=text)


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _table(table_id: str, headings: list[str], rows: list[Markup], empty: str) -> Markup:
    if not rows:
        return render("<p class='empty'>{empty}</p>", empty=empty)
    return render(
        "<table id='{id}'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>",
        id=table_id,
        head=join(render("<th>{h}</th>", h=h) for h in headings),
        rows=join(rows),
    )


def _sessions(gw: Gateway) -> Sessions | None:
    token = gw.settings.admin_token
    if token is None or not token.get_secret_value():
        return None
    return Sessions(gw.store.derive_key(b"admin page"), token.get_secret_value())


def _off(request: Request) -> Response:
    lang = _lang(request)
    t = texts(lang)
    return _bare(lang, t["off.title"], render("<p>{text}</p>", text=t["off.text"]), 404)


async def _read_form(request: Request) -> Form:
    raw = await read_body(request, FORM_LIMIT)
    pairs = parse_qsl(
        raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=FORM_FIELDS
    )
    return dict(pairs)


# -- the pages --------------------------------------------------------------------------


async def _portals(page: Page, error: str | None = None) -> Response:
    t, gw = page.t, page.gw
    now = time.time()
    keepalive_age = gw.settings.keepalive_days * 86400
    rows = []
    for status in await list_portals(gw.store):
        portal, grant = status.portal, status.grant
        access = refresh = Markup("—")
        if portal.kind == "oauth" and grant is not None:
            access = moment(grant.access_expires_at)
            age = now - grant.refresh_obtained_at
            due = keepalive_age - age
            keep = t["keepalive.in"].format(span=span(due, t)) if due > 0 else t["keepalive.due"]
            refresh = render("{age}<br><small>{keep}</small>", age=span(age, t), keep=keep)
        budget = (
            t["budget"].format(rate=f"{portal.rate:g}", burst=portal.burst)
            if portal.rate > 0
            else t["budget.none"]
        )
        waiting, sending = gw.scheduler.queue(portal.id)
        operating = join(
            render("<li><code>{m}</code> {s} s</li>", m=method, s=f"{seconds:.1f}")
            for method, (seconds, _reset) in gw.dispatcher.operating.usage(portal).items()
        )
        action = Markup("")
        if portal.kind == "oauth":
            label = t["connect"] if portal.state == "not_connected" else t["reauthorize"]
            action = _form(
                page,
                f"/admin/portals/{quote(portal.name, safe='')}/connect",
                render("<button type='submit' data-action='connect'>{label}</button>", label=label),
                "inline",
            )
        rows.append(
            render(
                "<tr data-portal='{name}'><th scope='row'>{name}<br><small>{domain}</small></th>"
                "<td data-field='kind'>{kind}</td>"
                "<td data-field='state'><span class='state state-{state}'>{state}</span></td>"
                "<td data-field='reason'>{reason}</td><td>{access}</td><td>{refresh}</td>"
                "<td>{budget}</td><td data-field='queue'>{queue}</td><td>{operating}</td>"
                "<td>{action}</td></tr>",
                name=portal.name,
                domain=portal.domain,
                kind=t[f"kind.{portal.kind}"],
                state=portal.state,
                reason=portal.state_reason or "",
                access=access,
                refresh=refresh,
                budget=budget,
                queue=t["queue"].format(waiting=waiting, sending=sending),
                operating=render("<ul class='plain'>{items}</ul>", items=operating)
                if operating
                else t["operating.none"],
                action=action,
            )
        )
    heads = ["portal", "kind", "state", "reason", "access", "refresh", "budget", "queue"]
    table = _table(
        "portals",
        [t[f"col.{h}"] for h in [*heads, "operating", "action"]],
        rows,
        t["portals.none"],
    )
    return _full(
        page,
        "portals",
        t["portals.title"],
        join([_message(error, error=True), table]),
        400 if error else 200,
    )


def _client_row(
    page: Page, client: Client, hour: tuple[int, int], day: tuple[int, int], last: float | None
) -> Markup:
    t = page.t
    active = client.revoked_at is None
    methods = ", ".join(client.methods)
    if active:
        methods_cell = _form(
            page,
            "/admin/clients/methods",
            render(
                "{name}<input name='methods' value='{methods}' placeholder='{hint}' "
                "aria-label='{label}'><button type='submit' data-action='save-scopes'>{save}"
                "</button>",
                name=hidden("name", client.name),
                methods=methods,
                hint=t["any_method"],
                label=t["col.methods"],
                save=t["save"],
            ),
            "inline",
        )
        action = _form(
            page,
            "/admin/clients/revoke",
            render(
                "{name}<button type='submit' data-action='revoke' class='danger'>{revoke}</button>",
                name=hidden("name", client.name),
                revoke=t["revoke"],
            ),
            "inline",
        )
    else:
        methods_cell = esc(methods or t["any_method"])
        action = render(t["revoked"], when=moment(client.revoked_at))
    return render(
        "<tr data-client='{name}' class='{cls}'><th scope='row'>{name}</th><td>{portals}</td>"
        "<td data-field='methods'>{methods}</td><td>{ips}</td><td>{events}</td>"
        "<td>{created}</td><td data-field='last-use'>{last}</td>"
        "<td data-field='hour'>{hc} / {he}</td><td data-field='day'>{dc} / {de}</td>"
        "<td>{action}</td></tr>",
        name=client.name,
        cls="" if active else "revoked",
        portals=", ".join(client.portals),
        methods=methods_cell,
        ips=", ".join(client.ips) or t["any_address"],
        events=", ".join(client.events) or t["no_events"],
        created=moment(client.created_at),
        last=moment(last) if last else t["never"],
        hc=hour[0],
        he=hour[1],
        dc=day[0],
        de=day[1],
        action=Markup(action),
    )


async def _clients(
    page: Page,
    *,
    error: str | None = None,
    notice: str | None = None,
    key: str | None = None,
    given: Form | None = None,
) -> Response:
    t, gw = page.t, page.gw
    usage = await gw.activity.usage(24)
    this_hour = int(time.time() // 3600)
    hour: dict[int, tuple[int, int]] = {}
    day: dict[int, tuple[int, int]] = {}
    for u in usage:
        calls, errors = day.get(u.client_id, (0, 0))
        day[u.client_id] = (calls + u.calls, errors + u.errors)
        if u.hour == this_hour:
            hour[u.client_id] = (u.calls, u.errors)
    last = await gw.store.activity.last_used()
    rows = [
        _client_row(page, c, hour.get(c.id, (0, 0)), day.get(c.id, (0, 0)), last.get(c.id))
        for c in await list_clients(gw.store)
    ]
    shown_key = Markup("")
    if key is not None:
        shown_key = render(
            "<div class='key'><p>{note}</p><code id='new-key'>{key}</code></div>",
            note=t["new_key"],
            key=key,
        )
    values = given or {}
    portal_names = [p.name for p in await gw.store.portals()]
    create = _form(
        page,
        "/admin/clients",
        render(
            "<label>{l_name}<input id='client-name' name='name' required maxlength='64' "
            "value='{name}'></label>"
            "<label>{l_portals}<input id='client-portals' name='portals' required "
            "value='{portals}' placeholder='{portal_hint}'></label>"
            "<label>{l_methods}<input id='client-methods' name='methods' value='{methods}'>"
            "</label><label>{l_ips}<input id='client-ips' name='ips' value='{ips}'></label>"
            "<label>{l_events}<input id='client-events' name='events' value='{events}'>"
            "</label><button id='client-create' type='submit'>{create}</button>",
            l_name=t["field.name"],
            l_portals=t["field.portals"],
            l_methods=t["field.methods"],
            l_ips=t["field.ips"],
            l_events=t["field.events"],
            portal_hint=", ".join(portal_names),
            create=t["create"],
            **{f: values.get(f, "") for f in ("name", "portals", "methods", "ips", "events")},
        ),
        "create",
    )
    heads = ["client", "portals", "methods", "ips", "events", "created", "last_use", "hour", "day"]
    table = _table("clients", [*(t[f"col.{h}"] for h in heads), ""], rows, t["clients.none"])
    content = join(
        [
            _message(error, error=True),
            _message(notice),
            shown_key,
            render("<h2>{h}</h2>", h=t["clients.new"]),
            create,
            table,
        ]
    )
    return _full(page, "clients", t["clients.title"], content, 400 if error else 200)


async def _calls(page: Page, query: Mapping[str, str]) -> Response:
    t, gw = page.t, page.gw
    await gw.activity.flush()
    chosen = {f: query.get(f, "").strip()[:100] for f in ("code", "client", "portal")}
    found = await gw.store.activity.refusals(
        code=chosen["code"] or None,
        client=chosen["client"] or None,
        portal=chosen["portal"] or None,
    )
    rows = [
        render(
            "<tr data-code='{code}'><td>{at}</td><td data-field='code'><code>{code}</code></td>"
            "<td>{status}</td><td>{surface}</td><td data-field='client'>{client}</td>"
            "<td data-field='portal'>{portal}</td><td><code>{method}</code></td>"
            "<td>{address}</td></tr>",
            at=moment(r.at),
            code=r.code,
            status=r.status,
            surface=r.surface,
            client=r.client or "—",
            portal=r.portal or "—",
            method=r.method or "—",
            address=r.address or "—",
        )
        for r in found
    ]
    filters = render(
        "<form method='get' action='/admin/calls' class='filters'>"
        "<label>{l_code}<input id='filter-code' name='code' value='{code}'></label>"
        "<label>{l_client}<input id='filter-client' name='client' value='{client}'></label>"
        "<label>{l_portal}<input id='filter-portal' name='portal' value='{portal}'></label>"
        "<button id='filter-apply' type='submit'>{apply}</button></form>",
        l_code=t["filter.code"],
        l_client=t["filter.client"],
        l_portal=t["filter.portal"],
        apply=t["filter.apply"],
        **chosen,
    )
    heads = ["time", "code", "status", "surface", "client", "portal", "method", "address"]
    dropped = gw.activity.dropped
    content = join(
        [
            render("<p class='note'>{note}</p>", note=t["calls.note"]),
            _message(t["calls.dropped"].format(n=dropped) if dropped else None),
            filters,
            _table("calls", [t[f"col.{h}"] for h in heads], rows, t["calls.none"]),
        ]
    )
    return _full(page, "calls", t["calls.title"], content)


async def _jobs(page: Page) -> Response:
    t, gw = page.t, page.gw
    clients = {c.id: c.name for c in await gw.store.clients()}
    portals = {p.id: p.name for p in await gw.store.portals()}
    rows = [
        render(
            "<tr data-job='{id}'><td><code>{id}</code></td><td>{client}</td><td>{portal}</td>"
            "<td data-field='state'>{state}</td><td>{commands}</td><td>{created}</td>"
            "<td>{finished}</td></tr>",
            id=job.id,
            client=clients.get(job.client_id, job.client_id),
            portal=portals.get(job.portal_id, job.portal_id),
            state=job.state,
            commands=f"{job.total}: "
            + ", ".join(f"{state} {n}" for state, n in job.counts.items() if n),
            created=moment(job.created_at),
            finished=moment(job.finished_at),
        )
        for job in await gw.store.jobs.latest(100)
    ]
    heads = ["job", "client", "portal", "state", "commands", "created", "finished"]
    table = _table("jobs", [t[f"col.{h}"] for h in heads], rows, t["jobs.none"])
    return _full(page, "jobs", t["jobs.title"], table)


async def _events(page: Page) -> Response:
    t, gw = page.t, page.gw
    portals = await gw.store.portals()
    names = {p.id: p.name for p in portals}
    rows = [
        render(
            "<tr data-event='{event}'><td>{portal}</td><td><code>{event}</code></td>"
            "<td>{mode}</td><td>{since}</td></tr>",
            portal=names.get(s.portal_id, s.portal_id),
            event=s.event,
            mode=s.mode,
            since=moment(s.created_at),
        )
        for s in await gw.store.events.subscriptions()
    ]
    heads_rows = []
    for portal in portals:
        head = await gw.store.events.head(portal.id)
        if head.last:
            heads_rows.append(
                render(
                    "<tr><td>{portal}</td><td>{last}</td><td>{purged}</td></tr>",
                    portal=portal.name,
                    last=head.last,
                    purged=head.purged,
                )
            )
    content = join(
        [
            _table(
                "subscriptions",
                [t["col.portal"], t["col.event"], t["col.mode"], t["col.since"]],
                rows,
                t["events.none"],
            ),
            render("<h2>{h}</h2>", h=t["events.log"]) if heads_rows else "",
            _table(
                "event-log", [t["col.portal"], t["col.last_seq"], t["col.purged"]], heads_rows, ""
            )
            if heads_rows
            else "",
        ]
    )
    return _full(page, "events", t["events.title"], content)


def _sign_in_page(
    lang: str, error: str | None, status: int, headers: Mapping[str, str] | None = None
) -> Response:
    t = texts(lang)
    form = render(
        "{error}<form method='post' action='/admin/sign-in' class='sign-in'>"
        "<label for='token'>{label}</label>"
        "<input id='token' name='token' type='password' autocomplete='current-password' "
        "required autofocus><button id='sign-in' type='submit'>{button}</button></form>",
        error=_message(error, error=True),
        label=t["sign_in.token"],
        button=t["sign_in.button"],
    )
    response = _bare(lang, t["sign_in.title"], form, status)
    response.headers.update(headers or {})
    return response


# -- the routes -------------------------------------------------------------------------


def add_admin_routes(app: FastAPI) -> None:
    """The admin page's routes on ``app``."""
    sign_in_limit = SignInLimit()

    def gateway(request: Request) -> Gateway:
        gw: Gateway = request.app.state.gateway
        return gw

    def signed_in(request: Request) -> Page | Response:
        """The request's page, or the answer for one that may not see it."""
        gw = gateway(request)
        sessions = _sessions(gw)
        if sessions is None:
            return _off(request)
        cookie = request.cookies.get(cookie_name(gw.settings.public_url))
        if cookie is None or not sessions.valid(cookie):
            return _redirect("/admin/sign-in")
        lang = _lang(request)
        return Page(gw, lang, texts(lang), cookie, sessions.csrf(cookie), request.url.path)

    async def posted(request: Request) -> tuple[Page, Form] | Response:
        """A signed-in POST from the page's own form, with its form; else the refusal."""
        page = signed_in(request)
        if isinstance(page, Response):
            return page
        sessions = _sessions(page.gw)
        assert sessions is not None  # signed_in() found an admin token
        refused = _bare(
            page.lang,
            page.t["forbidden.title"],
            render("<p id='error'>{text}</p>", text=page.t["forbidden.text"]),
            403,
        )
        if not same_origin(
            page.gw.settings.public_url,
            request.headers.get("origin"),
            request.headers.get("referer"),
        ):
            return refused
        try:
            form = await _read_form(request)
        except B24GateError:
            return refused
        if not sessions.csrf_valid(page.cookie, form.get("csrf")):
            return refused
        return page, form

    def page_route(path: str, show: Callable[[Page, Request], Awaitable[Response]]) -> None:
        async def route(request: Request) -> Response:
            page = signed_in(request)
            return page if isinstance(page, Response) else await show(page, request)

        app.add_api_route(path, route, methods=["GET"], include_in_schema=False)

    @app.get("/admin", include_in_schema=False)
    async def admin_root(request: Request) -> Response:
        page = signed_in(request)
        return page if isinstance(page, Response) else _redirect("/admin/portals")

    @app.get("/admin/sign-in", include_in_schema=False)
    async def sign_in_form(request: Request) -> Response:
        if _sessions(gateway(request)) is None:
            return _off(request)
        return _sign_in_page(_lang(request), None, 200)

    @app.post("/admin/sign-in", include_in_schema=False)
    async def sign_in(request: Request) -> Response:
        gw = gateway(request)
        sessions = _sessions(gw)
        if sessions is None:
            return _off(request)
        lang = _lang(request)
        t = texts(lang)
        address = peer(request, gw) or "-"
        wait = sign_in_limit.retry_after(address)
        if wait > 0:
            return _sign_in_page(
                lang, t["sign_in.limited"], 429, {"Retry-After": str(int(wait + 0.999))}
            )
        # Login CSRF: a foreign site must not sign a browser in (with a token of its own).
        if not same_origin(
            gw.settings.public_url, request.headers.get("origin"), request.headers.get("referer")
        ):
            return _bare(
                lang,
                t["forbidden.title"],
                render("<p id='error'>{x}</p>", x=t["forbidden.text"]),
                403,
            )
        try:
            given = (await _read_form(request)).get("token", "")
        except B24GateError:
            given = ""
        expected = gw.settings.admin_token
        assert expected is not None  # _sessions() found one
        if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
            sign_in_limit.failed(address)
            return _sign_in_page(lang, t["sign_in.wrong"], 401)
        response = _redirect("/admin/portals")
        response.set_cookie(
            cookie_name(gw.settings.public_url),
            sessions.issue(),
            max_age=8 * 3600,
            path="/",
            secure=gw.settings.public_url.startswith("https://"),
            httponly=True,
            samesite="strict",
        )
        return response

    @app.post("/admin/sign-out", include_in_schema=False)
    async def sign_out(request: Request) -> Response:
        checked = await posted(request)
        if isinstance(checked, Response):
            return checked
        page, _ = checked
        response = _redirect("/admin/sign-in")
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
            return _off(request)
        wanted = request.query_params.get("next", "")
        # Only a page of this admin: never a redirect to anywhere else.
        if not wanted.startswith("/admin") or "//" in wanted or "\\" in wanted:
            wanted = "/admin"
        response = _redirect(wanted)
        if lang in LANGUAGES:
            response.set_cookie(
                "lang", lang, max_age=365 * 86400, path="/admin", httponly=True, samesite="lax"
            )
        return response

    async def show_portals(page: Page, request: Request) -> Response:
        return await _portals(page)

    async def show_clients(page: Page, request: Request) -> Response:
        return await _clients(page)

    async def show_calls(page: Page, request: Request) -> Response:
        return await _calls(page, request.query_params)

    async def show_jobs(page: Page, request: Request) -> Response:
        return await _jobs(page)

    async def show_events(page: Page, request: Request) -> Response:
        return await _events(page)

    page_route("/admin/portals", show_portals)
    page_route("/admin/clients", show_clients)
    page_route("/admin/calls", show_calls)
    page_route("/admin/jobs", show_jobs)
    page_route("/admin/events", show_events)

    @app.post("/admin/portals/{name}/connect", include_in_schema=False)
    async def connect(request: Request, name: str) -> Response:
        checked = await posted(request)
        if isinstance(checked, Response):
            return checked
        page, _ = checked
        portal = await page.gw.store.portal(name)
        if portal is None:
            return await _portals(page, f"no portal named {name!r}")
        try:
            url = await page.gw.connector.ticket_url(portal)
        except B24GateError as exc:
            return await _portals(page, exc.message)
        # The real connect flow: /oauth/start spends the ticket and sends the browser on.
        return _redirect(url)

    @app.post("/admin/clients", include_in_schema=False)
    async def create_client(request: Request) -> Response:
        checked = await posted(request)
        if isinstance(checked, Response):
            return checked
        page, form = checked
        try:
            wanted = new_client(
                form.get("name", "").strip(),
                _split(form.get("portals")),
                methods=_split(form.get("methods")),
                ips=_split(form.get("ips")),
                events=_split(form.get("events")),
            )
            issued = await add_client(page.gw.store, wanted)
        except B24GateError as exc:
            return await _clients(page, error=exc.message, given=form)
        # Shown in this answer only: not in a URL, not stored, never shown again.
        return await _clients(page, key=issued.key)

    @app.post("/admin/clients/revoke", include_in_schema=False)
    async def revoke(request: Request) -> Response:
        checked = await posted(request)
        if isinstance(checked, Response):
            return checked
        page, form = checked
        name = form.get("name", "")
        t = page.t
        if form.get("confirm") != "yes":
            ask = join(
                [
                    render("<p>{text}</p>", text=t["revoke.text"]),
                    _form(
                        page,
                        "/admin/clients/revoke",
                        render(
                            "{name}{confirm}<button id='confirm' type='submit' class='danger'>"
                            "{label}</button> <a href='/admin/clients'>{cancel}</a>",
                            name=hidden("name", name),
                            confirm=hidden("confirm", "yes"),
                            label=t["confirm"],
                            cancel=t["cancel"],
                        ),
                    ),
                ]
            )
            return _full(page, "clients", t["revoke.title"].format(name=name), ask)
        try:
            await revoke_client(page.gw.store, name)
        except B24GateError as exc:
            return await _clients(page, error=exc.message)
        return await _clients(page, notice=t["done.revoked"].format(name=name))

    @app.post("/admin/clients/methods", include_in_schema=False)
    async def change_methods(request: Request) -> Response:
        checked = await posted(request)
        if isinstance(checked, Response):
            return checked
        page, form = checked
        name = form.get("name", "")
        try:
            await set_client_methods(page.gw.store, name, _split(form.get("methods")))
        except B24GateError as exc:
            return await _clients(page, error=exc.message)
        return await _clients(page, notice=page.t["done.methods"].format(name=name))

    @app.get("/admin/static/{name}", include_in_schema=False)
    async def static(request: Request, name: str) -> Response:
        kind = _STATIC.get(name)
        if kind is None:
            return _answer("", 404)
        body = resources.files(__package__).joinpath("admin_static", name).read_bytes()
        return Response(body, media_type=kind, headers=ADMIN_HEADERS)

    @app.api_route("/admin/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
    async def elsewhere(request: Request, rest: str) -> Response:
        if _sessions(gateway(request)) is None:
            return _off(request)
        lang = _lang(request)
        return _bare(lang, texts(lang)["not_found"], Markup(""), 404)
