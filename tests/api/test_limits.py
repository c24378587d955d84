"""The per-portal scheduler through the whole gateway, against a sandbox that enforces
Bitrix24's leaky bucket (real time on both sides, small numbers to stay quick)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from .conftest import MakeStack, Stack


async def limited(
    make_stack: MakeStack, rate: float, burst: int, **settings: object
) -> tuple[Stack, str]:
    stack = await make_stack({"rate": rate, "burst": burst}, **settings)
    await stack.add_portal(rate=rate, burst=burst)
    await stack.connect()
    await stack.control.post("/_sandbox/limits", json={"reset": True})
    await stack.control.post("/_sandbox/counters/reset")
    return stack, await stack.add_client()


async def test_a_burst_of_calls_never_trips_the_limit_and_is_batched(
    make_stack: MakeStack, logs: pytest.LogCaptureFixture
) -> None:
    # One request of margin covers one drain interval (0.2 s here) of jitter between booking
    # a slot and the request's arrival; Bitrix24's own 2/s gives 0.5 s.
    stack, key = await limited(make_stack, rate=5, burst=5)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    "/api/v1/call",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"method": "crm.deal.add", "params": {"fields": {"TITLE": f"d{i}"}}},
                )
                for i in range(300)
            )
        )
    assert [r.status_code for r in responses] == [200] * 300
    ids = [r.json()["data"]["result"] for r in responses]
    assert len(set(ids)) == 300
    counters = await stack.counters()
    assert counters["rejected_503"] == 0
    assert counters["rest_calls"] <= 20  # 300 calls, packed up to 50 a request
    assert counters["batches"] >= 6
    # One log line per request to Bitrix24 with the queue's figures.
    lines = [r.getMessage() for r in logs.records if r.name == "b24gate.scheduler"]
    assert len(lines) == counters["rest_calls"]
    assert sum(int(line.split("calls=")[1].split()[0]) for line in lines) == 300
    assert all("longest_wait_ms=" in line and "still_queued=" in line for line in lines)


async def test_each_caller_gets_its_own_error_from_a_shared_batch(make_stack: MakeStack) -> None:
    stack, key = await limited(make_stack, rate=10, burst=5)
    good = stack.call(key, {"method": "crm.deal.add", "params": {"fields": {"TITLE": "ok"}}})
    bad = stack.call(key, {"method": "crm.deal.get", "params": {"id": 424242}})
    first, second = await asyncio.gather(good, bad)
    assert first.status_code == 200
    assert second.status_code == 400
    assert second.json()["bitrix"] == {"error": "", "error_description": "Not found"}


async def test_a_second_client_is_served_within_two_drain_intervals(make_stack: MakeStack) -> None:
    stack, key = await limited(make_stack, rate=4, burst=3)
    other = await stack.add_client("single")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:
        # Calls that cannot share a batch: each takes a slot of its own.
        bulk = [
            asyncio.create_task(
                http.post(
                    "/api/v1/call",
                    headers={"Authorization": f"Bearer {key}"},
                    json={
                        "method": "crm.deal.list",
                        "params": {"filter": {}, "start": -1},
                    },
                )
            )
            for _ in range(16)
        ]
        await asyncio.sleep(0.6)
        started = time.monotonic()
        single = await http.post(
            "/api/v1/call", headers={"Authorization": f"Bearer {other}"}, json={"method": "profile"}
        )
        waited = time.monotonic() - started
        assert single.status_code == 200
        await asyncio.gather(*bulk)
    assert waited < 2 * (1 / 4) + 0.15  # not behind the dozen bulk calls still waiting
    assert (await stack.counters())["rejected_503"] == 0


async def test_a_wait_past_the_maximum_is_429_with_retry_after(make_stack: MakeStack) -> None:
    stack, key = await limited(make_stack, rate=1, burst=2, queue_max_wait=2)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:
        calls = [
            asyncio.create_task(
                http.post(
                    "/api/v1/call",
                    headers={"Authorization": f"Bearer {key}"},
                    json={
                        "method": "crm.deal.list",
                        "params": {"filter": {}, "start": -1},
                    },
                )
            )
            for _ in range(8)
        ]
        done = await asyncio.gather(*calls)
    refused = [r for r in done if r.status_code == 429]
    assert refused
    assert all(r.json()["code"] == "rate_limited" for r in refused)
    assert all(int(r.headers["Retry-After"]) >= 2 for r in refused)
    assert {r.status_code for r in done} <= {200, 429}


async def test_an_unexpected_503_is_absorbed_and_the_call_runs_once(make_stack: MakeStack) -> None:
    stack, key = await limited(make_stack, rate=20, burst=5)
    await stack.control.post("/_sandbox/faults", json={"kind": "503", "count": 2})
    response = await stack.call(
        key, {"method": "crm.deal.add", "params": {"fields": {"TITLE": "x"}}}
    )
    assert response.status_code == 200
    listed = await stack.call(
        key, {"method": "crm.deal.list", "params": {"filter": {"TITLE": "x"}}}
    )
    assert listed.json()["data"]["total"] == 1


@pytest.mark.parametrize("plan", [(0, 50)])
async def test_a_portal_without_limits_skips_the_queue(
    make_stack: MakeStack, plan: tuple[int, int]
) -> None:
    stack, key = await limited(make_stack, rate=plan[0], burst=plan[1])
    responses = await asyncio.gather(*(stack.call(key, {"method": "profile"}) for _ in range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert (await stack.counters())["batches"] == 0  # every call went as itself
