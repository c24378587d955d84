"""Bitrix24's events in the sandbox: bindings, online deliveries to a handler, offline queues
with their channels, the ONOFFLINEEVENT signal, and the control API around them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from aiohttp import web

from b24gate.sandbox import Clock, SandboxServer

from .conftest import T0, MakeSandbox, connect, rest

WAIT = 5.0  # the longest any test waits for a delivery

# -- helpers ----------------------------------------------------------------------------


@dataclass
class Handler:
    """An application's event handler on loopback: records every form it gets, answers
    ``status``, and holds each answer until ``hold`` is set when there is one."""

    url: str = ""
    status: int = 200
    hold: asyncio.Event | None = None
    forms: list[dict[str, str]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    content_types: list[str] = field(default_factory=list)


@pytest.fixture
async def handler() -> AsyncIterator[Handler]:
    got = Handler()

    async def handle(request: web.Request) -> web.Response:
        raw = await request.text()
        got.content_types.append(request.content_type)
        got.forms.append(dict(parse_qsl(raw, keep_blank_values=True)))
        got.arrived.set()
        if got.hold is not None:
            await got.hold.wait()
        return web.Response(text="ok", status=got.status)

    app = web.Application()
    app.router.add_post("/b24/events", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    got.url = f"http://127.0.0.1:{runner.addresses[0][1]}/b24/events"
    yield got
    if got.hold is not None:
        got.hold.set()
    await runner.cleanup()


async def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["result"]


async def control(http: httpx.AsyncClient, path: str, **body: Any) -> Any:
    response = await http.post(f"/_sandbox/{path}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def events(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/_sandbox/events")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def attempts(http: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    """The delivery log once it holds ``count`` attempts."""
    async with asyncio.timeout(WAIT):
        while True:
            found: list[dict[str, Any]] = (await events(http))["deliveries"]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.01)


async def bind(http: httpx.AsyncClient, token: str, event: str, **params: Any) -> None:
    assert await ok(await rest(http, "event.bind", token, event=event, **params)) is True


async def offline(http: httpx.AsyncClient, token: str, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = await ok(await rest(http, "event.offline.get", token, **params))
    return result


async def add_deal(http: httpx.AsyncClient, token: str, **params: Any) -> int:
    deal_id: int = await ok(
        await rest(http, "crm.deal.add", token, fields={"TITLE": "d"}, **params)
    )
    return deal_id


async def update_deal(http: httpx.AsyncClient, token: str, deal_id: int, **params: Any) -> None:
    fields = {"TITLE": "changed"}
    assert await ok(await rest(http, "crm.deal.update", token, id=deal_id, fields=fields, **params))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- event.bind, event.unbind, event.get ------------------------------------------------


async def test_bind_get_and_unbind(client: httpx.AsyncClient, token: str, handler: Handler) -> None:
    await bind(client, token, "onCrmDealUpdate", handler=handler.url)
    await bind(client, token, "ONCRMDEALUPDATE", handler=handler.url, auth_type=2)
    await bind(client, token, "ONCRMDEALADD", event_type="offline")
    await bind(client, token, "ONCRMDEALADD", event_type="offline", auth_connector="1c")

    assert await ok(await rest(client, "event.get", token)) == [
        {"event": "ONCRMDEALUPDATE", "handler": handler.url, "auth_type": "0", "offline": 0},
        {"event": "ONCRMDEALUPDATE", "handler": handler.url, "auth_type": "2", "offline": 0},
        {"event": "ONCRMDEALADD", "connector_id": "", "offline": 1},
        {"event": "ONCRMDEALADD", "connector_id": "1c", "offline": 1},
    ]
    twice = await rest(client, "event.bind", token, event="ONCRMDEALUPDATE", handler=handler.url)
    assert twice.status_code == 400
    assert twice.json() == {
        "error": "ERROR_CORE",
        "error_description": "Unable to set event handler: Handler already binded",
    }

    # Without auth_type every user's binding of that handler goes; offline ones by channel.
    gone = await rest(client, "event.unbind", token, event="ONCRMDEALUPDATE", handler=handler.url)
    assert await ok(gone) == {"count": 2}
    again = await rest(client, "event.unbind", token, event="ONCRMDEALUPDATE", handler=handler.url)
    assert await ok(again) == {"count": 0}
    one = await rest(
        client,
        "event.unbind",
        token,
        event="ONCRMDEALADD",
        event_type="offline",
        auth_connector="1c",
    )
    assert await ok(one) == {"count": 1}
    assert await ok(await rest(client, "event.get", token)) == [
        {"event": "ONCRMDEALADD", "connector_id": "", "offline": 1}
    ]


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        (
            {"handler": "http://127.0.0.1:9/x"},
            400,
            {"error": "ERROR_ARGUMENT", "argument": "EVENT"},
        ),
        ({"event": "ONCRMDEALADD"}, 400, {"error": "ERROR_ARGUMENT", "argument": "HANDLER"}),
        (
            {"event": "ONCRMDEALADD", "handler": "x", "event_type": "later"},
            400,
            {"error": "ERROR_ARGUMENT", "argument": "EVENT_TYPE"},
        ),
        (
            {"event": "ONNOSUCHTHING", "handler": "http://a.b/"},
            400,
            {"error": "ERROR_EVENT_NOT_FOUND"},
        ),
        (
            {"event": "ONCRMDEALADD", "handler": "http://localhost/x"},
            400,
            {"error": "ERROR_WRONG_HANDLER_URL"},
        ),
        (
            {"event": "ONCRMDEALADD", "handler": "ftp://a.b/x"},
            400,
            {"error": "ERROR_UNSUPPORTED_PROTOCOL"},
        ),
        ({"event": "ONOFFLINEEVENT", "event_type": "offline"}, 400, {"error": "ERROR_ARGUMENT"}),
    ],
)
async def test_bind_refuses_what_bitrix24_refuses(
    client: httpx.AsyncClient,
    token: str,
    params: dict[str, Any],
    status: int,
    error: dict[str, str],
) -> None:
    response = await rest(client, "event.bind", token, **params)
    assert response.status_code == status
    assert error.items() <= response.json().items()
    assert await ok(await rest(client, "event.get", token)) == []


async def test_an_app_without_the_scope_finds_no_crm_event(make_sandbox: MakeSandbox) -> None:
    sb = await make_sandbox(scope=("user",))
    async with httpx.AsyncClient(base_url=sb.base_url) as http:
        token = (await connect(http, sb))["access_token"]
        response = await rest(
            http, "event.bind", token, event="ONCRMDEALADD", handler="http://a.b/"
        )
    assert response.status_code == 400
    assert response.json()["error"] == "ERROR_EVENT_NOT_FOUND"


async def test_event_methods_need_an_application(client: httpx.AsyncClient) -> None:
    hook = (await control(client, "webhooks", scope="crm"))["url"]
    for method in ("event.bind", "event.get", "event.offline.get", "event.offline.list"):
        response = await client.post(f"{hook}{method}", json={"event": "ONCRMDEALADD"})
        assert response.status_code == 403, method
        assert response.json() == {
            "error": "WRONG_AUTH_TYPE",
            "error_description": "Current authorization type is denied for this method",
        }


# -- online delivery --------------------------------------------------------------------


async def test_a_rest_change_reaches_the_handler_as_bitrix24_sends_it(
    client: httpx.AsyncClient, sandbox: SandboxServer, token: str, handler: Handler
) -> None:
    await bind(client, token, "ONCRMDEALUPDATE", handler=handler.url)
    deal_id = await add_deal(client, token)  # no ONCRMDEALADD binding: nothing sent
    await update_deal(client, token, deal_id)

    [attempt] = await attempts(client, 1)
    assert attempt == {
        "event": "ONCRMDEALUPDATE",
        "handler": handler.url,
        "id": deal_id,
        "status": "delivered",
        "http_status": 200,
        "at": T0,
    }
    [form] = handler.forms
    assert handler.content_types == ["application/x-www-form-urlencoded"]
    app = sandbox.portal.oauth.apps["local.sandbox"]
    assert form == {
        "event": "ONCRMDEALUPDATE",
        "event_handler_id": "1",
        "data[FIELDS][ID]": str(deal_id),
        "ts": str(int(T0)),
        "auth[access_token]": form["auth[access_token]"],
        "auth[expires]": str(int(T0) + 3600),
        "auth[expires_in]": "3600",
        "auth[scope]": "crm,catalog,user",
        "auth[domain]": sandbox.portal.domain,
        "auth[server_endpoint]": f"{sandbox.base_url}/rest/",
        "auth[status]": "L",
        "auth[client_endpoint]": f"http://{sandbox.portal.domain}/rest/",
        "auth[member_id]": sandbox.portal.member_id,
        "auth[user_id]": "1",
        "auth[application_token]": app.application_token,
    }
    # The token sent works, and it is the app's.
    info = await ok(await rest(client, "app.info", form["auth[access_token]"]))
    assert info["CODE"] == "local.sandbox"


async def test_batch_commands_and_the_portals_pages_fire_in_order(
    client: httpx.AsyncClient, token: str, handler: Handler
) -> None:
    for event in ("ONCRMDEALADD", "ONCRMDEALUPDATE", "ONCRMDEALDELETE", "ONCRMCONTACTADD"):
        await bind(client, token, event, handler=handler.url)
    cmd = {
        "a": "crm.deal.add?fields[TITLE]=x",
        "u": "crm.deal.update?id=$result[a]&fields[TITLE]=y",
        "c": "crm.contact.add?fields[NAME]=z",
    }
    await ok(await rest(client, "batch", token, cmd=cmd))
    changed = await control(client, "changes", entity="deal", action="add", count=3)
    assert changed == {"entity": "deal", "action": "add", "ids": [2, 3, 4]}
    updated = await control(client, "changes", entity="deal", action="update", id=3, count=2)
    assert updated["ids"] == [3, 4]
    assert (await control(client, "changes", entity="deal", action="delete", id=2))["ids"] == [2]

    log = await attempts(client, 9)
    assert [(a["event"], a["id"], a["status"]) for a in log] == [
        ("ONCRMDEALADD", 1, "delivered"),
        ("ONCRMDEALUPDATE", 1, "delivered"),
        ("ONCRMCONTACTADD", 1, "delivered"),
        ("ONCRMDEALADD", 2, "delivered"),
        ("ONCRMDEALADD", 3, "delivered"),
        ("ONCRMDEALADD", 4, "delivered"),
        ("ONCRMDEALUPDATE", 3, "delivered"),
        ("ONCRMDEALUPDATE", 4, "delivered"),
        ("ONCRMDEALDELETE", 2, "delivered"),
    ]
    assert [f["data[FIELDS][ID]"] for f in handler.forms] == [
        "1",
        "1",
        "1",
        "2",
        "3",
        "4",
        "3",
        "4",
        "2",
    ]
    # Changes made in the portal's pages are user 1's.
    assert {f["auth[user_id]"] for f in handler.forms} == {"1"}


async def test_a_handler_that_is_down_loses_the_event(
    client: httpx.AsyncClient, token: str, handler: Handler
) -> None:
    down = f"http://127.0.0.1:{closed_port()}/b24/events"
    await bind(client, token, "ONCRMDEALADD", handler=down)
    await bind(client, token, "ONCRMDEALADD", handler=handler.url)
    handler.status = 500
    await add_deal(client, token)
    log = await attempts(client, 2)
    await asyncio.sleep(0.2)  # no second try comes
    log = (await events(client))["deliveries"]
    assert sorted((a["handler"], a["status"], a["http_status"]) for a in log) == sorted(
        [(down, "failed", None), (handler.url, "failed", 500)]
    )
    assert len(handler.forms) == 1


async def test_a_slow_handler_times_out_and_the_next_event_still_goes(
    client: httpx.AsyncClient, token: str, handler: Handler
) -> None:
    assert await control(client, "events/settings") == {"timeout": 10.0}
    assert await control(client, "events/settings", timeout=0.2) == {"timeout": 0.2}
    await bind(client, token, "ONCRMDEALADD", handler=handler.url)
    handler.hold = asyncio.Event()
    await add_deal(client, token)
    [first] = await attempts(client, 1)
    assert (first["status"], first["http_status"]) == ("timeout", None)

    handler.hold = None
    await add_deal(client, token)
    log = await attempts(client, 2)
    assert [(a["id"], a["status"]) for a in log] == [(1, "timeout"), (2, "delivered")]
    assert [f["data[FIELDS][ID]"] for f in handler.forms] == ["1", "2"]  # each sent once


async def test_stopping_the_sandbox_drops_pending_deliveries(
    make_sandbox: MakeSandbox, handler: Handler
) -> None:
    sb = await make_sandbox()
    async with httpx.AsyncClient(base_url=sb.base_url) as http:
        token = (await connect(http, sb))["access_token"]
        await bind(http, token, "ONCRMDEALADD", handler=handler.url)
        handler.hold = asyncio.Event()
        await control(http, "changes", entity="deal", action="add", count=5)
        async with asyncio.timeout(WAIT):
            await handler.arrived.wait()
    async with asyncio.timeout(WAIT):
        await sb.stop()
    assert len(handler.forms) == 1


async def test_uninstall_removes_the_apps_handlers(
    client: httpx.AsyncClient, token: str, handler: Handler
) -> None:
    await bind(client, token, "ONCRMDEALADD", handler=handler.url)
    await control(client, "events/uninstall", url=handler.url)
    await control(client, "changes", entity="deal", action="add")
    await control(client, "events/install", url=handler.url)
    fresh = handler.forms[-1]["auth[access_token]"]
    assert await ok(await rest(client, "event.get", fresh)) == []
    assert [f["event"] for f in handler.forms] == ["ONAPPUNINSTALL", "ONAPPINSTALL"]


# -- offline queues ---------------------------------------------------------------------


async def test_the_queue_keeps_one_record_per_object_and_event(
    client: httpx.AsyncClient, token: str, clock: Clock
) -> None:
    await bind(client, token, "ONCRMDEALADD", event_type="offline")
    await bind(client, token, "ONCRMDEALUPDATE", event_type="offline")
    first, second = (await control(client, "changes", entity="deal", action="add", count=2))["ids"]
    clock.advance(5)
    await control(client, "changes", entity="deal", action="update", id=first)
    clock.advance(5)
    await control(client, "changes", entity="deal", action="update", id=first)
    assert (await events(client))["offline"] == {"local.sandbox:": 3}

    listed = await rest(client, "event.offline.list", token)
    assert listed.json()["total"] == 3
    got = await offline(client, token)
    assert got["process_id"] is None
    rows = got["events"]
    assert [(r["EVENT_NAME"], r["EVENT_DATA"]) for r in rows] == [
        ("ONCRMDEALADD", {"FIELDS": {"ID": first}}),
        ("ONCRMDEALADD", {"FIELDS": {"ID": second}}),
        ("ONCRMDEALUPDATE", {"FIELDS": {"ID": first}}),
    ]
    update = rows[2]
    assert update["TIMESTAMP_X"] == "2026-05-28T20:26:50+00:00"  # T0 + 10: the latest change
    assert update["EVENT_ADDITIONAL"] == {"user_id": 1}
    assert len(update["MESSAGE_ID"]) == 32
    assert set(update) == {
        "ID",
        "TIMESTAMP_X",
        "EVENT_NAME",
        "EVENT_DATA",
        "EVENT_ADDITIONAL",
        "MESSAGE_ID",
    }
    # clear=1 (the default) deleted what it read.
    assert (await offline(client, token))["events"] == []
    assert (await events(client))["offline"] == {"local.sandbox:": 0}


async def test_reserved_records_wait_for_their_process(
    client: httpx.AsyncClient, token: str
) -> None:
    await bind(client, token, "ONCRMDEALUPDATE", event_type="offline")
    ids = (await control(client, "changes", entity="deal", action="add", count=3))["ids"]
    await control(client, "changes", entity="deal", action="update", count=3)

    got = await offline(client, token, clear=0, limit=2)
    process_id = got["process_id"]
    assert isinstance(process_id, str)
    assert len(process_id) == 32
    assert [r["EVENT_DATA"]["FIELDS"]["ID"] for r in got["events"]] == ids[:2]
    # Another reader gets only what is left; the reserved ones are not handed out again.
    other = await offline(client, token, clear=0)
    assert [r["EVENT_DATA"]["FIELDS"]["ID"] for r in other["events"]] == ids[2:]
    assert (await offline(client, token, clear=0))["events"] == []
    # The process reads its records again by its id.
    again = await offline(client, token, clear=0, process_id=process_id)
    assert again["process_id"] == process_id
    assert again["events"] == got["events"]

    # A change of a reserved deal waits anew, beside the reserved record.
    await control(client, "changes", entity="deal", action="update", id=ids[0])
    newer = await offline(client, token, clear=0)
    assert [r["EVENT_DATA"]["FIELDS"]["ID"] for r in newer["events"]] == [ids[0]]

    first = got["events"][0]
    cleared = await rest(
        client, "event.offline.clear", token, process_id=process_id, id=[int(first["ID"])]
    )
    assert await ok(cleared) is True
    left = await offline(client, token, clear=0, process_id=process_id)
    assert [r["ID"] for r in left["events"]] == [got["events"][1]["ID"]]
    assert await ok(await rest(client, "event.offline.clear", token, process_id=process_id))
    assert (await offline(client, token, clear=0, process_id=process_id))["events"] == []

    missing = await rest(client, "event.offline.clear", token)
    assert missing.status_code == 400
    assert missing.json() == {
        "error": "ERROR_ARGUMENT",
        "error_description": "Argument 'PROCESS_ID' is null or empty",
        "argument": "PROCESS_ID",
    }


async def test_failed_records_come_back_only_with_error_1(
    client: httpx.AsyncClient, token: str
) -> None:
    await bind(client, token, "ONCRMDEALADD", event_type="offline")
    ids = (await control(client, "changes", entity="deal", action="add", count=2))["ids"]
    got = await offline(client, token, clear=0)
    failed = got["events"][0]
    marked = await rest(
        client,
        "event.offline.error",
        token,
        process_id=got["process_id"],
        message_id=[failed["MESSAGE_ID"]],
    )
    assert await ok(marked) is True
    await ok(await rest(client, "event.offline.clear", token, process_id=got["process_id"]))

    assert (await offline(client, token))["events"] == []
    retried = await offline(client, token, error=1)
    assert [r["EVENT_DATA"]["FIELDS"]["ID"] for r in retried["events"]] == [ids[0]]
    assert (await offline(client, token, error=1))["events"] == []


async def test_an_apps_writes_stay_out_of_its_own_channel(
    client: httpx.AsyncClient, token: str
) -> None:
    await bind(client, token, "ONCRMDEALUPDATE", event_type="offline")
    await bind(client, token, "ONCRMDEALUPDATE", event_type="offline", auth_connector="1c")
    deal_id = await add_deal(client, token)

    # Written on connector "1c": the "1c" channel does not get it, the default one does.
    await update_deal(client, token, deal_id, auth_connector="1c")
    assert (await events(client))["offline"] == {"local.sandbox:": 1, "local.sandbox:1c": 0}
    assert (await offline(client, token, auth_connector="1c"))["events"] == []
    assert len((await offline(client, token))["events"]) == 1

    # In a batch the batch's own auth_connector counts, for every command.
    cmd = {"u": f"crm.deal.update?id={deal_id}&fields[TITLE]=b"}
    await ok(await rest(client, "batch", token, cmd=cmd, auth_connector="1c"))
    assert (await events(client))["offline"] == {"local.sandbox:": 1, "local.sandbox:1c": 0}
    await offline(client, token)

    # Without one, the app's write is its default channel's own write (ProviderOffline).
    await update_deal(client, token, deal_id)
    assert (await events(client))["offline"] == {"local.sandbox:": 0, "local.sandbox:1c": 1}
    await offline(client, token, auth_connector="1c")
    # An auth_connector inside a command's query string is not the batch's: it is ignored.
    cmd = {"u": f"crm.deal.update?id={deal_id}&auth_connector=1c"}
    await ok(await rest(client, "batch", token, cmd=cmd))
    assert (await events(client))["offline"] == {"local.sandbox:": 0, "local.sandbox:1c": 1}
    # A webhook's write, or one made in the portal's pages, reaches every channel.
    hook = (await control(client, "webhooks", scope="crm"))["url"]
    await ok(await client.post(f"{hook}crm.deal.update", json={"id": deal_id, "fields": {}}))
    assert (await events(client))["offline"] == {"local.sandbox:": 1, "local.sandbox:1c": 1}


async def test_offline_get_refuses_bad_arguments(client: httpx.AsyncClient, token: str) -> None:
    await bind(client, token, "ONCRMDEALADD", event_type="offline")
    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        ({"limit": 0}, {"error": "ERROR_ARGUMENT", "argument": "LIMIT"}),
        ({"filter": {"!ID": 1}}, {"error_description": "Filter operation not allowed: !"}),
        ({"filter": {"TITLE": "x"}}, {"error_description": "Filter field not allowed: TITLE"}),
        (
            {"order": {"ID": "UP"}},
            {"error_description": "Order direction should be one of {ASC|DESC}"},
        ),
    ]
    for params, error in cases:
        response = await rest(client, "event.offline.get", token, **params)
        assert response.status_code == 400, params
        assert error.items() <= response.json().items(), response.json()
    await control(client, "changes", entity="deal", action="add", count=3)
    got = await offline(client, token, filter={">ID": 1}, order={"ID": "DESC"})
    assert [r["ID"] for r in got["events"]] == ["3", "2"]


async def test_offline_list_reads_without_reserving(client: httpx.AsyncClient, token: str) -> None:
    await bind(client, token, "ONCRMDEALADD", event_type="offline")
    await control(client, "changes", entity="deal", action="add", count=60)
    await offline(client, token, clear=0, limit=10)
    first = await rest(client, "event.offline.list", token)
    body = first.json()
    assert (body["total"], body["next"], len(body["result"])) == (60, 50, 50)
    assert body["result"][0]["PROCESS_ID"] != ""
    assert body["result"][0]["ERROR"] == "0"
    assert body["result"][10]["PROCESS_ID"] == ""
    second = (await rest(client, "event.offline.list", token, start=50)).json()
    assert "next" not in second
    assert len(second["result"]) == 10
    waiting = await rest(client, "event.offline.list", token, filter={"PROCESS_ID": ""})
    assert waiting.json()["total"] == 50


# -- ONOFFLINEEVENT -----------------------------------------------------------------------


async def test_onofflineevent_signals_at_most_once_per_min_timeout(
    client: httpx.AsyncClient, sandbox: SandboxServer, token: str, handler: Handler, clock: Clock
) -> None:
    await bind(client, token, "ONCRMDEALADD", event_type="offline")
    # Form-encoded with PHP brackets, as BX24.js sends it.
    bound = await client.post(
        "/rest/event.bind",
        data={
            "event": "onOfflineEvent",
            "handler": handler.url,
            "options[minTimeout]": "60",
            "auth": token,
        },
    )
    assert await ok(bound) is True

    await control(client, "changes", entity="deal", action="add", count=3)  # one hit: one signal
    await add_deal(client, token, auth_connector="x")  # within the minute: none
    clock.advance(60)
    await control(client, "changes", entity="deal", action="add")

    log = await attempts(client, 2)
    await asyncio.sleep(0.1)
    log = (await events(client))["deliveries"]
    assert [(a["event"], a["id"], a["status"]) for a in log] == [
        ("ONOFFLINEEVENT", None, "delivered"),
        ("ONOFFLINEEVENT", None, "delivered"),
    ]
    form = handler.forms[0]
    # EventOfflineTable::prepareOfflineEvent gives no data: the form carries none.
    assert not any(k.startswith("data") for k in form)
    assert form["event"] == "ONOFFLINEEVENT"
    assert form["event_handler_id"] == "2"
    app = sandbox.portal.oauth.apps["local.sandbox"]
    assert form["auth[application_token]"] == app.application_token
    assert form["auth[refresh_token]"]
    assert handler.forms[1]["ts"] == str(int(T0) + 60)


async def test_onofflineevent_waits_for_a_record_of_its_own_app(
    client: httpx.AsyncClient, token: str, handler: Handler
) -> None:
    await bind(client, token, "ONOFFLINEEVENT", handler=handler.url)
    await bind(client, token, "ONCRMDEALUPDATE", event_type="offline")
    deal_id = await add_deal(client, token)  # no offline binding of ONCRMDEALADD
    await update_deal(client, token, deal_id)  # the app's own write: its queue stays empty
    await asyncio.sleep(0.1)
    assert (await events(client))["deliveries"] == []
    await update_deal(client, token, deal_id, auth_connector="other")
    [signal] = await attempts(client, 1)
    assert signal["event"] == "ONOFFLINEEVENT"


# -- the control API ----------------------------------------------------------------------


async def test_control_endpoints_refuse_bad_input(client: httpx.AsyncClient) -> None:
    bad = [
        ("events/settings", {"timeout": 0}),
        ("events/settings", {"timeout": "fast"}),
        ("events/settings", {"retries": 3}),
        ("events/reset", {"all": True}),
        ("changes", {"entity": "deal", "action": "merge"}),
        ("changes", {"entity": "product", "action": "add"}),
        ("changes", {"entity": "deal", "action": "update", "id": 99}),
        ("changes", {"entity": "deal", "action": "update"}),
        ("changes", {"entity": "deal", "action": "add", "count": 100_001}),
        ("changes", {"entity": "deal", "action": "add", "fields": ["TITLE"]}),
        ("changes", {"entity": "deal", "action": "add", "color": "red"}),
    ]
    for path, body in bad:
        response = await client.post(f"/_sandbox/{path}", json=body)
        assert response.status_code == 400, (path, body)
        assert response.json()["error"] == "invalid_request"
    assert await control(client, "events/settings") == {"timeout": 10.0}


async def test_reset_forgets_the_deliveries_not_the_queues(
    client: httpx.AsyncClient, token: str, handler: Handler
) -> None:
    await bind(client, token, "ONCRMCOMPANYADD", handler=handler.url)
    await bind(client, token, "ONCRMCOMPANYADD", event_type="offline")
    await control(client, "changes", entity="company", action="add", fields={"TITLE": "Acme"})
    await attempts(client, 1)
    assert await control(client, "events/reset") == {
        "deliveries": [],
        "offline": {"local.sandbox:": 1},
    }
