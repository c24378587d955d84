"""The control API under /_sandbox/: faults, token chaos, domain move, events, seeding, counters."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from aiohttp import web

from b24gate.sandbox import Clock, SandboxServer

from .conftest import T0, MakeSandbox, connect, rest

# -- helpers ----------------------------------------------------------------------------


async def fault(http: httpx.AsyncClient, kind: str, **knobs: Any) -> httpx.Response:
    response = await http.post("/_sandbox/faults", json={"kind": kind, **knobs})
    assert response.status_code == 200, response.text
    return response


async def add_deal(http: httpx.AsyncClient, token: str, title: str = "Deal") -> httpx.Response:
    return await rest(http, "crm.deal.add", token, fields={"TITLE": title})


async def deal_total(http: httpx.AsyncClient, token: str) -> int:
    response = await rest(http, "crm.deal.list", token)
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


async def refresh(
    http: httpx.AsyncClient, client_id: str, client_secret: str, refresh_token: str
) -> httpx.Response:
    return await http.post(
        "/oauth/token/",
        data={
            "grant_type": "refresh_token",
            "client_id": client_id,
            "client_secret": client_secret,
            "refresh_token": refresh_token,
        },
    )


@dataclass
class Delivery:
    content_type: str
    raw: str
    form: dict[str, str]

    def auth(self) -> dict[str, str]:
        return {k[5:-1]: v for k, v in self.form.items() if k.startswith("auth[")}


@dataclass
class Receiver:
    """An app's event handler: records every POST it gets."""

    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got = Receiver()

    async def handle(request: web.Request) -> web.Response:
        raw = await request.text()
        got.deliveries.append(
            Delivery(request.content_type, raw, dict(parse_qsl(raw, keep_blank_values=True)))
        )
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/b24/events", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    got.url = f"http://127.0.0.1:{runner.addresses[0][1]}/b24/events"
    yield got
    await runner.cleanup()


# -- faults -----------------------------------------------------------------------------


async def test_500_fault_answers_internal_error_without_executing(
    client: httpx.AsyncClient, token: str
) -> None:
    await fault(client, "500")
    response = await add_deal(client, token)
    assert response.status_code == 500
    assert response.json() == {
        "error": "INTERNAL_SERVER_ERROR",
        "error_description": "Internal server error",
    }
    assert await deal_total(client, token) == 0


async def test_503_fault_answers_query_limit_without_executing(
    client: httpx.AsyncClient, token: str
) -> None:
    await fault(client, "503")
    response = await add_deal(client, token)
    assert response.status_code == 503
    assert response.json() == {
        "error": "QUERY_LIMIT_EXCEEDED",
        "error_description": "Too many requests",
    }
    assert await deal_total(client, token) == 0
    assert (await client.get("/_sandbox/counters")).json()["rejected_503"] == 1


async def test_slow_fault_answers_late_and_executes(client: httpx.AsyncClient, token: str) -> None:
    await fault(client, "slow", delay=0.3)
    began = time.perf_counter()
    response = await add_deal(client, token)
    assert time.perf_counter() - began >= 0.3
    assert response.status_code == 200
    assert response.json()["result"] == 1
    assert await deal_total(client, token) == 1


async def test_drop_closes_the_connection_before_executing(
    client: httpx.AsyncClient, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    await fault(client, "drop")
    with pytest.raises(httpx.RemoteProtocolError):
        await add_deal(client, token)
    assert await deal_total(client, token) == 0
    # A deliberate drop is not an error worth logging.
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_drop_with_an_unread_form_body(client: httpx.AsyncClient, token: str) -> None:
    await fault(client, "drop")
    with pytest.raises(httpx.TransportError):
        await client.post(
            "/rest/crm.deal.add.json",
            data={"auth": token, "fields[TITLE]": "x", "fields[COMMENTS]": "y" * 1_000_000},
        )
    assert await deal_total(client, token) == 0


async def test_drop_after_executes_then_closes_the_connection(
    client: httpx.AsyncClient, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    await fault(client, "drop-after")
    with pytest.raises(httpx.RemoteProtocolError):
        await add_deal(client, token)
    # The client cannot know, but the deal exists.
    assert await deal_total(client, token) == 1
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_malformed_fault_answers_200_with_a_non_json_body(
    client: httpx.AsyncClient, token: str
) -> None:
    await fault(client, "malformed")
    response = await add_deal(client, token)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    with pytest.raises(ValueError, match="Expecting value"):
        response.json()
    assert await deal_total(client, token) == 0


async def test_count_applies_to_the_next_answers_only(
    client: httpx.AsyncClient, token: str
) -> None:
    assert (await fault(client, "500", count=3)).json() == {"pending": 3}
    assert (await client.get("/_sandbox/state")).json()["pending_faults"] == 3
    statuses = [(await rest(client, "profile", token)).status_code for _ in range(5)]
    assert statuses == [500, 500, 500, 200, 200]
    assert (await client.get("/_sandbox/state")).json()["pending_faults"] == 0


async def test_faults_can_be_cleared(client: httpx.AsyncClient, token: str) -> None:
    await fault(client, "500", count=10)
    cleared = await client.delete("/_sandbox/faults")
    assert cleared.json() == {"pending": 0}
    assert (await rest(client, "profile", token)).status_code == 200


async def test_oauth_target_hits_the_token_endpoint_and_not_rest(
    client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    tokens = await connect(client, sandbox)
    secret = sandbox.config.client_secret
    await fault(client, "500", target="oauth")
    assert (await rest(client, "profile", tokens["access_token"])).status_code == 200

    failed = await refresh(client, "local.sandbox", secret, tokens["refresh_token"])
    assert failed.status_code == 500
    assert failed.json()["error"] == "INTERNAL_SERVER_ERROR"
    # Not executed: the refresh token was not used up.
    assert (await refresh(client, "local.sandbox", secret, tokens["refresh_token"])).is_success


async def test_drop_after_on_a_refresh_loses_the_rotated_pair(
    client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    tokens = await connect(client, sandbox)
    secret = sandbox.config.client_secret
    await fault(client, "drop-after", target="oauth")
    with pytest.raises(httpx.RemoteProtocolError):
        await refresh(client, "local.sandbox", secret, tokens["refresh_token"])
    # The refresh happened: the old refresh token is spent, the new one never arrived.
    again = await refresh(client, "local.sandbox", secret, tokens["refresh_token"])
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert (await client.get("/_sandbox/counters")).json()["grants"]["refresh_token"] == 1


async def test_any_target_hits_whichever_comes_first(
    client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    tokens = await connect(client, sandbox)
    await fault(client, "503", target="any", count=2)
    assert (await rest(client, "profile", tokens["access_token"])).status_code == 503
    refused = await refresh(
        client, "local.sandbox", sandbox.config.client_secret, tokens["refresh_token"]
    )
    assert refused.status_code == 503
    assert (await rest(client, "profile", tokens["access_token"])).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "404"},
        {"kind": "DROP"},
        {},
        {"kind": "500", "target": "portal"},
        {"kind": "500", "count": 0},
        {"kind": "500", "count": "2"},
        {"kind": "slow", "delay": -1},
    ],
)
async def test_bad_faults_are_refused(
    client: httpx.AsyncClient, token: str, body: dict[str, Any]
) -> None:
    response = await client.post("/_sandbox/faults", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.json()["error_description"]
    assert (await rest(client, "profile", token)).status_code == 200


# -- token chaos ------------------------------------------------------------------------


async def test_expire_access_tokens(
    client: httpx.AsyncClient, sandbox: SandboxServer, token: str
) -> None:
    assert (await rest(client, "profile", token)).status_code == 200
    expired = await client.post("/_sandbox/expire-access-tokens")
    assert expired.json() == {"expired": 1}
    response = await rest(client, "profile", token)
    assert response.status_code == 401
    assert response.json()["error"] == "expired_token"
    # Tokens issued afterwards work.
    fresh = await connect(client, sandbox)
    assert (await rest(client, "profile", fresh["access_token"])).status_code == 200


# -- domain move ------------------------------------------------------------------------


async def test_domain_move_redirects_the_old_host_and_keeps_member_id(
    client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    tokens = await connect(client, sandbox)
    port = sandbox.port
    moved = await client.post("/_sandbox/move")
    assert moved.json() == {"domain": f"localhost:{port}", "old_domains": [f"127.0.0.1:{port}"]}

    old = await client.get(
        "/rest/profile.json", params={"auth": tokens["access_token"], "x": "a b"}
    )
    assert old.status_code == 301
    location = urlsplit(old.headers["location"])
    assert (location.scheme, location.netloc, location.path) == (
        "http",
        f"localhost:{port}",
        "/rest/profile.json",
    )
    assert dict(parse_qsl(location.query)) == {"auth": tokens["access_token"], "x": "a b"}

    # A POST to the old host is redirected too and not executed there.
    posted = await rest(client, "crm.deal.add", tokens["access_token"], fields={"TITLE": "x"})
    assert posted.status_code == 301
    assert posted.headers["location"] == f"http://localhost:{port}/rest/crm.deal.add.json"

    async with httpx.AsyncClient(base_url=f"http://localhost:{port}", timeout=10) as new:
        assert (await rest(new, "profile", tokens["access_token"])).status_code == 200
        assert await deal_total(new, tokens["access_token"]) == 0

    rotated = await refresh(
        client, "local.sandbox", sandbox.config.client_secret, tokens["refresh_token"]
    )
    assert rotated.status_code == 200
    assert rotated.json()["client_endpoint"] == f"http://localhost:{port}/rest/"
    assert rotated.json()["member_id"] == tokens["member_id"]

    state = (await client.get("/_sandbox/state")).json()
    assert state["domain"] == f"localhost:{port}"
    assert state["member_id"] == tokens["member_id"]


async def test_moving_back_and_to_a_named_domain(
    client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    port = sandbox.port
    await client.post("/_sandbox/move")
    back = await client.post("/_sandbox/move")
    assert back.json() == {"domain": f"127.0.0.1:{port}", "old_domains": [f"localhost:{port}"]}
    named = await client.post("/_sandbox/move", json={"domain": "portal.example"})
    assert named.json()["old_domains"] == [f"127.0.0.1:{port}", f"localhost:{port}"]
    assert (await client.post("/_sandbox/move", json={"domain": ""})).status_code == 400


# -- events -----------------------------------------------------------------------------


async def test_install_delivers_onappinstall_with_working_tokens(
    client: httpx.AsyncClient, sandbox: SandboxServer, receiver: Receiver
) -> None:
    answer = await client.post("/_sandbox/events/install", json={"url": receiver.url})
    assert answer.status_code == 200
    assert answer.json() == {
        "delivered": {"status": 200, "body": "ok"},
        "client_id": "local.sandbox",
    }
    [delivery] = receiver.deliveries
    assert delivery.content_type == "application/x-www-form-urlencoded"
    assert "&auth[access_token]=" in delivery.raw  # PHP brackets, as http_build_query writes
    form = delivery.form
    assert form["event"] == "ONAPPINSTALL"
    assert form["data[VERSION]"] == "1"
    assert form["data[ACTIVE]"] == "Y"
    assert form["data[INSTALLED]"] == "Y"
    assert form["data[LANGUAGE_ID]"]
    assert form["ts"] == str(int(T0))

    auth = delivery.auth()
    assert auth["domain"] == sandbox.portal.domain  # the portal here, not the auth server
    assert auth["client_endpoint"] == f"http://{sandbox.portal.domain}/rest/"
    assert auth["server_endpoint"] == f"{sandbox.base_url}/rest/"
    assert auth["member_id"] == sandbox.portal.member_id
    assert auth["expires"] == str(int(T0) + 3600)
    assert auth["expires_in"] == "3600"
    assert auth["scope"] == "crm,catalog,user"
    assert auth["status"] == "L"
    assert auth["user_id"] == "1"
    assert re.fullmatch("[0-9a-f]{32}", auth["application_token"])
    assert auth["access_token"] != auth["refresh_token"]

    assert (await rest(client, "profile", auth["access_token"])).status_code == 200
    info = await rest(client, "app.info", auth["access_token"])
    assert info.json()["result"]["CODE"] == "local.sandbox"
    assert info.json()["result"]["INSTALLED"] is True
    rotated = await refresh(
        client, "local.sandbox", sandbox.config.client_secret, auth["refresh_token"]
    )
    assert rotated.status_code == 200


async def test_install_auth_overrides_forge_fields(
    client: httpx.AsyncClient, sandbox: SandboxServer, receiver: Receiver
) -> None:
    forged = {"application_token": "0" * 32, "member_id": "f" * 32}
    answer = await client.post(
        "/_sandbox/events/install", json={"url": receiver.url, "auth": forged}
    )
    assert answer.status_code == 200
    auth = receiver.deliveries[0].auth()
    assert auth["application_token"] == "0" * 32
    assert auth["member_id"] == "f" * 32
    assert auth["domain"] == sandbox.portal.domain
    assert auth["access_token"]

    bad = await client.post("/_sandbox/events/install", json={"url": receiver.url, "auth": "x"})
    assert bad.status_code == 400
    assert len(receiver.deliveries) == 1


async def test_a_second_app_gets_its_own_tokens(
    client: httpx.AsyncClient, sandbox: SandboxServer, receiver: Receiver
) -> None:
    registered = await client.post(
        "/_sandbox/apps", json={"client_id": "local.second", "scope": "crm"}
    )
    assert registered.status_code == 200
    second = registered.json()
    assert second["client_id"] == "local.second"
    assert second["client_secret"] != sandbox.config.client_secret
    duplicate = await client.post("/_sandbox/apps", json={"client_id": "local.second"})
    assert duplicate.status_code == 400

    await client.post("/_sandbox/events/install", json={"url": receiver.url})
    await client.post(
        "/_sandbox/events/install", json={"url": receiver.url, "client_id": "local.second"}
    )
    first, other = (d.auth() for d in receiver.deliveries)
    assert other["scope"] == "crm"
    assert other["application_token"] != first["application_token"]
    assert other["member_id"] == first["member_id"]

    info = await rest(client, "app.info", other["access_token"])
    assert info.json()["result"]["CODE"] == "local.second"
    # Its scope is its own: no "user" for the second app.
    assert (await rest(client, "user.current", other["access_token"])).status_code == 401
    assert (await rest(client, "user.current", first["access_token"])).status_code == 200
    # Its refresh token goes with its own client credentials.
    right = await refresh(client, "local.second", second["client_secret"], other["refresh_token"])
    assert right.status_code == 200
    wrong = await refresh(
        client, "local.sandbox", sandbox.config.client_secret, right.json()["refresh_token"]
    )
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"

    unknown = await client.post(
        "/_sandbox/events/install", json={"url": receiver.url, "client_id": "local.nobody"}
    )
    assert unknown.status_code == 400


async def test_uninstall_sends_no_tokens_and_ends_all_access(
    client: httpx.AsyncClient, sandbox: SandboxServer, receiver: Receiver
) -> None:
    other = (await client.post("/_sandbox/apps", json={"client_id": "local.other"})).json()
    await client.post(
        "/_sandbox/events/install", json={"url": receiver.url, "client_id": "local.other"}
    )
    other_auth = receiver.deliveries[0].auth()
    tokens = await connect(client, sandbox)
    await client.post("/_sandbox/events/install", json={"url": receiver.url})
    installed = receiver.deliveries[1].auth()

    answer = await client.post("/_sandbox/events/uninstall", json={"url": receiver.url, "clean": 1})
    assert answer.status_code == 200
    assert answer.json()["delivered"]["status"] == 200
    delivery = receiver.deliveries[2]
    assert delivery.content_type == "application/x-www-form-urlencoded"
    assert delivery.form["event"] == "ONAPPUNINSTALL"
    assert delivery.form["data[CLEAN]"] == "1"
    assert delivery.form["data[LANGUAGE_ID]"]
    assert delivery.form["ts"] == str(int(T0))
    assert delivery.auth() == {
        "domain": sandbox.portal.domain,
        "server_endpoint": f"{sandbox.base_url}/rest/",
        "client_endpoint": f"http://{sandbox.portal.domain}/rest/",
        "member_id": sandbox.portal.member_id,
        "application_token": installed["application_token"],
    }

    for access in (tokens["access_token"], installed["access_token"]):
        response = await rest(client, "profile", access)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"
    for refresh_token in (tokens["refresh_token"], installed["refresh_token"]):
        failed = await refresh(client, "local.sandbox", sandbox.config.client_secret, refresh_token)
        assert failed.status_code == 401
    page = await client.get("/oauth/authorize/", params={"client_id": "local.sandbox"})
    assert page.status_code == 400

    # Another app on the same portal is untouched.
    assert (await rest(client, "profile", other_auth["access_token"])).status_code == 200
    assert (
        await refresh(client, "local.other", other["client_secret"], other_auth["refresh_token"])
    ).status_code == 200


async def test_reinstall_after_uninstall_works_again(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await client.post("/_sandbox/events/uninstall", json={"url": receiver.url})
    assert (await client.get("/_sandbox/state")).json()["installed"] is False
    await client.post("/_sandbox/events/install", json={"url": receiver.url})
    assert (await client.get("/_sandbox/state")).json()["installed"] is True
    auth = receiver.deliveries[1].auth()
    assert (await rest(client, "profile", auth["access_token"])).status_code == 200


async def test_a_failed_delivery_is_reported_not_retried(client: httpx.AsyncClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    answer = await client.post(
        "/_sandbox/events/install", json={"url": f"http://127.0.0.1:{closed_port}/x"}
    )
    assert answer.status_code == 200
    assert answer.json()["delivered"]["status"] is None
    assert answer.json()["delivered"]["error"]


# -- seeding, counters, secrets, clock, state -------------------------------------------


async def test_seed_creates_deals_visible_through_the_list(
    client: httpx.AsyncClient, token: str
) -> None:
    seeded = await client.post("/_sandbox/seed", json={"count": 120})
    assert seeded.json() == {"entity": "crm.deal", "count": 120, "last_id": 120}
    page = (await rest(client, "crm.deal.list", token)).json()
    assert page["total"] == 120
    assert len(page["result"]) == 50
    assert page["next"] == 50

    contacts = await client.post("/_sandbox/seed", json={"entity": "crm.contact", "count": 3})
    assert contacts.json()["count"] == 3
    assert (await rest(client, "crm.contact.list", token)).json()["total"] == 3

    for body in ({"count": 0}, {}, {"entity": "crm.nothing", "count": 1}):
        assert (await client.post("/_sandbox/seed", json=body)).status_code == 400, body


async def test_seed_deals_from_the_config(make_sandbox: MakeSandbox) -> None:
    sb = await make_sandbox(seed_deals=7)
    async with httpx.AsyncClient(base_url=sb.base_url, timeout=10) as http:
        tokens = await connect(http, sb)
        assert await deal_total(http, tokens["access_token"]) == 7


async def test_counters_count_what_clients_did_and_reset(
    client: httpx.AsyncClient, sandbox: SandboxServer, token: str
) -> None:
    assert (await rest(client, "profile", token)).status_code == 200
    assert (await rest(client, "profile", "not-a-token")).status_code == 401
    await fault(client, "503")
    assert (await rest(client, "profile", token)).status_code == 503
    assert (await client.get("/rest/profile.json", params={"auth": token})).status_code == 200
    assert (await refresh(client, "local.sandbox", "wrong", "x")).status_code == 401

    counters = (await client.get("/_sandbox/counters")).json()
    assert counters["rest_calls"] == 4
    assert counters["executed"] == 2
    assert counters["rejected_503"] == 1
    assert counters["secret_in_query"] == 1
    assert counters["grants"] == {"authorization_code": 1, "refresh_token": 0}
    assert counters["failed_grants"] == 1
    assert counters["max_concurrent"] == 1
    assert counters["in_flight"] == 0

    reset = (await client.post("/_sandbox/counters/reset")).json()
    assert reset["grants"] == {"authorization_code": 0, "refresh_token": 0}
    assert all(value == 0 for key, value in reset.items() if key != "grants"), reset
    assert (await client.get("/_sandbox/counters")).json() == reset


async def test_counters_see_concurrent_calls(client: httpx.AsyncClient, token: str) -> None:
    await fault(client, "slow", count=20, delay=0.2)
    answers = await asyncio.gather(*(rest(client, "profile", token) for _ in range(20)))
    assert {a.status_code for a in answers} == {200}
    counters = (await client.get("/_sandbox/counters")).json()
    assert counters["max_concurrent"] >= 2
    assert counters["executed"] == 20
    assert counters["in_flight"] == 0


async def test_secrets_lists_everything_issued(
    client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    tokens = await connect(client, sandbox)
    issued = set((await client.get("/_sandbox/secrets")).json()["secrets"])
    assert {
        tokens["access_token"],
        tokens["refresh_token"],
        sandbox.config.client_secret,
        sandbox.portal.app.application_token,
    } <= issued
    hook = (await client.post("/_sandbox/webhooks", json={})).json()["url"]
    code = hook.rstrip("/").rsplit("/", 1)[1]
    assert code in (await client.get("/_sandbox/secrets")).json()["secrets"]


async def test_clock_moves_time_for_tokens_and_answers(
    client: httpx.AsyncClient, token: str, clock: Clock
) -> None:
    moved = await client.post("/_sandbox/clock", json={"advance": 10})
    assert moved.json() == {"now": T0 + 10, "frozen": True}
    assert clock.now() == T0 + 10
    assert (await rest(client, "profile", token)).json()["time"]["start"] == T0 + 10
    await client.post("/_sandbox/clock", json={"advance": 3590})
    assert (await rest(client, "profile", token)).json()["error"] == "expired_token"
    assert (await client.post("/_sandbox/clock", json={"advance": -1})).status_code == 400
    assert clock.now() == T0 + 3600


async def test_clock_unfreezes_and_freezes(client: httpx.AsyncClient, clock: Clock) -> None:
    thawed = (await client.post("/_sandbox/clock", json={"unfreeze": True})).json()
    assert thawed["frozen"] is False
    assert thawed["now"] == pytest.approx(T0, abs=1)
    frozen = (await client.post("/_sandbox/clock", json={"freeze": True})).json()
    assert frozen["frozen"] is True
    assert clock.frozen


async def test_state_describes_the_portal(
    client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    state = (await client.get("/_sandbox/state")).json()
    assert state == {
        "base_url": sandbox.base_url,
        "domain": f"127.0.0.1:{sandbox.port}",
        "old_domains": [],
        "member_id": sandbox.portal.member_id,
        "client_id": "local.sandbox",
        "scope": "crm,catalog,user",
        "installed": True,
        "rate": 0,
        "burst": 50,
        "bucket_level": 0,
        "now": T0,
        "frozen": True,
        "pending_faults": 0,
    }


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe", b"null"],
)
async def test_bodies_that_are_not_a_json_object_are_refused(
    client: httpx.AsyncClient, content: bytes
) -> None:
    response = await client.post("/_sandbox/faults", content=content)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert (await client.get("/_sandbox/state")).json()["pending_faults"] == 0


async def test_an_empty_body_means_defaults(client: httpx.AsyncClient) -> None:
    assert (await client.post("/_sandbox/expire-access-tokens")).status_code == 200
    assert (await client.post("/_sandbox/clock")).json() == {"now": T0, "frozen": True}


async def test_received_lists_every_url_the_sandbox_saw(
    client: httpx.AsyncClient, sandbox: SandboxServer, token: str
) -> None:
    await client.get("/rest/profile.json", params={"auth": token, "x": "1"})
    await client.post("/rest/server.time", data={"auth": token})
    urls = (await client.get("/_sandbox/received")).json()["urls"]
    assert urls[0].startswith("/oauth/authorize/?client_id=local.sandbox")
    assert "/oauth/token/" in urls
    assert f"/rest/profile.json?auth={token}&x=1" in urls
    assert urls[-1] == "/rest/server.time"


async def test_licence_fault_redirects_to_the_same_host(
    client: httpx.AsyncClient, sandbox: SandboxServer, token: str
) -> None:
    await client.post("/_sandbox/faults", json={"kind": "licence"})
    response = await client.post("/rest/profile.json", json={"auth": token})
    assert response.status_code == 302
    assert response.headers["location"] == f"{sandbox.base_url}/bitrix/coupon_activation.php"
    assert (await client.post("/rest/profile.json", json={"auth": token})).status_code == 200
