"""``POST /bitrix/install``: installing the app connects a portal the administrator let
install events connect (``connect_by_install``), with the event's tokens checked at the
trusted OAuth server and at the portal itself first; forged events change nothing; the
uninstall event disconnects the portal only with the install's application token.
(The attacks of another portal's tokens, a missing member_id and the rate limit are in
tests/security/test_install_forgery.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from aiohttp import web

from b24gate.store import Grant, Portal
from b24gate.testing import parse_php_query

from .conftest import Stack


@dataclasses.dataclass
class Trap:
    """A loopback port that counts every connection: nothing should ever knock."""

    url: str
    connections: int = 0


@pytest.fixture
async def trap() -> AsyncIterator[Trap]:
    found = Trap("")

    async def knock(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        found.connections += 1
        writer.close()

    server = await asyncio.start_server(knock, "127.0.0.1", 0)
    found.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield found
    server.close()
    await server.wait_closed()


@pytest.fixture
async def capture() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A handler URL that keeps the raw bodies Bitrix24 (the sandbox) posts to it."""
    bodies: list[bytes] = []

    async def keep(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.json_response({"result": "ok"})

    app = web.Application()
    app.router.add_post("/", keep)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/", bodies
    await runner.cleanup()


def handler(stack: Stack) -> str:
    return f"{stack.base_url}/bitrix/install"


async def install(stack: Stack, **body: Any) -> dict[str, Any]:
    """Have the sandbox (re)install an app and deliver ONAPPINSTALL; the gateway's answer."""
    response = await stack.control.post(
        "/_sandbox/events/install", json={"url": handler(stack), **body}
    )
    assert response.status_code == 200, response.text
    delivered: dict[str, Any] = response.json()["delivered"]
    return delivered


async def uninstall(stack: Stack, **body: Any) -> dict[str, Any]:
    response = await stack.control.post(
        "/_sandbox/events/uninstall", json={"url": handler(stack), **body}
    )
    assert response.status_code == 200, response.text
    delivered: dict[str, Any] = response.json()["delivered"]
    return delivered


async def snapshot(stack: Stack, name: str = "demo") -> tuple[Portal | None, Grant | None]:
    portal = await stack.gateway.store.portal(name)
    assert portal is not None
    return portal, await stack.gateway.store.grant(portal)


def refused(delivered: dict[str, Any], status: int = 403) -> None:
    assert delivered["status"] == status, delivered
    body = httpx.Response(200, content=delivered["body"]).json()
    assert body["success"] is False
    assert body["code"] == ("event_refused" if status == 403 else "oauth_unavailable")


# -- a genuine install -------------------------------------------------------------------


async def test_installing_the_app_connects_the_portal(
    stack: Stack, logs: pytest.LogCaptureFixture
) -> None:
    await stack.add_portal(connect_by_install=True)
    key = await stack.add_client()
    assert (await stack.call(key, {"method": "profile"})).status_code == 409
    await stack.control.post("/_sandbox/counters/reset")

    delivered = await install(stack)
    assert delivered["status"] == 200, delivered
    assert httpx.Response(200, content=delivered["body"]).json() == {"result": "ok"}

    portal, grant = await snapshot(stack)
    assert portal is not None
    assert grant is not None
    sandbox = stack.sandbox
    assert (portal.state, portal.state_reason) == ("connected", None)
    assert portal.member_id == sandbox.portal.member_id
    assert portal.application_token == sandbox.portal.app.application_token
    assert portal.client_endpoint == f"{sandbox.base_url}/rest/"
    assert portal.granted_scope == "crm,catalog,user"
    assert grant.server_endpoint is None  # the event's is never trusted
    assert grant.user_id == 1
    assert grant.access_expires_at == pytest.approx(sandbox.portal.clock.now() + 3600, abs=5)

    answer = await stack.call(key, {"method": "profile"})
    assert answer.status_code == 200, answer.text
    counters = await stack.counters()
    assert counters["grants"] == {"authorization_code": 0, "refresh_token": 0}
    assert counters["secret_in_query"] == 0
    urls = (await stack.control.get("/_sandbox/received")).json()["urls"]
    assert "/rest/app.info" in urls  # verified, with the token in the body

    # The grant is a real one: it refreshes like any other.
    await stack.control.post("/_sandbox/expire-access-tokens")
    assert (await stack.call(key, {"method": "profile"})).status_code == 200
    assert (await stack.counters())["grants"]["refresh_token"] == 1

    secrets = (await stack.control.get("/_sandbox/secrets")).json()["secrets"]
    text = "\n".join(r.getMessage() for r in logs.records if r.name.startswith("b24gate"))
    assert "connected by the application's install event" in text
    for secret in secrets:
        assert secret not in text


async def test_the_same_fields_are_accepted_as_json_and_a_form_replayed(
    stack: Stack, capture: tuple[str, list[bytes]]
) -> None:
    url, bodies = capture
    await stack.add_portal(connect_by_install=True)
    response = await stack.control.post("/_sandbox/events/install", json={"url": url})
    assert response.status_code == 200
    fields = parse_php_query(bodies[0].decode())
    assert fields["event"] == "ONAPPINSTALL"
    assert set(fields["auth"]) >= {"access_token", "refresh_token", "application_token"}

    as_json = await stack.http.post("/bitrix/install", json=fields)
    assert as_json.status_code == 200, as_json.text
    assert as_json.json() == {"result": "ok"}
    portal, grant = await snapshot(stack)
    assert portal is not None
    assert grant is not None
    assert portal.state == "connected"
    assert grant.access_token == fields["auth"]["access_token"]

    # The installation callback of a "uses only API" app: the same auth block, no `event`.
    pairs = [(k, v) for k, v in parse_qsl(bodies[0].decode()) if k != "event"]
    await stack.gateway.store.mark_portal("demo", "not_connected", "reset by the test")
    as_form = await stack.http.post("/bitrix/install", data=dict(pairs))
    assert as_form.status_code == 200, as_form.text
    portal, _ = await snapshot(stack)
    assert portal is not None
    assert portal.state == "connected"


# -- forged installs change nothing --------------------------------------------------------


@pytest.fixture
async def connected_portal(stack: Stack) -> tuple[Stack, tuple[Portal | None, Grant | None]]:
    """Portal `demo` connected through the OAuth flow; its stored state before any event."""
    await stack.add_portal()
    assert (await stack.connect()).status_code == 200
    return stack, await snapshot(stack)


async def test_a_token_app_info_rejects_changes_nothing(
    connected_portal: tuple[Stack, tuple[Portal | None, Grant | None]],
) -> None:
    stack, before = connected_portal
    refused(await install(stack, auth={"access_token": "forged"}))
    assert await snapshot(stack) == before


async def test_another_apps_token_changes_nothing(
    connected_portal: tuple[Stack, tuple[Portal | None, Grant | None]],
) -> None:
    stack, before = connected_portal
    other = (await stack.control.post("/_sandbox/apps", json={"client_id": "local.other"})).json()
    refused(await install(stack, client_id=other["client_id"]))
    assert await snapshot(stack) == before


async def test_an_unregistered_domain_is_refused_and_nothing_it_names_is_contacted(
    connected_portal: tuple[Stack, tuple[Portal | None, Grant | None]], trap: Trap
) -> None:
    stack, before = connected_portal
    await stack.control.post("/_sandbox/counters/reset")
    forged = {
        "domain": trap.url.removeprefix("http://"),
        "server_endpoint": f"{trap.url}/rest/",
        "client_endpoint": f"{trap.url}/rest/",
    }
    refused(await install(stack, auth=forged))
    assert await snapshot(stack) == before
    assert trap.connections == 0
    assert (await stack.counters())["rest_calls"] == 0  # not even app.info was asked


async def test_foreign_endpoints_in_a_genuine_event_are_never_used(
    stack: Stack, trap: Trap
) -> None:
    await stack.add_portal(connect_by_install=True)
    key = await stack.add_client()
    forged = {"server_endpoint": f"{trap.url}/rest/", "client_endpoint": f"{trap.url}/rest/"}
    delivered = await install(stack, auth=forged)
    assert delivered["status"] == 200, delivered
    portal, grant = await snapshot(stack)
    assert portal is not None
    assert grant is not None
    assert portal.client_endpoint is None  # not on the registered host: not taken
    assert grant.server_endpoint is None
    assert (await stack.call(key, {"method": "profile"})).status_code == 200
    await stack.control.post("/_sandbox/expire-access-tokens")
    assert (await stack.call(key, {"method": "profile"})).status_code == 200
    assert (await stack.counters())["grants"]["refresh_token"] == 1  # at the registered server
    assert trap.connections == 0


async def test_another_member_id_is_refused(
    connected_portal: tuple[Stack, tuple[Portal | None, Grant | None]],
) -> None:
    stack, before = connected_portal
    refused(await install(stack, auth={"member_id": "f" * 32}))
    assert await snapshot(stack) == before


async def test_an_unreachable_oauth_server_is_503_and_changes_nothing(
    connected_portal: tuple[Stack, tuple[Portal | None, Grant | None]],
) -> None:
    stack, before = connected_portal
    await stack.control.post("/_sandbox/faults", json={"kind": "500", "target": "rest"})
    delivered = await install(stack)
    refused(delivered, status=503)
    assert await snapshot(stack) == before


async def test_malformed_events_are_400_or_413(stack: Stack) -> None:
    await stack.add_portal()
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"content": b"\xff\xfe", "headers": {"content-type": "text/plain"}}, 400, "invalid_json"),
        ({"content": b"[1]", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ({"data": {"event": "ONAPPINSTALL"}}, 400, "invalid_request"),
        ({"data": {"event": "ONAPPINSTALL", "auth[access_token]": "x"}}, 400, "invalid_request"),
        ({"data": {"event": "ONCRMDEALADD", "auth[access_token]": "x"}}, 400, "unknown_event"),
        ({"content": b"a=" + b"x" * 70_000}, 413, "body_too_large"),
    ]
    for request, status, code in cases:
        response = await stack.http.post("/bitrix/install", **request)
        assert response.status_code == status, (request, response.text)
        assert response.json()["code"] == code
    portal, grant = await snapshot(stack)
    assert portal is not None
    assert (portal.state, grant) == ("not_connected", None)
    assert (await stack.counters())["rest_calls"] == 0


# -- uninstall -----------------------------------------------------------------------------


async def test_the_uninstall_event_disconnects_the_portal(stack: Stack) -> None:
    await stack.add_portal(connect_by_install=True)
    key = await stack.add_client()
    assert (await install(stack))["status"] == 200
    assert (await stack.call(key, {"method": "profile"})).status_code == 200

    delivered = await uninstall(stack)
    assert delivered["status"] == 200, delivered
    portal, grant = await snapshot(stack)
    assert portal is not None
    assert (portal.state, portal.state_reason) == (
        "not_connected",
        "the application was uninstalled",
    )
    assert grant is None
    assert portal.application_token is None
    answer = await stack.call(key, {"method": "profile"})
    assert answer.status_code == 409
    assert "the application was uninstalled" in answer.json()["error"]
    refused(await uninstall(stack))  # a replay finds no token to match


async def test_an_uninstall_with_the_wrong_token_changes_nothing(stack: Stack) -> None:
    await stack.add_portal(connect_by_install=True)
    assert (await install(stack))["status"] == 200
    before = await snapshot(stack)
    refused(await uninstall(stack, auth={"application_token": "0" * 32}))
    refused(await uninstall(stack, auth={"application_token": ""}))
    assert await snapshot(stack) == before


async def test_an_uninstall_for_a_portal_never_installed_is_refused(
    connected_portal: tuple[Stack, tuple[Portal | None, Grant | None]],
) -> None:
    stack, before = connected_portal
    portal, _ = before
    assert portal is not None
    assert portal.application_token is None  # connected by the OAuth flow
    refused(await uninstall(stack))
    assert await snapshot(stack) == before
