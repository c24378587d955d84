"""A portal that moved to a new domain, and an on-premise portal whose licence expired."""

from __future__ import annotations

import pytest

from .conftest import Stack


async def test_moved_portal_is_found_through_the_oauth_server(
    connected: tuple[Stack, str], logs: pytest.LogCaptureFixture
) -> None:
    stack, key = connected
    old = stack.sandbox.portal.domain
    moved = (await stack.control.post("/_sandbox/move")).json()
    assert moved["domain"] != old
    await stack.control.post("/_sandbox/counters/reset")
    response = await stack.call(
        key, {"method": "crm.deal.add", "params": {"fields": {"TITLE": "m"}}}
    )
    assert response.status_code == 200, response.text
    portal = await stack.gateway.store.portal("demo")
    assert portal is not None
    assert portal.client_endpoint == f"http://{moved['domain']}/rest/"
    assert portal.member_id == stack.sandbox.portal.member_id
    counters = await stack.counters()
    assert counters["grants"]["refresh_token"] == 1
    assert counters["executed"] == 1  # the redirect was not followed with the token
    assert any("moved from" in r.getMessage() for r in logs.records)
    # Clients may name the portal by its new domain too, and later calls go straight there.
    again = await stack.call(key, {"domain": moved["domain"], "method": "profile"})
    assert again.status_code == 200
    assert (await stack.counters())["grants"]["refresh_token"] == 1


async def test_expired_on_premise_licence_is_portal_unavailable(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    await stack.control.post("/_sandbox/faults", json={"kind": "licence"})
    await stack.control.post("/_sandbox/counters/reset")
    response = await stack.call(key, {"method": "profile"})
    assert response.status_code == 502
    assert response.json()["code"] == "portal_unavailable"
    assert (await stack.counters())["grants"]["refresh_token"] == 0  # not mistaken for a move
