"""Attack: forged install and uninstall events at ``POST /bitrix/install``.

A marketplace application has one client id on every portal, and Bitrix24's central OAuth
server vouches (``app.info``) for the tokens of all of them. The attacker installs the
same application on a Bitrix24 of their own and posts its ``ONAPPINSTALL`` with the
victim's domain. Here the victim is the stack's sandbox, the attacker's portal a second
sandbox, and :class:`Central` the shared OAuth server that answers for both: the victim is
registered with it as its OAuth server, as a real marketplace portal is with
``oauth.bitrix.info``. Each portal's own REST accepts only its own tokens, as Bitrix24's do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import uvicorn
from aiohttp import web

from b24gate.api import EVENT_BURST, PeerBudget, create_app
from b24gate.sandbox import Clock, SandboxConfig, SandboxServer
from b24gate.store import Grant, Portal
from b24gate.testing import server_config

from .conftest import CLIENT_SECRET, Stack


@dataclasses.dataclass
class Central:
    """The shared OAuth server: token requests and ``app.info`` go to whichever portal's
    OAuth server knows the token (the victim's first, then the attacker's)."""

    url: str
    attacker: SandboxServer
    control: httpx.AsyncClient  # the attacker's sandbox


@pytest.fixture
async def central(stack: Stack) -> AsyncIterator[Central]:
    attacker = SandboxServer(
        SandboxConfig(client_secret=CLIENT_SECRET, auto_approve=True, rate=0), Clock()
    )
    await attacker.start()
    assert attacker.config.client_id == stack.sandbox.config.client_id  # the same app
    assert attacker.portal.member_id != stack.sandbox.portal.member_id
    upstreams = [stack.sandbox.base_url, attacker.base_url]
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "")}
        status, raw = 502, b""
        for upstream in upstreams:
            async with session.request(
                request.method, upstream + request.path_qs, data=body, headers=headers
            ) as answer:
                status, raw = answer.status, await answer.read()
            if status == 200:
                break
        return web.Response(status=status, body=raw, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/oauth/token/", forward)
    app.router.add_route("*", "/rest/app.info", forward)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    control = httpx.AsyncClient(base_url=attacker.base_url, timeout=10)
    yield Central(f"http://127.0.0.1:{runner.addresses[0][1]}", attacker, control)
    await control.aclose()
    await runner.cleanup()
    await session.close()
    await attacker.stop()


Snapshot = tuple[Portal | None, Grant | None]


async def snapshot(stack: Stack) -> Snapshot:
    portal = await stack.gateway.store.portal("demo")
    return portal, await stack.gateway.store.grant(portal) if portal else None


@pytest.fixture
async def victim(stack: Stack, central: Central) -> tuple[str, Snapshot]:
    """Portal `demo` (the stack's sandbox) connected through the shared OAuth server by its
    administrator; a client key for it; the stored state before any attack."""
    await stack.add_portal(oauth_url=central.url)
    page = await stack.connect()
    assert page.status_code == 200, page.text
    return await stack.add_client(), await snapshot(stack)


async def forge_install(stack: Stack, central: Central, **auth: str) -> dict[str, Any]:
    """The attacker's portal installs the application and its ONAPPINSTALL, with tokens
    minted for the attacker's portal, goes to the gateway naming the victim's domain."""
    response = await central.control.post(
        "/_sandbox/events/install",
        json={
            "url": f"{stack.base_url}/bitrix/install",
            "auth": {"domain": stack.sandbox.portal.domain, **auth},
        },
    )
    assert response.status_code == 200, response.text
    delivered: dict[str, Any] = response.json()["delivered"]
    return delivered


def refused(delivered: dict[str, Any]) -> None:
    assert delivered["status"] == 403, delivered
    assert httpx.Response(200, content=delivered["body"]).json()["code"] == "event_refused"


async def still_works(stack: Stack, key: str, before: Snapshot) -> None:
    """What the victim's users notice: nothing. The same grant, connected, calls answered."""
    assert await snapshot(stack) == before
    portal, grant = before
    assert portal is not None
    assert grant is not None
    assert portal.state == "connected"
    answer = await stack.call(key, {"method": "profile"})
    assert answer.status_code == 200, answer.text
    assert grant.access_token in stack.sandbox.portal.oauth.access  # still the live token


# -- another portal's tokens ---------------------------------------------------------------


@pytest.mark.parametrize("member", ["victims", "attackers"])
async def test_an_install_from_another_portal_does_not_replace_the_grant(
    stack: Stack,
    central: Central,
    victim: tuple[str, Snapshot],
    logs: pytest.LogCaptureFixture,
    member: str,
) -> None:
    key, before = victim
    portal = stack.sandbox.portal if member == "victims" else central.attacker.portal
    refused(await forge_install(stack, central, member_id=portal.member_id))
    await still_works(stack, key, before)
    if member == "victims":
        # The shared OAuth server vouched for the token; the victim's own REST refused it.
        text = "\n".join(r.getMessage() for r in logs.records)
        assert "the portal's own REST refused the event's token" in text


async def test_an_install_without_member_id_is_refused_before_anything_is_asked(
    stack: Stack, central: Central, victim: tuple[str, Snapshot]
) -> None:
    key, before = victim
    await stack.control.post("/_sandbox/counters/reset")
    refused(await forge_install(stack, central, member_id=""))
    assert (await stack.counters())["rest_calls"] == 0
    await still_works(stack, key, before)


async def test_a_genuine_reinstall_of_a_connected_portal_is_still_accepted(
    stack: Stack, central: Central, victim: tuple[str, Snapshot]
) -> None:
    key, before = victim
    delivered = await stack.control.post(
        "/_sandbox/events/install", json={"url": f"{stack.base_url}/bitrix/install"}
    )
    assert delivered.json()["delivered"]["status"] == 200, delivered.text
    portal, grant = await snapshot(stack)
    assert portal is not None
    assert grant is not None
    assert (portal.state, portal.member_id) == ("connected", before[0] and before[0].member_id)
    assert before[1] is not None
    assert grant.access_token != before[1].access_token
    assert (await stack.call(key, {"method": "profile"})).status_code == 200


# -- a portal never connected ----------------------------------------------------------------


@pytest.mark.parametrize("connect_by_install", [False, True])
async def test_a_never_connected_portal_is_not_taken_over(
    stack: Stack, central: Central, connect_by_install: bool
) -> None:
    await stack.add_portal(oauth_url=central.url, connect_by_install=connect_by_install)
    key = await stack.add_client()
    for member_id in (central.attacker.portal.member_id, stack.sandbox.portal.member_id):
        refused(await forge_install(stack, central, member_id=member_id))
    portal, grant = await snapshot(stack)
    assert portal is not None
    assert (portal.state, portal.member_id, grant) == ("not_connected", None, None)
    # 1C's writes are not sent to the attacker's portal: they are not sent at all.
    answer = await stack.call(key, {"method": "crm.deal.add", "params": {"fields": {}}})
    assert answer.status_code == 409
    # (The attacker's portal saw only the shared OAuth server's app.info questions.)
    assert not [u for u in central.attacker.portal.received if "app.info" not in u]


async def test_without_the_opt_in_even_a_genuine_install_leaves_the_portal_to_its_admin(
    stack: Stack,
) -> None:
    await stack.add_portal()
    response = await stack.control.post(
        "/_sandbox/events/install", json={"url": f"{stack.base_url}/bitrix/install"}
    )
    refused(response.json()["delivered"])
    portal, grant = await snapshot(stack)
    assert portal is not None
    assert (portal.state, grant) == ("not_connected", None)
    assert (await stack.counters())["rest_calls"] == 0  # decided before asking anyone
    await stack.gateway.store.update_portal("demo", connect_by_install=True)
    response = await stack.control.post(
        "/_sandbox/events/install", json={"url": f"{stack.base_url}/bitrix/install"}
    )
    assert response.json()["delivered"]["status"] == 200
    portal, grant = await snapshot(stack)
    assert portal is not None
    assert (portal.state, portal.member_id) == ("connected", stack.sandbox.portal.member_id)


# -- a planted application token ---------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
async def test_a_planted_application_token_does_not_survive_reauthorization(
    stack: Stack, central: Central, victim: tuple[str, Snapshot], force: bool
) -> None:
    key, _ = victim
    planted = "a" * 32
    # Left by a forged install that an older gateway accepted.
    await stack.gateway.store.update_portal("demo", application_token=planted)
    assert (await stack.connect(force=force)).status_code == 200  # the admin re-authorizes
    portal, _ = await snapshot(stack)
    assert portal is not None
    assert portal.application_token is None

    uninstall = {
        "event": "ONAPPUNINSTALL",
        "auth[domain]": stack.sandbox.portal.domain,
        "auth[member_id]": stack.sandbox.portal.member_id,
        "auth[application_token]": planted,
    }
    response = await stack.http.post("/bitrix/install", data=uninstall)
    assert response.status_code == 403
    assert response.json()["code"] == "event_refused"
    portal, grant = await snapshot(stack)
    assert portal is not None
    assert portal.state == "connected"
    assert grant is not None
    assert (await stack.call(key, {"method": "profile"})).status_code == 200


# -- flooding the handler ------------------------------------------------------------------------


async def test_one_address_past_its_budget_gets_429_and_others_do_not_notice(
    stack: Stack,
) -> None:
    await stack.add_portal()
    hostile = httpx.AsyncClient(
        base_url=stack.base_url,
        timeout=10,
        transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"),
    )
    event = {"event": "ONAPPINSTALL", "auth[access_token]": "x", "auth[refresh_token]": "y"}
    try:
        answers = [
            await hostile.post("/bitrix/install", data=event) for _ in range(EVENT_BURST + 5)
        ]
    finally:
        await hostile.aclose()
    codes = [a.json()["code"] for a in answers]
    assert codes[:EVENT_BURST] == ["event_refused"] * EVENT_BURST
    assert set(codes[EVENT_BURST:]) == {"rate_limited"}
    assert answers[-1].status_code == 429
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 10
    # Another address (Bitrix24's event server, say) is not held back, nor is anything else.
    other = await stack.http.post("/bitrix/install", data=event)
    assert (other.status_code, other.json()["code"]) == (403, "event_refused")
    started = time.perf_counter()
    assert (await stack.http.get("/healthz")).status_code == 200
    assert time.perf_counter() - started < 1.0
    assert (await stack.counters())["rest_calls"] == 0


def test_the_budget_refills_groups_an_ipv6_host_and_forgets_the_oldest(
    logs: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    budget = PeerBudget(burst=2, per_minute=6, peers=3, clock=lambda: now[0])
    assert [budget.take("198.51.100.7") for _ in range(3)] == [0.0, 0.0, pytest.approx(10.0)]
    assert budget.take("198.51.100.7") == pytest.approx(10.0)
    refusals = [r for r in logs.records if "over their budget" in r.getMessage()]
    assert len(refusals) == 1  # one line per flood, not one per request
    now[0] = 10.0
    assert budget.take("198.51.100.7") == 0.0  # one event per 10 s again
    # Every address of one IPv6 /64 shares a bucket; an IPv4-mapped address is its IPv4.
    assert budget.take("2001:db8::1") == budget.take("2001:db8::2") == 0.0
    assert budget.take("2001:db8::3") > 0
    assert budget.take("::ffff:198.51.100.7") > 0
    # At most `peers` addresses are remembered; a forgotten one starts with a full bucket.
    for n in range(3):
        budget.take(f"203.0.113.{n}")
    assert budget.take("198.51.100.7") == 0.0


async def test_events_with_no_address_do_not_share_one_bucket(stack: Stack, tmp_path: Path) -> None:
    # The gateway behind a proxy on a unix socket: no request has an address. One shared
    # bucket would let a single sender in a loop hold back Bitrix24's genuine events.
    await stack.add_portal()
    socket_path = str(tmp_path / "gateway.sock")
    server = uvicorn.Server(
        server_config(create_app(stack.settings, stack.gateway), "127.0.0.1", 0, uds=socket_path)
    )
    serving = asyncio.create_task(server.serve())
    event = {"event": "ONAPPINSTALL", "auth[access_token]": "x", "auth[refresh_token]": "y"}
    try:
        async with asyncio.timeout(30):
            while not server.started:
                assert not serving.done()
                await asyncio.sleep(0.01)
            async with httpx.AsyncClient(
                base_url="http://gateway", transport=httpx.AsyncHTTPTransport(uds=socket_path)
            ) as local:
                answers = [
                    await local.post("/bitrix/install", data=event) for _ in range(EVENT_BURST + 5)
                ]
    finally:
        server.should_exit = True
        await serving
    assert {(a.status_code, a.json()["code"]) for a in answers} == {(403, "event_refused")}


def test_a_source_that_is_no_address_is_quoted_in_the_log_and_kept_short(
    logs: pytest.LogCaptureFixture,
) -> None:
    # A trusted proxy forwards a hop as written: it cannot forge or split the refusal line.
    budget = PeerBudget(burst=1, per_minute=1)
    hop = 'unknown level=ERROR msg="forged"' + "x" * 500
    assert budget.take(hop) == 0.0
    assert budget.take(hop) > 0
    # The same first characters are the same bucket: a long hop is cut, not a new key.
    assert budget.take(hop[:64] + "y") > 0
    (line,) = [r.getMessage() for r in logs.records if "over their budget" in r.getMessage()]
    assert 'from "unknown level=ERROR msg=\\"forged\\"' in line
    assert "x" * 100 not in line


async def test_an_oversized_or_deeply_nested_event_is_a_clear_400_or_413(stack: Stack) -> None:
    await stack.add_portal()
    too_big = await stack.http.post("/bitrix/install", content=b"a=" + b"x" * 17_000)
    assert (too_big.status_code, too_big.json()["code"]) == (413, "body_too_large")
    nested = await stack.http.post(
        "/bitrix/install",
        content=b"[" * 8_000 + b"]" * 8_000,
        headers={"content-type": "application/json"},
    )
    assert (nested.status_code, nested.json()["code"]) == (400, "invalid_json")


# -- the connect callback and a refresh racing ---------------------------------------------------


async def test_a_reauthorization_during_a_failing_refresh_ends_connected(
    connected: tuple[Stack, str],
) -> None:
    """The administrator re-authorizes while a refresh of the dead grant is in flight. The
    refresh's failure must not mark the portal unauthorized after the new grant was saved:
    the callback waits for the refresh lock."""
    stack, key = connected
    await stack.control.post("/_sandbox/revoke-refresh-tokens")
    await stack.control.post("/_sandbox/expire-access-tokens")
    await stack.control.post(
        "/_sandbox/faults", json={"kind": "slow", "target": "oauth", "delay": 1.5}
    )

    async def token_requests() -> int:
        urls = (await stack.control.get("/_sandbox/received")).json()["urls"]
        return sum(url.startswith("/oauth/token") for url in urls)

    before = await token_requests()
    call = asyncio.create_task(stack.call(key, {"method": "profile"}))
    for _ in range(500):  # polled: the sandbox is another server, nothing to wait on
        if await token_requests() > before:
            break  # the refresh is at the OAuth server, held there by the fault
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the refresh never reached the OAuth server")
    assert (await stack.connect()).status_code == 200  # while the refresh hangs
    async with asyncio.timeout(20):
        assert (await call).status_code == 409  # the dead grant's refresh failed
    portal, grant = await snapshot(stack)
    assert portal is not None
    assert grant is not None
    assert (portal.state, portal.state_reason) == ("connected", None)
    assert grant.access_token in stack.sandbox.portal.oauth.access
    assert (await stack.call(key, {"method": "profile"})).status_code == 200
