"""The admin page's pages (docs/admin.md), rendered on the server: the layout with its
navigation, and the portals, clients, refused calls, jobs and events pages, in the
language of the request (:mod:`._admin_text`). Every value is escaped (:mod:`._admin_html`).
:mod:`._admin_page` holds the routes, which check the session and call these.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from fastapi import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..core import Gateway, list_clients, list_portals
from ..store import Client
from ._admin_html import Markup, esc, hidden, join, moment, render, span
from ._admin_text import LANGUAGES, language, texts

# The page's own stylesheet and script only; forms post only to the page; never framed.
# Referrer-Policy is same-origin, not no-referrer: with no-referrer a browser sends
# `Origin: null` on a form's POST, and the origin check (._admin_page) could not tell the page's
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
_NAV: Final = ("portals", "clients", "calls", "jobs", "events")


@dataclass(frozen=True)
class Page:
    """A signed-in request: the gateway, the language and its strings, the session."""

    gw: Gateway
    lang: str
    t: Mapping[str, str]
    cookie: str
    csrf: str


Form = dict[str, str]


def language_of(request: Request) -> str:
    return language(request.cookies.get("lang"), request.headers.get("accept-language"))


def answer(body: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return HTMLResponse(body, status_code=status, headers={**ADMIN_HEADERS, **(headers or {})})


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers=ADMIN_HEADERS)


def document(lang: str, title: str, body: Markup, *, refresh: str | None = None) -> str:
    """A whole page. ``refresh``: where the browser goes at once (the connect flow)."""
    return render(
        "<!doctype html><html lang='{lang}'><head><meta charset='utf-8'>{refresh}"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>{title}</title><link rel='stylesheet' href='/admin/static/admin.css'>"
        "<link rel='icon' href='/admin/static/icon.svg'>"
        "<script src='/admin/static/admin.js' defer></script></head><body>{body}</body></html>",
        lang=lang,
        refresh=render("<meta http-equiv='refresh' content='0;url={url}'>", url=refresh)
        if refresh
        else "",
        title=title,
        body=body,
    )


def bare(lang: str, heading: str, content: Markup, status: int) -> Response:
    """A page without the navigation: signed out, refused, or switched off."""
    t = texts(lang)
    body = render("<main class='narrow'><h1>{h}</h1>{c}</main>", h=heading, c=content)
    return answer(document(lang, f"{heading} · {t['title']}", body), status)


def layout(page: Page, active: str, heading: str, content: Markup) -> Markup:
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
            next=f"/admin/{active}",
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


def full(page: Page, active: str, heading: str, content: Markup, status: int = 200) -> Response:
    body = layout(page, active, heading, content)
    return answer(document(page.lang, f"{heading} · {page.t['title']}", body), status)


def post_form(page: Page, action: str, inner: Markup, cls: str = "") -> Markup:
    return render(
        "<form method='post' action='{action}' class='{cls}'>{csrf}{inner}</form>",
        action=action,
        cls=cls,
        csrf=hidden("csrf", page.csrf),
        inner=inner,
    )


def message(text: str | None, *, error: bool = False) -> Markup:
    if not text:
        return Markup("")
    if error:
        return render("<p id='error' class='error' role='alert'>{text}</p>", text=text)
    return render("<p id='notice' class='notice' role='status'>{text}</p>", text=text)


def split_list(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def field(
    label: str, input_id: str, name: str, values: Mapping[str, str], extra: str = ""
) -> Markup:
    """A labelled text input holding ``values[name]`` (what was sent, shown again);
    ``extra``: more attributes, as markup."""
    return render(
        "<label>{label}<input id='{id}' name='{name}' value='{value}'{extra}></label>",
        label=label,
        id=input_id,
        name=name,
        value=values.get(name, ""),
        extra=Markup(extra),
    )


def table(table_id: str, headings: list[str], rows: list[Markup], empty: str) -> Markup:
    if not rows:
        return render("<p class='empty'>{empty}</p>", empty=empty)
    return render(
        "<table id='{id}'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>",
        id=table_id,
        head=join(render("<th>{h}</th>", h=h) for h in headings),
        rows=join(rows),
    )


def off_page(lang: str) -> Response:
    """No admin token is configured: no page, only how to switch it on (404)."""
    t = texts(lang)
    return bare(lang, t["off.title"], render("<p>{text}</p>", text=t["off.text"]), 404)


# -- the pages --------------------------------------------------------------------------


async def portals_page(page: Page, error: str | None = None) -> Response:
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
            action = post_form(
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
    listing = table(
        "portals",
        [t[f"col.{h}"] for h in [*heads, "operating", "action"]],
        rows,
        t["portals.none"],
    )
    return full(
        page,
        "portals",
        t["portals.title"],
        join([message(error, error=True), listing]),
        400 if error else 200,
    )


def _client_row(
    page: Page, client: Client, hour: tuple[int, int], day: tuple[int, int], last: float | None
) -> Markup:
    t = page.t
    active = client.revoked_at is None
    methods = ", ".join(client.methods)
    if active:
        methods_cell = post_form(
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
        action = post_form(
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


async def clients_page(
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
    create = post_form(
        page,
        "/admin/clients",
        join(
            [
                field(t["field.name"], "client-name", "name", values, " required maxlength='64'"),
                field(
                    t["field.portals"],
                    "client-portals",
                    "portals",
                    values,
                    render(" required placeholder='{hint}'", hint=", ".join(portal_names)),
                ),
                field(t["field.methods"], "client-methods", "methods", values),
                field(t["field.ips"], "client-ips", "ips", values),
                field(t["field.events"], "client-events", "events", values),
                render("<button id='client-create' type='submit'>{c}</button>", c=t["create"]),
            ]
        ),
        "create",
    )
    heads = ["client", "portals", "methods", "ips", "events", "created", "last_use", "hour", "day"]
    listing = table("clients", [*(t[f"col.{h}"] for h in heads), ""], rows, t["clients.none"])
    content = join(
        [
            message(error, error=True),
            message(notice),
            shown_key,
            render("<h2>{h}</h2>", h=t["clients.new"]),
            create,
            listing,
        ]
    )
    return full(page, "clients", t["clients.title"], content, 400 if error else 200)


async def calls_page(page: Page, query: Mapping[str, str]) -> Response:
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
        "<form method='get' action='/admin/calls' class='filters'>{fields}"
        "<button id='filter-apply' type='submit'>{apply}</button></form>",
        fields=join(field(t[f"filter.{f}"], f"filter-{f}", f, chosen) for f in chosen),
        apply=t["filter.apply"],
    )
    heads = ["time", "code", "status", "surface", "client", "portal", "method", "address"]
    dropped = gw.activity.dropped
    content = join(
        [
            render("<p class='note'>{note}</p>", note=t["calls.note"]),
            message(t["calls.dropped"].format(n=dropped) if dropped else None),
            filters,
            table("calls", [t[f"col.{h}"] for h in heads], rows, t["calls.none"]),
        ]
    )
    return full(page, "calls", t["calls.title"], content)


async def jobs_page(page: Page) -> Response:
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
    listing = table("jobs", [t[f"col.{h}"] for h in heads], rows, t["jobs.none"])
    return full(page, "jobs", t["jobs.title"], listing)


async def events_page(page: Page) -> Response:
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
            table(
                "subscriptions",
                [t["col.portal"], t["col.event"], t["col.mode"], t["col.since"]],
                rows,
                t["events.none"],
            ),
            render("<h2>{h}</h2>", h=t["events.log"]) if heads_rows else "",
            table(
                "event-log", [t["col.portal"], t["col.last_seq"], t["col.purged"]], heads_rows, ""
            )
            if heads_rows
            else "",
        ]
    )
    return full(page, "events", t["events.title"], content)


def sign_in_page(
    lang: str, error: str | None, status: int, headers: Mapping[str, str] | None = None
) -> Response:
    t = texts(lang)
    form = render(
        "{error}<form method='post' action='/admin/sign-in' class='sign-in'>"
        "<label for='token'>{label}</label>"
        "<input id='token' name='token' type='password' autocomplete='current-password' "
        "required autofocus><button id='sign-in' type='submit'>{button}</button></form>",
        error=message(error, error=True),
        label=t["sign_in.token"],
        button=t["sign_in.button"],
    )
    response = bare(lang, t["sign_in.title"], form, status)
    response.headers.update(headers or {})
    return response


def refused_page(lang: str) -> Response:
    """A form that did not come from the page's own origin, or without its check: 403."""
    t = texts(lang)
    text = render("<p id='error' class='error'>{text}</p>", text=t["forbidden.text"])
    return bare(lang, t["forbidden.title"], text, 403)


def not_found_page(lang: str) -> Response:
    return bare(lang, texts(lang)["not_found"], Markup(""), 404)


def connect_page(page: Page, portal: str, url: str) -> Response:
    """On the way to Bitrix24's consent page: a new navigation, not the form's redirect.

    A form's POST redirected to another origin is blocked by ``form-action 'self'`` (the
    browser checks every redirect of a form's navigation, and Bitrix24 may send the
    administrator on to its own sign-in pages); a page that moves on at once is not.
    """
    t = page.t
    heading = t["connect.title"].format(name=portal)
    content = render(
        "<p>{text}</p><p><a id='continue' href='{url}'>{label}</a></p>",
        text=t["connect.text"],
        url=url,
        label=t["connect.continue"],
    )
    body = layout(page, "portals", heading, content)
    return answer(document(page.lang, f"{heading} · {t['title']}", body, refresh=url))


def revoke_page(page: Page, name: str) -> Response:
    """The step before a client is revoked: what it means, and the button that does it."""
    t = page.t
    ask = join(
        [
            render("<p>{text}</p>", text=t["revoke.text"]),
            post_form(
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
    return full(page, "clients", t["revoke.title"].format(name=name), ask)
