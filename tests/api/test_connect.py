"""Connecting a portal through the real OAuth flow: ticket, state, callback, result page."""

from __future__ import annotations

import httpx

from .conftest import MakeStack, Stack


async def test_full_connect_flow_through_http_redirects(stack: Stack) -> None:
    await stack.add_portal()
    page = await stack.connect()
    assert page.status_code == 200
    assert "Portal connected" in page.text
    # The browser went gateway -> sandbox authorize -> gateway callback.
    hosts = [str(r.url).split("/")[2] for r in page.history] + [
        page.url.host + ":" + str(page.url.port)
    ]
    assert stack.sandbox.portal.domain in hosts
    portal = await stack.gateway.store.portal("demo")
    assert portal is not None
    assert portal.state == "connected"
    assert portal.member_id == stack.sandbox.portal.member_id
    assert portal.granted_scope == "crm,catalog,user"
    assert (await stack.counters())["grants"]["authorization_code"] == 1


async def test_scope_missing_from_the_app_card_is_a_warning(make_stack: MakeStack) -> None:
    stack = await make_stack({"scope": ("crm",)})
    await stack.add_portal(scope="crm,catalog")
    page = await stack.connect()
    assert page.status_code == 200
    assert "does not grant catalog" in page.text


async def test_start_without_a_valid_ticket_is_refused(stack: Stack) -> None:
    await stack.add_portal()
    for query in ("", "?ticket=made-up", "?portal=demo"):
        response = await stack.http.get(f"/oauth/start{query}")
        assert response.status_code == 403, query
    portal = await stack.gateway.store.portal("demo")
    assert portal is not None
    url = await stack.gateway.connector.ticket_url(portal)
    async with httpx.AsyncClient() as browser:
        first = await browser.get(url)
        assert first.status_code == 302
        again = await browser.get(url)
    assert again.status_code == 403  # one-time


async def test_admin_token_can_start_the_flow(make_stack: MakeStack) -> None:
    stack = await make_stack(admin_token="admin-token-for-tests-123456")
    await stack.add_portal()
    refused = await stack.http.get(
        "/oauth/start?portal=demo", headers={"Authorization": "Bearer wrong"}
    )
    assert refused.status_code == 403
    started = await stack.http.get(
        "/oauth/start?portal=demo", headers={"Authorization": "Bearer admin-token-for-tests-123456"}
    )
    assert started.status_code == 302
    assert started.headers["location"].startswith(stack.sandbox.base_url + "/oauth/authorize/")


async def test_callback_with_a_forged_or_reused_state_is_refused(stack: Stack) -> None:
    await stack.add_portal()
    forged = await stack.http.get("/oauth/callback?code=abc&state=forged&domain=x&member_id=y")
    assert forged.status_code == 403
    assert "state" in forged.text
    missing = await stack.http.get("/oauth/callback")
    assert missing.status_code == 400
    assert (await stack.counters())["grants"]["authorization_code"] == 0


async def test_grant_from_another_domain_is_refused(stack: Stack) -> None:
    await stack.add_portal(domain="elsewhere.bitrix24.ru")
    page = await stack.connect()
    assert page.status_code == 400
    assert "not from elsewhere.bitrix24.ru" in page.text
    portal = await stack.gateway.store.portal("demo")
    assert portal is not None
    assert portal.state == "not_connected"


async def test_reconnecting_to_another_member_id_needs_force(stack: Stack) -> None:
    await stack.add_portal()
    assert (await stack.connect()).status_code == 200
    await stack.gateway.store.update_portal("demo", member_id="0" * 32)
    refused = await stack.connect()
    assert refused.status_code == 400
    assert "--force" in refused.text
    forced = await stack.connect(force=True)
    assert forced.status_code == 200
    portal = await stack.gateway.store.portal("demo")
    assert portal is not None
    assert portal.member_id == stack.sandbox.portal.member_id
