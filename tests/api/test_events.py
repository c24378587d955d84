"""Events through the gateway as Bitrix24 delivers them and as consumers read them
(docs/events.md): forged deliveries refused and kept nowhere, each consumer its own cursor,
a key sees only its portals and event types, long polls, restarts lose nothing."""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa
from aiohttp import web

from b24gate.core import CONNECTOR, Gateway, new_key, operator_client, signature
from b24gate.errors import InvalidSetting, UnknownPortal
from b24gate.store import NewEvent, Portal, database_url, make_engine

from .conftest import Stack

SECRET = "s" * 43
TOKEN = secrets.token_hex(16)


async def events_client(
    stack: Stack, name: str, events: tuple[str, ...] = ("*",), portals: tuple[str, ...] = ("demo",)
) -> str:
    key = new_key()
    await stack.gateway.store.add_client(
        name, key.key_id, key.key_hash, list(portals), events=list(events)
    )
    return key.key


async def handler_ready(stack: Stack, *, token: str | None = TOKEN) -> Portal:
    """The connected portal `demo` with an online subscription to deal events, the handler
    secret SECRET, and (unless None) the application token the install event gave."""
    portal = await stack.gateway.store.portal("demo")
    assert portal is not None
    await stack.gateway.store.events.handler_secret(portal.id, SECRET)
    await stack.gateway.store.events.subscribe(
        portal.id, ["ONCRMDEALADD", "ONCRMDEALUPDATE", "ONCRMCONTACTADD"], "online", time.time()
    )
    if token is not None:
        portal = await stack.gateway.store.update_portal("demo", application_token=token)
    return portal


def delivery(
    stack: Stack, *, event: str = "ONCRMDEALUPDATE", record: int = 7, **auth: str
) -> dict[str, str]:
    """The form Bitrix24 posts to an event handler (PHP brackets, ids only)."""
    fields = {
        "event": event,
        "event_handler_id": "3",
        "data[FIELDS][ID]": str(record),
        "ts": str(int(time.time())),
        "auth[access_token]": "a" * 40,
        "auth[expires_in]": "3600",
        "auth[scope]": "crm",
        "auth[domain]": stack.sandbox.portal.domain,
        "auth[member_id]": stack.sandbox.portal.member_id,
        "auth[application_token]": TOKEN,
    }
    fields.update({f"auth[{k}]": v for k, v in auth.items()})
    return fields


async def post(stack: Stack, form: dict[str, str], secret: str = SECRET) -> httpx.Response:
    return await stack.http.post(
        f"/bitrix/events/{secret}",
        content=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


async def read(stack: Stack, key: str, **params: Any) -> httpx.Response:
    return await stack.http.get(
        "/api/v1/events", params=params, headers={"Authorization": f"Bearer {key}"}
    )


async def kept(gateway: Gateway) -> int:
    portal = await gateway.store.portal("demo")
    assert portal is not None
    return (await gateway.store.events.head(portal.id)).last


# -- deliveries ----------------------------------------------------------------------------


async def test_a_delivery_is_kept_and_a_consumer_reads_it(connected: tuple[Stack, str]) -> None:
    stack, _ = connected
    await handler_ready(stack)
    key = await events_client(stack, "1c")
    answer = await post(stack, delivery(stack, record=42))
    assert answer.status_code == 200, answer.text
    page = await read(stack, key)
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["portal"] == "demo"
    assert [(e["event"], e["data"]) for e in body["events"]] == [
        ("ONCRMDEALUPDATE", {"FIELDS": {"ID": "42"}})
    ]
    assert body["events"][0]["source"] == "online"
    assert body["next"] == body["events"][0]["cursor"] == 1
    # The delivery's token is never kept or shown.
    assert "access_token" not in page.text
    assert "a" * 40 not in page.text


@pytest.mark.parametrize(
    ("what", "secret", "auth"),
    [
        ("an unknown handler secret", "x" * 43, {}),
        ("a malformed secret", "short", {}),
        ("another portal's member_id", SECRET, {"member_id": "f" * 32}),
        ("no member_id", SECRET, {"member_id": ""}),
        ("a wrong application_token", SECRET, {"application_token": "0" * 32}),
        ("an empty application_token", SECRET, {"application_token": ""}),
    ],
)
async def test_a_forged_delivery_is_refused_and_kept_nowhere(
    connected: tuple[Stack, str], what: str, secret: str, auth: dict[str, str]
) -> None:
    stack, _ = connected
    await handler_ready(stack)
    form = delivery(stack)
    form.update({f"auth[{name}]": value for name, value in auth.items()})
    answer = await post(stack, form, secret=secret)
    assert answer.status_code == 403, what
    assert answer.json()["code"] == "event_refused"
    assert await kept(stack.gateway) == 0


async def test_without_an_install_token_the_secret_and_member_id_decide(
    connected: tuple[Stack, str],
) -> None:
    """A portal connected by the OAuth flow has no application_token: the handler URL's
    secret and the portal's member_id are what a delivery must match."""
    stack, _ = connected
    await handler_ready(stack, token=None)
    assert (await post(stack, delivery(stack, application_token="anything"))).status_code == 200
    refused = await post(stack, delivery(stack, member_id="e" * 32))
    assert refused.status_code == 403
    assert await kept(stack.gateway) == 1


async def test_an_event_not_subscribed_is_answered_but_not_kept(
    connected: tuple[Stack, str],
) -> None:
    stack, _ = connected
    await handler_ready(stack)
    assert (await post(stack, delivery(stack, event="ONCRMLEADADD"))).status_code == 200
    assert await kept(stack.gateway) == 0


async def test_a_flood_of_unknown_secrets_reads_no_body(connected: tuple[Stack, str]) -> None:
    """A request without a known secret is refused before its body is read: a large body
    costs the gateway nothing, and /healthz answers meanwhile."""
    stack, _ = connected
    await handler_ready(stack)
    big = b"a[]&" * (4 * 1024 * 1024)
    refusals = [
        stack.http.post(
            f"/bitrix/events/{'y' * 43}",
            content=big,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        for _ in range(5)
    ]
    started = time.monotonic()
    health, *answers = await asyncio.gather(stack.http.get("/healthz"), *refusals)
    assert health.status_code == 200
    assert all(a.status_code == 403 for a in answers)
    assert time.monotonic() - started < 10


# -- consumers -----------------------------------------------------------------------------


async def test_two_consumers_each_get_every_event(connected: tuple[Stack, str]) -> None:
    stack, _ = connected
    await handler_ready(stack)
    first, second = await events_client(stack, "1c-a"), await events_client(stack, "1c-b")
    for record in range(1, 6):
        assert (await post(stack, delivery(stack, record=record))).status_code == 200
    got: dict[str, list[str]] = {}
    for key in (first, second):
        ids: list[str] = []
        after = 0
        while True:
            body = (await read(stack, key, after=after, limit=2)).json()
            if not body["events"]:
                break
            ids.extend(e["data"]["FIELDS"]["ID"] for e in body["events"])
            after = body["next"]
        got[key] = ids
    assert got[first] == got[second] == ["1", "2", "3", "4", "5"]


async def test_the_cursor_is_kept_per_consumer(connected: tuple[Stack, str]) -> None:
    """Passing `after` acknowledges: without it, a consumer starts where it acknowledged."""
    stack, _ = connected
    await handler_ready(stack)
    first, second = await events_client(stack, "1c-a"), await events_client(stack, "1c-b")
    for record in range(1, 4):
        await post(stack, delivery(stack, record=record))
    await read(stack, first, after=2)
    resumed = (await read(stack, first)).json()
    assert [e["cursor"] for e in resumed["events"]] == [3]
    assert [e["cursor"] for e in (await read(stack, second)).json()["events"]] == [1, 2, 3]


async def test_a_key_sees_only_its_event_types(connected: tuple[Stack, str]) -> None:
    stack, _ = connected
    await handler_ready(stack)
    contacts = await events_client(stack, "contacts", events=("ONCRMCONTACT*",))
    await post(stack, delivery(stack, event="ONCRMDEALUPDATE", record=1))
    await post(stack, delivery(stack, event="ONCRMCONTACTADD", record=2))
    await post(stack, delivery(stack, event="ONCRMDEALADD", record=3))
    body = (await read(stack, contacts)).json()
    assert [(e["event"], e["cursor"]) for e in body["events"]] == [("ONCRMCONTACTADD", 2)]
    # The cursor still moves past what the key may not see.
    body = (await read(stack, contacts, after=body["events"][0]["cursor"])).json()
    assert body["events"] == []
    assert body["next"] == 3


async def test_a_key_without_event_patterns_or_portal_is_refused(
    connected: tuple[Stack, str],
) -> None:
    stack, calls_only = connected
    await handler_ready(stack)
    await post(stack, delivery(stack))
    answer = await read(stack, calls_only)
    assert answer.status_code == 403
    assert answer.json()["code"] == "events_forbidden"
    await stack.add_portal("other", domain="other.example.com")
    elsewhere = await events_client(stack, "elsewhere", portals=("other",))
    answer = await read(stack, elsewhere, portal="demo")
    assert answer.status_code == 404
    assert answer.json()["code"] == "unknown_portal"
    assert (await read(stack, "b24_000000000000_" + "0" * 43)).status_code == 401


@pytest.mark.parametrize(
    "params",
    [{"after": "-1"}, {"after": "x"}, {"limit": "0.5x"}, {"wait": "61"}, {"format": "xml"}],
)
async def test_bad_parameters_are_invalid_request(
    connected: tuple[Stack, str], params: dict[str, str]
) -> None:
    stack, _ = connected
    await handler_ready(stack)
    key = await events_client(stack, "1c")
    answer = await read(stack, key, **params)
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_request"


async def test_a_cursor_past_the_log_is_refused(connected: tuple[Stack, str]) -> None:
    """A cursor from another database (a restore from an older backup) is said, not waited
    on forever."""
    stack, _ = connected
    await handler_ready(stack)
    key = await events_client(stack, "1c")
    await post(stack, delivery(stack))
    answer = await read(stack, key, after=5)
    assert answer.status_code == 400
    assert "past the portal's last event" in answer.json()["error"]


async def test_a_long_poll_wakes_when_an_event_arrives(connected: tuple[Stack, str]) -> None:
    stack, _ = connected
    await handler_ready(stack)
    key = await events_client(stack, "1c")
    started = time.monotonic()
    waiting = asyncio.create_task(read(stack, key, wait=20))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await post(stack, delivery(stack, record=9))
    body = (await waiting).json()
    assert [e["data"]["FIELDS"]["ID"] for e in body["events"]] == ["9"]
    assert time.monotonic() - started < 5
    # With nothing new, the poll ends after its wait with no events and the same cursor.
    started = time.monotonic()
    body = (await read(stack, key, after=body["next"], wait=0.5)).json()
    assert body["events"] == []
    assert body["next"] == 1
    assert 0.4 < time.monotonic() - started < 5


async def test_ndjson_lines_and_the_next_cursor_header(connected: tuple[Stack, str]) -> None:
    stack, _ = connected
    await handler_ready(stack)
    key = await events_client(stack, "1c")
    for record in (1, 2):
        await post(stack, delivery(stack, record=record))
    answer = await read(stack, key, format="ndjson")
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    lines = answer.text.splitlines()
    assert len(lines) == 2
    assert '"cursor":2' in lines[1]
    assert answer.headers["x-next-cursor"] == "2"


async def test_a_consumer_behind_the_retention_learns_what_it_missed(
    connected: tuple[Stack, str],
) -> None:
    stack, _ = connected
    portal = await handler_ready(stack)
    key = await events_client(stack, "1c")
    for record in (1, 2, 3):
        await post(stack, delivery(stack, record=record))
    assert await stack.gateway.store.events.purge(time.time() + 1) == 3
    await post(stack, delivery(stack, record=4))
    body = (await read(stack, key, after=0)).json()
    assert body["missed"] == 3
    assert [e["cursor"] for e in body["events"]] == [4]
    assert (await stack.gateway.store.events.head(portal.id)).purged == 3


async def test_events_kept_survive_a_restart(connected: tuple[Stack, str]) -> None:
    """Answered 200 means kept: a gateway opened afresh on the same data serves them."""
    stack, _ = connected
    await handler_ready(stack)
    key = await events_client(stack, "1c")
    for record in (1, 2):
        await post(stack, delivery(stack, record=record))
    again = await Gateway.open(stack.settings)
    try:
        client = await again.store.client_by_key_id(key.split("_")[1])
        assert client is not None
        page = await again.events.page(client, "demo", address=None, after=None, limit=10, wait=0)
    finally:
        await again.close()
    assert [e.data["FIELDS"]["ID"] for e in page.events] == ["1", "2"]


async def test_the_handler_secret_stays_out_of_logs(
    connected: tuple[Stack, str], caplog: pytest.LogCaptureFixture
) -> None:
    stack, _ = connected
    await handler_ready(stack)
    caplog.set_level("DEBUG")
    await post(stack, delivery(stack))
    await post(stack, delivery(stack, member_id="f" * 32))
    # The gateway's own lines and uvicorn's (the test's HTTP client logs its own URLs).
    ours = [r.getMessage() for r in caplog.records if r.name.startswith(("b24gate", "uvicorn"))]
    assert any("/bitrix/events/***" in line for line in ours)
    assert not [line for line in ours if SECRET in line or TOKEN in line]


# -- push to the consumer's own service ----------------------------------------------------


class Service:
    """A consumer's HTTP service (1C's) on loopback: checks each page's signature, refuses
    the first ``failures`` pages with 500, keeps what it accepted."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.secret = ""
        self.pages: list[dict[str, Any]] = []
        self.refused = 0
        self.forged = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers.get("X-B24gate-Timestamp", "")
        if not hmac.compare_digest(
            request.headers.get("X-B24gate-Signature", ""), signature(self.secret, stamp, body)
        ):
            self.forged += 1
            return web.Response(status=403)
        if self.failures > 0:
            self.failures -= 1
            self.refused += 1
            return web.Response(status=500)
        self.pages.append(json.loads(body))
        return web.Response(status=204)

    async def __aenter__(self) -> Service:
        app = web.Application()
        app.router.add_post("/hs/b24/events", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hs/b24/events"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def ids(self) -> list[str]:
        return [e["data"]["FIELDS"]["ID"] for page in self.pages for e in page["events"]]


async def until(check: Any, within: float = 20) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - a condition kept by another server
            await asyncio.sleep(0.05)


async def test_events_are_pushed_signed_and_in_order(connected: tuple[Stack, str]) -> None:
    stack, _ = connected
    await handler_ready(stack)
    key = await events_client(stack, "1c-push")
    async with Service() as service:
        service.secret = await stack.gateway.pusher.configure("1c-push", "demo", service.url)
        stack.gateway.start_background()
        for record in range(1, 8):
            await post(stack, delivery(stack, record=record))
        await until(lambda: len(service.ids()) == 7)
        assert service.ids() == [str(i) for i in range(1, 8)]
        assert service.forged == 0
        assert all(page["portal"] == "demo" for page in service.pages)
    # Accepted pages are acknowledged: the key's cursor is past them.
    client = await stack.gateway.store.client_by_key_id(key.split("_")[1])
    assert client is not None
    portal = await stack.gateway.store.portal("demo")
    assert portal is not None
    assert await stack.gateway.store.events.cursor(client.id, portal.id) == 7


async def test_a_failing_service_gets_every_event_once_it_answers(
    connected: tuple[Stack, str],
) -> None:
    stack, _ = connected
    await handler_ready(stack)
    await events_client(stack, "1c-push")
    async with Service(failures=2) as service:
        service.secret = await stack.gateway.pusher.configure("1c-push", "demo", service.url)
        stack.gateway.start_background()
        for record in (1, 2, 3):
            await post(stack, delivery(stack, record=record))
        await until(lambda: len(service.ids()) == 3)
        assert service.refused == 2
        assert service.ids() == ["1", "2", "3"]


async def test_a_push_url_must_be_https_or_loopback(connected: tuple[Stack, str]) -> None:
    stack, _ = connected
    await events_client(stack, "1c-push")
    with pytest.raises(InvalidSetting, match="https"):
        await stack.gateway.pusher.configure("1c-push", "demo", "http://1c.example.com/hs")
    with pytest.raises(InvalidSetting):
        await stack.gateway.pusher.configure("1c-push", "demo", "ftp://1c.example.com/hs")
    assert await stack.gateway.pusher.configure(
        "1c-push", "demo", "http://1c.example.com/hs", allow_http=True
    )
    with pytest.raises(UnknownPortal):
        await stack.gateway.pusher.configure("1c-push", "nowhere", "https://1c.example.com/hs")


# -- end to end against the sandbox, both modes ---------------------------------------------


async def change(stack: Stack, action: str, record: int | None = None, **fields: Any) -> None:
    body: dict[str, Any] = {"entity": "deal", "action": action, "fields": fields}
    if record is not None:
        body["id"] = record
    answer = await stack.control.post("/_sandbox/changes", json=body)
    assert answer.status_code == 200, answer.text


async def seeded(stack: Stack, count: int = 5) -> None:
    """Deals 1..count at the sandbox, made without firing events."""
    answer = await stack.control.post("/_sandbox/seed", json={"count": count})
    assert answer.status_code == 200, answer.text


async def consume(stack: Stack, key: str, count: int, within: float = 20) -> list[dict[str, Any]]:
    """Long-poll until ``count`` events came, acknowledging each page."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while len(got) < count:
            body = (await read(stack, key, wait=5)).json()
            got.extend(body["events"])
            if body["events"]:
                await read(stack, key, after=body["next"], limit=1)
    return got


async def test_online_a_change_in_the_portal_reaches_the_consumer(
    connected: tuple[Stack, str],
) -> None:
    stack, calls = connected
    await seeded(stack)
    await stack.gateway.events.subscribe("demo", ["ONCRMDEALUPDATE", "ONCRMDEALADD"], "online")
    bound = (await stack.call(calls, {"method": "event.get"})).json()
    assert {b["event"] for b in bound["data"]["result"]} == {"ONCRMDEALUPDATE", "ONCRMDEALADD"}
    # Subscribing again is harmless (Bitrix24 says the handler is bound already).
    await stack.gateway.events.subscribe("demo", ["ONCRMDEALUPDATE"], "online")
    key = await events_client(stack, "1c")
    await change(stack, "update", 1, TITLE="из портала")
    # The gateway's own write comes back too in online mode.
    written = await stack.call(
        calls, {"method": "crm.deal.update", "params": {"id": 2, "fields": {"TITLE": "x"}}}
    )
    assert written.status_code == 200, written.text
    got = await consume(stack, key, 2)
    assert sorted((e["event"], e["data"]["FIELDS"]["ID"]) for e in got) == [
        ("ONCRMDEALUPDATE", "1"),
        ("ONCRMDEALUPDATE", "2"),
    ]
    # Moved to offline mode: the online binding goes, an offline one comes.
    await stack.gateway.events.subscribe("demo", ["ONCRMDEALADD"], "offline")
    bound = (await stack.call(calls, {"method": "event.get"})).json()["data"]["result"]
    assert sorted((b["event"], b["offline"]) for b in bound) == [
        ("ONCRMDEALADD", 1),
        ("ONCRMDEALUPDATE", 0),
        ("ONOFFLINEEVENT", 0),
    ]
    removed = await stack.gateway.events.unsubscribe("demo", ["ONCRMDEALUPDATE", "ONCRMDEALADD"])
    assert len(removed) == 2
    assert (await stack.call(calls, {"method": "event.get"})).json()["data"]["result"] == []


async def test_offline_the_queue_is_drained_collapsed_and_the_gateways_writes_stay_out(
    connected: tuple[Stack, str],
) -> None:
    stack, calls = connected
    await seeded(stack)
    await stack.gateway.events.subscribe("demo", ["ONCRMDEALUPDATE"], "offline")
    key = await events_client(stack, "1c")
    # Two changes of one deal before the drain: Bitrix24 keeps one record.
    await change(stack, "update", 1, TITLE="a")
    await change(stack, "update", 1, TITLE="b")
    await change(stack, "update", 3, TITLE="c")
    # Writes through the gateway, alone and packed in a batch, carry its auth_connector.
    alone = await stack.call(
        calls, {"method": "crm.deal.update", "params": {"id": 2, "fields": {"TITLE": "gw"}}}
    )
    assert alone.status_code == 200, alone.text
    batch = await stack.call(
        calls,
        {"method": "batch", "params": {"cmd": {"a": "crm.deal.update?id=4&fields[TITLE]=gw"}}},
    )
    assert batch.status_code == 200, batch.text
    assert await stack.gateway.events.drain_all() == 2
    got = await consume(stack, key, 2)
    assert sorted(e["data"]["FIELDS"]["ID"] for e in got) == [1, 3]
    assert {e["source"] for e in got} == {"offline"}
    # Cleared at Bitrix24: nothing waits or stays reserved there, and a second drain keeps
    # nothing.
    waiting = (await stack.control.get("/_sandbox/events")).json()["offline"]
    assert set(waiting.values()) == {0}
    listed = await stack.gateway.dispatcher.call(
        operator_client("demo"),
        "event.offline.list",
        {"auth_connector": CONNECTOR},
        portal_name="demo",
    )
    assert listed.body["result"] == []
    assert await stack.gateway.events.drain_all() == 0


async def test_offline_the_signal_wakes_the_drain(make_stack: Any) -> None:
    """With ONOFFLINEEVENT bound, a change is drained at once, not at the next poll."""
    stack = await make_stack(event_poll=3600, event_drain_interval=0.5)
    await stack.add_portal()
    assert (await stack.connect()).status_code == 200
    await seeded(stack)
    await stack.gateway.events.subscribe("demo", ["ONCRMDEALUPDATE"], "offline")
    stack.gateway.start_background()
    key = await events_client(stack, "1c")
    await asyncio.sleep(0.2)  # the first round, which found nothing, is over
    await change(stack, "update", 5, TITLE="now")
    got = await consume(stack, key, 1, within=10)
    assert got[0]["data"]["FIELDS"]["ID"] == 5


async def test_a_webhook_portal_cannot_subscribe(stack: Stack) -> None:
    await stack.add_portal(
        "hook",
        kind="webhook",
        client_id="",
        client_secret="",
        webhook_url=f"{stack.sandbox.base_url}/rest/1/abcdefghij123456/",
        domain="hook.example.com",
    )
    with pytest.raises(InvalidSetting, match="webhook"):
        await stack.gateway.events.subscribe("hook", ["ONCRMDEALADD"], "online")


@pytest.mark.parametrize("kept_before", [False, True])
async def test_offline_records_a_dead_drain_left_reserved_are_kept_once(
    connected: tuple[Stack, str], kept_before: bool
) -> None:
    """A drain that died between reserving (event.offline.get with clear=0) and clearing
    leaves records Bitrix24 hands out to no one again: the next drain finds them, keeps
    them (once, if the dead one had kept them already) and clears them."""
    stack, _ = connected
    await seeded(stack)
    await stack.gateway.events.subscribe("demo", ["ONCRMDEALUPDATE"], "offline")
    key = await events_client(stack, "1c")
    for record in (1, 2, 3):
        await change(stack, "update", record, TITLE="x")
    operator = operator_client("demo")
    reserved = await stack.gateway.dispatcher.call(
        operator,
        "event.offline.get",
        {"clear": 0, "limit": 2, "auth_connector": CONNECTOR},
        portal_name="demo",
    )
    records = reserved.body["result"]["events"]
    assert len(records) == 2
    if kept_before:
        portal = await stack.gateway.store.portal("demo")
        assert portal is not None
        dead = [
            NewEvent(
                r["EVENT_NAME"],
                r["EVENT_DATA"],
                None,
                "offline",
                f"offline:{r['ID']}:{r['TIMESTAMP_X']}",
            )
            for r in records
        ]
        await stack.gateway.store.events.append(portal.id, dead, time.time())
    # A process started afresh (its first drain looks for what was left reserved).
    again = await Gateway.open(stack.settings)
    try:
        await again.events.drain_all()
    finally:
        await again.close()
    got = await consume(stack, key, 3)
    assert sorted(e["data"]["FIELDS"]["ID"] for e in got) == [1, 2, 3]
    listed = await stack.gateway.dispatcher.call(
        operator, "event.offline.list", {"auth_connector": CONNECTOR}, portal_name="demo"
    )
    assert listed.body["result"] == []


async def test_a_purge_between_head_and_page_is_still_missed(
    connected: tuple[Stack, str],
) -> None:
    stack, _ = connected
    portal = await handler_ready(stack)
    key = await events_client(stack, "1c")
    for record in (1, 2, 3):
        await post(stack, delivery(stack, record=record))
    # Purged without the head knowing (as if between the head's read and the page's).
    engine = make_engine(database_url(stack.settings.data_dir, stack.settings.database_url))
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM events WHERE seq <= 2"))
    finally:
        await engine.dispose()
    body = (await read(stack, key, after=0)).json()
    assert [e["cursor"] for e in body["events"]] == [3]
    assert body["missed"] == 2
    assert (await stack.gateway.store.events.head(portal.id)).purged == 0


async def test_a_revoked_key_gets_nothing_pushed(connected: tuple[Stack, str]) -> None:
    stack, _ = connected
    await handler_ready(stack)
    await events_client(stack, "1c-push")
    async with Service() as service:
        service.secret = await stack.gateway.pusher.configure("1c-push", "demo", service.url)
        await post(stack, delivery(stack, record=1))
        assert await stack.gateway.pusher.round() == 1
        assert await stack.gateway.store.revoke_client("1c-push")
        await post(stack, delivery(stack, record=2))
        assert await stack.gateway.pusher.round() == 0
        assert service.ids() == ["1"]
