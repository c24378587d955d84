"""A slow portal: latency per request, per command and per list page, the request time cap,
and a batch billed to ``batch`` (docs/sandbox.md, "A slow portal").

The latencies here are tenths of a second and the cap a third of one, so that what the
model does shows in wall time without making the suite slow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from b24gate.sandbox import SandboxServer

from .conftest import T0, MakeSandbox, connect, rest

# What a test may wait beyond the modeled time: scheduling, HTTP, JSON.
SLACK = 0.5


@asynccontextmanager
async def connected(
    make_sandbox: MakeSandbox, **config: Any
) -> AsyncIterator[tuple[SandboxServer, httpx.AsyncClient, str]]:
    sb = await make_sandbox(**config)
    async with httpx.AsyncClient(base_url=sb.base_url, timeout=10) as http:
        token: str = (await connect(http, sb))["access_token"]
        yield sb, http, token


async def timed(call: Any) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    response: httpx.Response = await call
    return response, time.monotonic() - began


async def batch(http: httpx.AsyncClient, token: str, cmd: dict[str, str]) -> httpx.Response:
    return await rest(http, "batch", token, cmd=cmd, halt=0)


async def test_request_latency_is_waited_and_is_server_time(make_sandbox: MakeSandbox) -> None:
    async with asyncio.timeout(10):
        async with connected(make_sandbox, latency_request=0.3) as (_, http, token):
            response, wall = await timed(rest(http, "profile", token))
    assert response.status_code == 200
    assert 0.3 <= wall < 0.3 + SLACK
    timing = response.json()["time"]
    assert 0.3 <= timing["processing"] < 0.3 + SLACK
    # The clock is frozen: start is now, the finish is the modeled time later.
    assert timing["start"] == T0
    assert timing["finish"] == pytest.approx(T0 + timing["processing"])
    assert timing["duration"] == pytest.approx(timing["processing"])
    assert timing["operating"] == pytest.approx(timing["processing"])


async def test_no_latency_by_default(client: httpx.AsyncClient, token: str) -> None:
    async with asyncio.timeout(10):
        assert (await client.get("/_sandbox/latency")).json() == {
            "request": 0,
            "command": 0,
            "page": 0,
        }
        response, wall = await timed(rest(client, "crm.deal.list", token))
    assert wall < SLACK
    assert response.json()["time"]["processing"] < 0.05


async def test_requests_in_flight_overlap(make_sandbox: MakeSandbox) -> None:
    """50 requests of 0.5 s each, sent together, are all answered after about 0.5 s."""
    async with asyncio.timeout(10):
        async with connected(make_sandbox, latency_request=0.5) as (sb, http, token):
            began = time.monotonic()
            answers = await asyncio.gather(*(rest(http, "profile", token) for _ in range(50)))
            wall = time.monotonic() - began
    assert [a.status_code for a in answers] == [200] * 50
    assert 0.5 <= wall < 0.5 + 1.0  # one after another it would be 25 s
    assert sb.portal.counters.max_concurrent == 50


async def test_command_and_page_latency_inside_a_batch(make_sandbox: MakeSandbox) -> None:
    async with asyncio.timeout(10):
        async with connected(
            make_sandbox, latency_request=0.1, latency_command=0.05, latency_page=0.1
        ) as (_, http, token):
            response, wall = await timed(
                batch(
                    http,
                    token,
                    {
                        "me": "profile",
                        "deals": "crm.deal.list",
                        "add": "crm.deal.add?fields[TITLE]=slow",
                    },
                )
            )
    assert response.status_code == 200
    body = response.json()
    times = body["result"]["result_time"]
    # A method costs `command`, a list page `page` more; the request adds its own once.
    assert 0.05 <= times["me"]["processing"] < 0.1
    assert 0.15 <= times["deals"]["processing"] < 0.2
    assert 0.05 <= times["add"]["processing"] < 0.1
    assert times["me"]["start"] < times["deals"]["start"] < times["add"]["start"]
    assert times["me"]["start"] == pytest.approx(T0 + 0.1, abs=0.05)
    modeled = 0.1 + 0.05 + 0.15 + 0.05
    assert modeled <= body["time"]["processing"] < modeled + 0.1
    assert modeled <= wall < modeled + SLACK


async def test_page_latency_is_for_list_methods_only(make_sandbox: MakeSandbox) -> None:
    async with asyncio.timeout(10):
        async with connected(make_sandbox, latency_page=0.3) as (_, http, token):
            fields = await rest(http, "crm.deal.fields", token)
            listed, list_wall = await timed(rest(http, "crm.contact.list", token))
    assert fields.json()["time"]["processing"] < 0.05
    assert listed.status_code == 200
    assert 0.3 <= listed.json()["time"]["processing"] < 0.35
    assert 0.3 <= list_wall < 0.3 + SLACK


# -- billing --------------------------------------------------------------------------


async def test_a_batch_is_billed_to_batch_and_not_to_its_commands(
    make_sandbox: MakeSandbox,
) -> None:
    async with asyncio.timeout(10):
        async with connected(make_sandbox, method_costs=(("crm.deal.list", 100.0),)) as (
            _,
            http,
            token,
        ):
            first = (await batch(http, token, {"a": "crm.deal.list", "b": "crm.deal.list"})).json()
            second = (await batch(http, token, {"c": "crm.deal.list"})).json()
            alone = (await rest(http, "crm.deal.list", token)).json()
    # The whole batch, its commands' time included, is billed to `batch`.
    assert first["time"]["operating"] == pytest.approx(200, abs=0.5)
    assert second["time"]["operating"] == pytest.approx(300, abs=0.5)
    # Every command reports the budget of `batch` as it stood when the batch began.
    assert [t["operating"] for t in first["result"]["result_time"].values()] == [0, 0]
    assert second["result"]["result_time"]["c"]["operating"] == first["time"]["operating"]
    assert {t["operating_reset_at"] for t in first["result"]["result_time"].values()} == {
        int(T0) + 600
    }
    # The method itself was billed for its one direct call only.
    assert alone["time"]["operating"] == pytest.approx(100, abs=0.5)


async def test_batch_is_blocked_once_its_own_budget_is_spent(
    make_sandbox: MakeSandbox,
) -> None:
    async with asyncio.timeout(10):
        async with connected(
            make_sandbox, method_costs=(("crm.deal.list", 100.0),), operating_limit=150
        ) as (_, http, token):
            assert (await batch(http, token, {"a": "crm.deal.list", "b": "crm.deal.list"})).json()
            blocked = await batch(http, token, {"a": "profile"})
            direct = await rest(http, "crm.deal.list", token)
    assert blocked.status_code == 429
    assert blocked.json()["error"] == "OPERATION_TIME_LIMIT"
    assert direct.status_code == 200


# -- the request time cap ---------------------------------------------------------------


async def deal_titles(http: httpx.AsyncClient, token: str) -> list[str]:
    listed = await rest(http, "crm.deal.list", token, select=["TITLE"])
    return [deal["TITLE"] for deal in listed.json()["result"]]


async def test_a_batch_past_the_cap_is_cut_off_there(make_sandbox: MakeSandbox) -> None:
    async with asyncio.timeout(10):
        async with connected(make_sandbox, latency_command=0.1, request_time_limit=0.35) as (
            sb,
            http,
            token,
        ):
            cmd = {f"c{i}": f"crm.deal.add?fields[TITLE]=d{i}" for i in range(5)}
            response, wall = await timed(batch(http, token, cmd))
            await http.post("/_sandbox/latency", json={"command": 0})
            titles = await deal_titles(http, token)
            after = (await batch(http, token, {"me": "profile"})).json()
    assert response.status_code == 500
    assert response.json() == {
        "error": "INTERNAL_SERVER_ERROR",
        "error_description": "Internal server error",
    }
    assert 0.35 <= wall < 0.35 + SLACK
    # The three commands that finished before the cap ran; the fourth was cut off midway
    # and the fifth never started.
    assert titles == ["d0", "d1", "d2"]
    assert sb.portal.counters.cut_off == 1
    # The time spent until the cap is billed to `batch` all the same.
    assert after["time"]["operating"] >= 0.35


async def test_a_call_past_the_cap_does_not_happen(make_sandbox: MakeSandbox) -> None:
    async with asyncio.timeout(10):
        async with connected(
            make_sandbox, latency_request=0.1, latency_command=2.0, request_time_limit=0.2
        ) as (_, http, token):
            response, wall = await timed(
                rest(http, "crm.deal.add", token, fields={"TITLE": "too slow"})
            )
            await http.post("/_sandbox/latency", json={"request": 0, "command": 0})
            titles = await deal_titles(http, token)
    assert response.status_code == 500
    assert response.json()["error"] == "INTERNAL_SERVER_ERROR"
    assert 0.2 <= wall < 0.2 + SLACK
    assert titles == []


async def test_no_cap_when_the_limit_is_zero(make_sandbox: MakeSandbox) -> None:
    async with asyncio.timeout(10):
        async with connected(make_sandbox, latency_request=0.3, request_time_limit=0) as (
            _,
            http,
            token,
        ):
            response = await rest(http, "profile", token)
    assert response.status_code == 200
    assert response.json()["time"]["processing"] >= 0.3


# -- the control API --------------------------------------------------------------------


async def test_latency_is_changed_at_run_time(client: httpx.AsyncClient, token: str) -> None:
    async with asyncio.timeout(10):
        changed = await client.post("/_sandbox/latency", json={"request": 0.3})
        assert changed.status_code == 200
        assert changed.json() == {"request": 0.3, "command": 0, "page": 0}
        part = await client.post("/_sandbox/latency", json={"page": 1.5, "command": 0.25})
        assert part.json() == {"request": 0.3, "command": 0.25, "page": 1.5}
        assert (await client.get("/_sandbox/latency")).json() == part.json()
        await client.post("/_sandbox/latency", json={"command": 0, "page": 0})
        _, wall = await timed(rest(client, "profile", token))
    assert 0.3 <= wall < 0.3 + SLACK


@pytest.mark.parametrize(
    "body",
    [
        b'{"request": -1}',
        b'{"command": "0.5"}',
        b'{"page": true}',
        b'{"page": NaN}',
        b'{"request": Infinity}',
        b'{"requests": 1}',
        b'{"request": 1, "page": -1}',
        b"[1]",
    ],
)
async def test_bad_latency_is_400_and_changes_nothing(
    client: httpx.AsyncClient, body: bytes
) -> None:
    async with asyncio.timeout(10):
        response = await client.post("/_sandbox/latency", content=body)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"
        assert response.json()["error_description"]
        unchanged = await client.get("/_sandbox/latency")
    assert unchanged.json() == {"request": 0, "command": 0, "page": 0}


async def test_request_time_limit_through_the_limits_endpoint(
    client: httpx.AsyncClient, token: str
) -> None:
    async with asyncio.timeout(10):
        shown = (await client.post("/_sandbox/limits", json={})).json()
        assert shown["request_time_limit"] == 60
        assert shown["operating_limit"] == 480
        changed = await client.post("/_sandbox/limits", json={"request_time_limit": 0.2})
        assert changed.json()["request_time_limit"] == 0.2
        bad = await client.post("/_sandbox/limits", json={"request_time_limit": -1})
        assert bad.status_code == 400
        await client.post("/_sandbox/latency", json={"request": 2.0})
        response, wall = await timed(rest(client, "profile", token))
    assert response.status_code == 500
    assert 0.2 <= wall < 0.2 + SLACK
