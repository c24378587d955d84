"""The admin page at /admin: the hostile requests first (no session, forged cookies, forms
from elsewhere, guessing the token, names that are markup), then what an administrator does
with it against the sandbox."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from pydantic import SecretStr

from b24gate.testing import (
    ADMIN_SESSION_TTL,
    AdminSessions,
    AdminTokenGuesses,
    admin_same_origin,
)

from .conftest import MakeStack, Stack, Tls

TOKEN = "admin-token-for-the-admin-page-tests-0123456789"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGES = ("/admin/portals", "/admin/clients", "/admin/calls", "/admin/jobs", "/admin/events")


@dataclass
class Admin:
    """A browser signed in to the admin page of ``stack``."""

    stack: Stack
    http: httpx.AsyncClient

    @property
    def origin(self) -> dict[str, str]:
        return {"Origin": self.stack.base_url}

    async def sign_in(self, token: str = TOKEN) -> httpx.Response:
        return await self.http.post("/admin/sign-in", data={"token": token}, headers=self.origin)

    async def page(self, path: str, **params: str) -> httpx.Response:
        answer = await self.http.get(path, params=params)
        assert answer.status_code == 200, answer.text
        return answer

    async def csrf(self) -> str:
        found = re.search(r"name='csrf' value='([^']+)'", (await self.page("/admin/portals")).text)
        assert found is not None
        return found.group(1)

    async def post(
        self, path: str, data: dict[str, str], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        form = {"csrf": await self.csrf(), **data}
        return await self.http.post(path, data=form, headers=headers or self.origin)

    async def create(self, name: str = "erp", **fields: str) -> str:
        answer = await self.post("/admin/clients", {"name": name, "portals": "demo", **fields})
        assert answer.status_code == 200, answer.text
        found = re.search(r"<code id='new-key'>([^<]+)</code>", answer.text)
        assert found is not None, answer.text
        return found.group(1)


async def _admin(stack: Stack, *, signed_in: bool = True) -> Admin:
    http = httpx.AsyncClient(base_url=stack.base_url, timeout=30, verify=stack.verify)
    admin = Admin(stack, http)
    if signed_in:
        assert (await admin.sign_in()).status_code == 303
    return admin


@pytest.fixture
async def admin(make_stack: MakeStack) -> AsyncIterator[Admin]:
    stack = await make_stack(admin_token=TOKEN)
    await stack.add_portal()
    admin = await _admin(stack)
    yield admin
    await admin.http.aclose()


def _headers_ok(answer: httpx.Response) -> None:
    assert answer.headers["content-security-policy"] == CSP, answer.request.url
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["referrer-policy"] == "same-origin"


async def _call(stack: Stack, key: str, method: str = "crm.deal.list") -> httpx.Response:
    return await stack.call(key, {"portal": "demo", "method": method})


# -- hostile requests ------------------------------------------------------------------


async def test_without_a_session_every_page_sends_to_sign_in_and_no_form_acts(
    admin: Admin,
) -> None:
    stranger = await _admin(admin.stack, signed_in=False)
    for path in ("/admin", *PAGES):
        answer = await stranger.http.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == "/admin/sign-in"
    answer = await stranger.http.post(
        "/admin/clients", data={"name": "x", "portals": "demo"}, headers=admin.origin
    )
    assert answer.status_code == 303
    assert await admin.stack.gateway.store.client_by_name("x") is None
    form = await stranger.http.get("/admin/sign-in")
    assert "id='token' name='token' type='password'" in form.text
    assert "id='sign-in'" in form.text
    await stranger.http.aclose()


async def test_a_forged_tampered_expired_or_outdated_cookie_is_no_session(admin: Admin) -> None:
    stack = admin.stack
    real = admin.http.cookies["b24gate_admin"]
    derived = stack.gateway.store.derive_key(b"admin page")
    expired = AdminSessions(derived, TOKEN, clock=lambda: time.time() - ADMIN_SESSION_TTL - 5)
    foreign = AdminSessions(b"\x00" * 32, TOKEN)
    tampered = real[:-1] + ("0" if real[-1] != "0" else "1")
    issued, nonce, mac = real.split(".")
    older = f"{int(issued) - 3600}.{nonce}.{mac}"  # a signed time moved: the signature fails
    for cookie in ("", "x", tampered, older, expired.issue(), foreign.issue(), real + "."):
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as browser:
            browser.cookies.set("b24gate_admin", cookie)
            answer = await browser.get("/admin/portals")
        assert answer.status_code == 303, cookie
    assert (await admin.http.get("/admin/portals")).status_code == 200
    # A new admin token signs everyone out.
    stack.gateway.settings = stack.settings.model_copy(
        update={"admin_token": SecretStr("another-admin-token-0123456789")}
    )
    assert (await admin.http.get("/admin/portals")).status_code == 303


async def test_a_form_without_its_check_or_from_another_origin_changes_nothing(
    admin: Admin,
) -> None:
    stack = admin.stack
    await stack.connect()
    key = await admin.create("victim")
    csrf = await admin.csrf()
    evil = {"Origin": "https://evil.example"}
    attempts = [
        ("/admin/clients/revoke", {"name": "victim", "confirm": "yes"}, admin.origin),
        (
            "/admin/clients/revoke",
            {"name": "victim", "confirm": "yes", "csrf": "0" * 64},
            admin.origin,
        ),
        ("/admin/clients/revoke", {"name": "victim", "confirm": "yes", "csrf": csrf}, evil),
        ("/admin/clients/revoke", {"name": "victim", "confirm": "yes", "csrf": csrf}, {}),
        (
            "/admin/clients/revoke",
            {"name": "victim", "confirm": "yes", "csrf": csrf},
            {"Origin": "null"},
        ),
        (
            "/admin/clients/revoke",
            {"name": "victim", "confirm": "yes", "csrf": csrf},
            {"Referer": "https://evil.example/admin/clients"},
        ),
        ("/admin/clients/methods", {"name": "victim", "methods": "user.*", "csrf": csrf}, evil),
        ("/admin/clients", {"name": "mallory", "portals": "demo", "csrf": csrf}, evil),
        ("/admin/portals/demo/connect", {"csrf": csrf}, evil),
        ("/admin/sign-out", {"csrf": csrf}, evil),
    ]
    for path, form, headers in attempts:
        answer = await admin.http.post(path, data=form, headers=headers)
        assert answer.status_code == 403, (path, form, headers)
        _headers_ok(answer)
    victim = await stack.gateway.store.client_by_name("victim")
    assert victim is not None
    assert victim.methods == ()
    assert await stack.gateway.store.client_by_name("mallory") is None
    assert (await _call(stack, key)).status_code == 200
    # Still signed in, and the same form with its check from the page's origin works.
    answer = await admin.http.post(
        "/admin/clients/revoke",
        data={"name": "victim", "confirm": "yes", "csrf": csrf},
        headers={"Referer": f"{stack.base_url}/admin/clients"},
    )
    assert answer.status_code == 200
    assert (await _call(stack, key)).status_code == 401


async def test_a_cookie_or_check_that_is_not_ascii_is_refused_not_an_error(admin: Admin) -> None:
    # hmac.compare_digest raises on str holding anything but ASCII: a 500 and a traceback
    # in the log for whoever sends such a cookie, by the thousand.
    stack = admin.stack
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as browser:
        for value in (b"1.a.\xc3\xa9", b"1.a." + "\u00e9".encode() * 64):
            answer = await browser.get(
                "/admin/portals", headers=[(b"cookie", b"b24gate_admin=" + value)]
            )
            assert answer.status_code == 303, value
    await admin.create("victim")
    answer = await admin.http.post(
        "/admin/clients/revoke",
        data={"name": "victim", "confirm": "yes", "csrf": "\u00e9" * 64},
        headers=admin.origin,
    )
    assert answer.status_code == 403
    victim = await stack.gateway.store.client_by_name("victim")
    assert victim is not None
    assert victim.revoked_at is None


async def test_what_a_caller_without_a_key_sends_is_shown_harmless(admin: Admin) -> None:
    stack = admin.stack
    await stack.connect()
    key = await stack.add_client("erp")
    # The key in the header and, by mistake, as the path's one segment (a webhook URL
    # without its user id or method), which the frame takes for the method; and a NUL,
    # which PostgreSQL cannot store.
    bearer = {"Authorization": f"Bearer {key}"}
    for path in (f"/rest/{key}", f"/rest/{key}.json", f"/rest/{key}?auth=b24_x"):
        assert (await stack.http.get(path, headers=bearer)).status_code >= 400, path
    assert (await stack.http.get("/rest/1/nokey/a%00b%1B")).status_code == 401
    page = (await admin.page("/admin/calls")).text
    assert key not in page
    assert key[:17] + "***" in page
    assert "a\\x00b\\x1b" in page
    assert "\x00" not in page


async def test_an_oversized_form_is_refused_unread(admin: Admin) -> None:
    answer = await admin.post(
        "/admin/clients", {"name": "big", "portals": "demo", "x": "a" * 70_000}
    )
    assert answer.status_code == 403
    assert await admin.stack.gateway.store.client_by_name("big") is None


async def test_a_form_of_too_many_fields_is_refused_not_an_error(admin: Admin) -> None:
    # parse_qsl raises ValueError past max_num_fields: anyone may post the sign-in form
    # (Origin is only a header to a script), so a 500 and a traceback for anyone.
    stranger = await _admin(admin.stack, signed_in=False)
    fields = "&".join(f"f{i}=x" for i in range(30))
    answer = await stranger.http.post(
        "/admin/sign-in",
        content=f"{fields}&token={TOKEN}",
        headers={**admin.origin, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 401
    assert "set-cookie" not in answer.headers
    await stranger.http.aclose()
    csrf = await admin.csrf()
    answer = await admin.http.post(
        "/admin/clients",
        content=f"{fields}&csrf={csrf}&name=many&portals=demo",
        headers={**admin.origin, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 403
    assert await admin.stack.gateway.store.client_by_name("many") is None


async def test_guessing_the_token_is_limited_per_address(admin: Admin) -> None:
    guesser = await _admin(admin.stack, signed_in=False)
    for _ in range(5):
        answer = await guesser.sign_in("wrong")
        assert answer.status_code == 401
        assert "id='error'" in answer.text
        assert "b24gate_admin" not in answer.headers.get("set-cookie", "")
    answer = await guesser.sign_in()  # even the right token, now
    assert answer.status_code == 429
    assert 1 <= int(answer.headers["retry-after"]) <= 60
    assert "id='error'" in answer.text
    assert "b24gate_admin" not in answer.headers.get("set-cookie", "")
    _headers_ok(answer)
    await guesser.http.aclose()


@pytest.mark.parametrize("route", ["/metrics", "/oauth/start?portal=demo"])
async def test_the_routes_that_take_the_admin_token_share_the_limit(
    admin: Admin, route: str
) -> None:
    # /metrics and /oauth/start?portal= take the admin token too: guessing there counts
    # against the same budget, and the sign-in form is no fresh start after it.
    http = admin.stack.http
    for _ in range(5):
        answer = await http.get(route, headers={"Authorization": "Bearer wrong-guess"})
        assert answer.status_code in (400, 403), answer.text
    right = {"Authorization": f"Bearer {TOKEN}"}
    answer = await http.get(route, headers=right, follow_redirects=False)
    assert answer.status_code == 429  # even the right token, now
    assert 1 <= int(answer.headers["retry-after"]) <= 60
    guesser = await _admin(admin.stack, signed_in=False)
    assert (await guesser.sign_in()).status_code == 429
    await guesser.http.aclose()


def test_an_ipv6_guesser_cannot_start_afresh_within_its_64() -> None:
    limit = AdminTokenGuesses()
    for i in range(5):
        limit.failed(f"2001:db8:1:2::{i + 1:x}")
    assert limit.retry_after("2001:db8:1:2:ffff::1") > 0
    assert limit.retry_after("2001:db8:1:3::1") == 0
    assert limit.retry_after("192.0.2.1") == 0


async def test_a_sign_in_from_another_site_is_refused(admin: Admin) -> None:
    stranger = await _admin(admin.stack, signed_in=False)
    for headers in ({"Origin": "https://evil.example"}, {}):
        answer = await stranger.http.post("/admin/sign-in", data={"token": TOKEN}, headers=headers)
        assert answer.status_code == 403
        assert "set-cookie" not in answer.headers
    await stranger.http.aclose()


async def test_without_an_admin_token_there_is_no_page(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as browser:
        for path in ("/admin", "/admin/sign-in", *PAGES, "/admin/anything"):
            answer = await browser.get(path)
            assert answer.status_code == 404, path
            assert "B24GATE_ADMIN_TOKEN" in answer.text
            _headers_ok(answer)
        answer = await browser.post(
            "/admin/sign-in", data={"token": ""}, headers={"Origin": stack.base_url}
        )
        assert answer.status_code == 404
        assert "set-cookie" not in answer.headers


async def test_names_and_methods_that_are_markup_show_as_text(admin: Admin) -> None:
    stack = admin.stack
    name = "<script>alert(1)</script>"
    await admin.create(name)
    page = (await admin.page("/admin/clients")).text
    assert "<script>alert" not in page
    assert "data-client='&lt;script&gt;alert(1)&lt;/script&gt;'" in page
    method = "x'><img src=x onerror=alert(1)>"
    assert (await _call(stack, await stack.add_client("probe"), method)).status_code == 400
    calls = (await admin.page("/admin/calls", code="invalid_method")).text
    assert "<img" not in calls
    assert "x&#x27;&gt;&lt;img src=x onerror=alert(1)&gt;" in calls
    filtered = (await admin.page("/admin/calls", client="<b>")).text
    assert "<b>" not in filtered.split("<main>")[1]


async def test_the_new_key_is_shown_once_and_never_again(admin: Admin) -> None:
    stack = admin.stack
    answer = await admin.post("/admin/clients", {"name": "erp", "portals": "demo"})
    assert answer.status_code == 200  # the key is in this answer, not behind a redirect
    key = re.search(r"<code id='new-key'>([^<]+)</code>", answer.text)
    assert key is not None
    assert key.group(1).startswith("b24_")
    assert "location" not in answer.headers
    for path in PAGES:
        assert key.group(1) not in (await admin.page(path)).text
    client = await stack.gateway.store.client_by_name("erp")
    assert client is not None
    assert key.group(1) not in repr(client)


async def test_every_admin_answer_carries_the_security_headers(admin: Admin) -> None:
    stranger = await _admin(admin.stack, signed_in=False)
    answers = [
        await stranger.http.get("/admin"),
        await stranger.http.get("/admin/sign-in"),
        await stranger.sign_in("wrong"),
        await admin.http.get("/admin"),
        await admin.http.get("/admin/static/admin.css"),
        await admin.http.get("/admin/static/admin.js"),
        await admin.http.get("/admin/static/../_app.py"),
        await admin.http.get("/admin/nothing-here"),
        await admin.http.get("/admin/lang/ru", params={"next": "/admin/clients"}),
    ]
    answers += [await admin.http.get(path) for path in PAGES]
    for answer in answers:
        _headers_ok(answer)
    css, js, outside = answers[4], answers[5], answers[6]
    assert (css.status_code, css.headers["content-type"].split(";")[0]) == (200, "text/css")
    assert (js.status_code, js.headers["content-type"].split(";")[0]) == (200, "text/javascript")
    assert outside.status_code == 404
    await stranger.http.aclose()


async def test_the_session_cookie_is_httponly_strict_and_secure_under_https(
    make_stack: MakeStack, tls: Tls
) -> None:
    plain = await _admin(await make_stack(admin_token=TOKEN), signed_in=False)
    cookie = (await plain.sign_in()).headers["set-cookie"]
    await plain.http.aclose()
    assert cookie.startswith("b24gate_admin=")
    for flag in ("HttpOnly", "Path=/", "SameSite=strict", "Max-Age=28800"):
        assert flag in cookie
    assert "Secure" not in cookie
    secure = await _admin(await make_stack(tls=tls, admin_token=TOKEN), signed_in=False)
    cookie = (await secure.sign_in()).headers["set-cookie"]
    lang = (await secure.http.get("/admin/lang/ru")).headers["set-cookie"]
    await secure.http.aclose()
    assert cookie.startswith("__Host-b24gate_admin=")
    for flag in ("HttpOnly", "Path=/", "SameSite=strict", "Secure"):
        assert flag in cookie
    assert "Domain" not in cookie
    assert lang.startswith("lang=ru")
    assert "Secure" in lang


async def test_the_language_switch_goes_only_to_admin_pages(admin: Admin) -> None:
    answer = await admin.http.get("/admin/lang/ru", params={"next": "/admin/clients"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/clients"
    assert "lang=ru" in answer.headers["set-cookie"]
    for elsewhere in ("https://evil.example/", "//evil.example/admin", "/admin\\@evil"):
        answer = await admin.http.get("/admin/lang/en", params={"next": elsewhere})
        assert answer.headers["location"] == "/admin"


# -- what an administrator does -----------------------------------------------------------


async def test_sign_in_and_out(admin: Admin) -> None:
    page = await admin.page("/admin/portals")
    for nav in ("nav-portals", "nav-clients", "nav-calls", "nav-jobs", "nav-events"):
        assert f"id='{nav}'" in page.text
    assert "id='sign-out'" in page.text
    assert "id='lang-ru'" in page.text
    assert "id='lang-en'" in page.text
    assert (await admin.http.get("/admin")).headers["location"] == "/admin/portals"
    answer = await admin.post("/admin/sign-out", {})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/sign-in"
    assert (await admin.http.get("/admin/portals")).status_code == 303


async def test_a_copy_of_a_signed_out_cookie_is_no_session(admin: Admin) -> None:
    # Someone copied the cookie (a shared machine, a proxy log) before the administrator
    # signed out: the copy is dead too, on this replica and any other on the same store.
    copied = httpx.AsyncClient(
        base_url=admin.stack.base_url, cookies=dict(admin.http.cookies), timeout=30
    )
    assert (await copied.get("/admin/portals")).status_code == 200
    assert (await admin.post("/admin/sign-out", {})).status_code == 303
    answer = await copied.get("/admin/portals")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/sign-in"
    await copied.aclose()
    # A new sign-in is a new session.
    assert (await admin.sign_in()).status_code == 303
    assert (await admin.http.get("/admin/portals")).status_code == 200


async def test_the_connect_button_runs_the_real_connect_flow(admin: Admin) -> None:
    stack = admin.stack
    page = (await admin.page("/admin/portals")).text
    row = re.search(r"<tr data-portal='demo'>.*?</tr>", page)
    assert row is not None
    assert "<td data-field='state'><span class='state state-not_connected'>not_connected" in (
        row.group(0)
    )
    assert "data-action='connect'>Connect</button>" in row.group(0)
    answer = await admin.post("/admin/portals/demo/connect", {})
    # A page that moves on at once (a redirect of the form's POST to Bitrix24 would be
    # blocked by form-action 'self'), with the ticket's link for a browser that does not.
    assert answer.status_code == 200
    _headers_ok(answer)
    found = re.search(r"<a id='continue' href='([^']+)'>", answer.text)
    assert found is not None
    target = found.group(1)
    assert target.startswith(f"{stack.base_url}/oauth/start?ticket=")
    assert f"<meta http-equiv='refresh' content='0;url={target}'>" in answer.text
    async with httpx.AsyncClient(follow_redirects=True, timeout=10) as browser:
        done = await browser.get(target)
    assert done.status_code == 200
    assert "Portal connected" in done.text
    page = (await admin.page("/admin/portals")).text
    assert "state-connected'>connected</span>" in page
    assert "data-action='connect'>Re-authorize</button>" in page
    portal = await stack.gateway.store.portal("demo")
    assert portal is not None
    assert portal.state == "connected"


async def test_a_portal_needing_authorization_shows_why(admin: Admin) -> None:
    await admin.stack.connect()
    await admin.stack.gateway.store.mark_portal("demo", "needs_authorization", "invalid_grant")
    page = (await admin.page("/admin/portals")).text
    assert "state-needs_authorization'>needs_authorization</span>" in page
    assert "<td data-field='reason'>invalid_grant</td>" in page


async def test_clients_are_created_limited_and_revoked_from_the_page(admin: Admin) -> None:
    stack = admin.stack
    await stack.connect()
    key = await admin.create("erp", methods="crm.*", ips="127.0.0.1/32")
    assert (await _call(stack, key)).status_code == 200
    page = (await admin.page("/admin/clients")).text
    row = re.search(r"<tr data-client='erp'.*?</tr>", page)
    assert row is not None
    assert "name='methods' value='crm.*'" in row.group(0)
    assert "127.0.0.1/32" in row.group(0)
    assert "<td data-field='hour'>1 / 0</td>" in row.group(0)
    assert "data-action='save-scopes'" in row.group(0)

    answer = await admin.post("/admin/clients/methods", {"name": "erp", "methods": "user.*"})
    assert answer.status_code == 200
    refused = await _call(stack, key)
    assert refused.status_code == 403
    assert refused.json()["code"] == "method_forbidden"
    bad = await admin.post("/admin/clients/methods", {"name": "erp", "methods": "crm deal"})
    assert bad.status_code == 400
    assert "id='error'" in bad.text

    ask = await admin.post("/admin/clients/revoke", {"name": "erp"})
    assert ask.status_code == 200
    assert "id='confirm'" in ask.text
    assert (await _call(stack, key, "user.current")).status_code == 200  # not yet
    done = await admin.post("/admin/clients/revoke", {"name": "erp", "confirm": "yes"})
    assert done.status_code == 200
    gone = await _call(stack, key, "user.current")
    assert gone.status_code == 401
    row = re.search(r"<tr data-client='erp'.*?</tr>", done.text)
    assert row is not None
    assert "data-action='revoke'" not in row.group(0)


async def test_a_bad_client_is_refused_with_the_reason_and_the_form_kept(admin: Admin) -> None:
    answer = await admin.post(
        "/admin/clients", {"name": "erp", "portals": "nowhere", "methods": "crm.*"}
    )
    assert answer.status_code == 400
    assert "id='error'" in answer.text
    assert "nowhere" in answer.text
    assert "id='client-methods' name='methods' value='crm.*'" in answer.text
    assert "new-key" not in answer.text


async def test_refused_calls_are_listed_with_their_codes_and_filtered(admin: Admin) -> None:
    stack = admin.stack
    await stack.connect()
    key = await stack.add_client("erp", methods=("crm.*",))
    await stack.add_client("other")
    assert (await _call(stack, key, "user.current")).status_code == 403
    assert (await _call(stack, "b24_000000000000_" + "x" * 43)).status_code == 401
    assert (await _call(stack, key)).status_code == 200
    page = (await admin.page("/admin/calls")).text
    assert "<table id='calls'>" in page
    row = re.search(r"<tr data-code='method_forbidden'>.*?</tr>", page)
    assert row is not None
    for text in ("<td data-field='client'>erp</td>", "<td data-field='portal'>demo</td>"):
        assert text in row.group(0)
    assert "<code>user.current</code>" in row.group(0)
    assert "127.0.0.1" in row.group(0)
    assert "data-code='unauthorized'" in page
    assert key not in page

    only = (await admin.page("/admin/calls", code="unauthorized")).text
    assert "data-code='unauthorized'" in only
    assert "data-code='method_forbidden'" not in only
    assert "id='filter-code' name='code' value='unauthorized'" in only
    by_client = (await admin.page("/admin/calls", client="erp", portal="demo")).text
    assert "data-code='method_forbidden'" in by_client
    assert "data-code='unauthorized'" not in by_client
    none = (await admin.page("/admin/calls", portal="elsewhere")).text
    assert "data-code=" not in none
    for filter_id in ("filter-code", "filter-client", "filter-portal", "filter-apply"):
        assert f"id='{filter_id}'" in page


async def test_jobs_and_event_subscriptions_are_listed(admin: Admin) -> None:
    stack = admin.stack
    await stack.connect()
    key = await stack.add_client("erp")
    job = await stack.http.post(
        "/api/v1/jobs",
        json={"portal": "demo", "commands": [{"method": "crm.deal.list"}]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert job.status_code in (200, 201, 202), job.text
    portal = await stack.gateway.store.portal("demo")
    assert portal is not None
    await stack.gateway.store.events.subscribe(portal.id, ["ONCRMDEALADD"], "offline", time.time())
    jobs = (await admin.page("/admin/jobs")).text
    job_id = job.json()["job"]["id"]
    assert f"data-job='{job_id}'" in jobs
    assert "<td>erp</td><td>demo</td>" in jobs
    events = (await admin.page("/admin/events")).text
    assert "data-event='ONCRMDEALADD'" in events
    assert "offline" in events


async def test_the_page_speaks_russian(admin: Admin) -> None:
    admin.http.cookies.set("lang", "ru")
    page = (await admin.page("/admin/portals")).text
    assert "<html lang='ru'>" in page
    assert "Порталы" in page
    assert "data-action='connect'>Подключить</button>" in page
    clients = (await admin.page("/admin/clients")).text
    assert "Создать" in clients
    async with httpx.AsyncClient(base_url=admin.stack.base_url, timeout=10) as browser:
        form = await browser.get(
            "/admin/sign-in", headers={"Accept-Language": "de;q=1, ru-RU;q=0.9, en;q=0.5"}
        )
    assert "Токен администратора" in form.text


@pytest.mark.parametrize(
    ("public_url", "origin", "referer", "same"),
    [
        ("https://gate.example.com", "https://gate.example.com", None, True),
        ("https://gate.example.com:443", "https://gate.example.com", None, True),
        ("https://Gate.Example.com", "https://gate.example.com:443", None, True),
        ("https://шлюз.рф", "https://xn--g1ah2bza.xn--p1ai", None, True),
        ("https://gate.example.com", None, "https://gate.example.com/admin/clients", True),
        ("https://gate.example.com", "http://gate.example.com", None, False),
        ("https://gate.example.com", "https://gate.example.com:8443", None, False),
        ("https://gate.example.com", "https://gate.example.com.evil.example", None, False),
        ("https://gate.example.com", None, "https://gate.example.com.evil.example/", False),
        ("https://gate.example.com", None, "https://gate.example.com@evil.example/", False),
        ("https://gate.example.com", "null", "https://gate.example.com/admin", False),
        ("https://gate.example.com", None, None, False),
    ],
)
def test_a_form_is_ours_by_scheme_host_and_port_as_a_browser_names_them(
    public_url: str, origin: str | None, referer: str | None, same: bool
) -> None:
    # A public URL written with its default port, in capitals or as an IDN is still the
    # origin browsers send; a look-alike, another port or scheme, or `null` is not.
    assert admin_same_origin(public_url, origin, referer) is same
