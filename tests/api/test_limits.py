"""The per-portal scheduler through the whole gateway, against a sandbox that enforces
Bitrix24's leaky bucket (real time on both sides, small numbers to stay quick)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from b24gate.testing import free_port

from .conftest import MakeStack, Stack, ci


async def limited(
    make_stack: MakeStack, rate: float, burst: int, portal: str = "demo", **settings: object
) -> tuple[Stack, str]:
    stack = await make_stack({"rate": rate, "burst": burst}, **settings)
    await stack.add_portal(portal, rate=rate, burst=burst)
    await stack.connect(portal)
    await stack.control.post("/_sandbox/limits", json={"reset": True})
    await stack.control.post("/_sandbox/counters/reset")
    return stack, await stack.add_client(portals=(portal,))


async def test_a_burst_of_calls_never_trips_the_limit_and_is_batched(
    make_stack: MakeStack, logs: pytest.LogCaptureFixture
) -> None:
    # 300 calls at once on a budget of 5 requests/s from a bucket of 5.
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
    # Not behind the dozen bulk calls still waiting (3 s): its turn comes within two drain
    # intervals (exactly so on virtual time: tests/core/test_scheduler_timing.py); real
    # time on a busy machine gets one more.
    assert waited < 3 * (1 / 4)
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


async def costly_adds(
    make_stack: MakeStack, seconds: float, count: int = 4
) -> tuple[Stack, str, list[httpx.Response]]:
    """``count`` adds, each charged ``seconds`` of operating time, on a budget of one
    request a second: the first goes alone, the others, sent at once while it takes the
    second's slot, wait for the next and go as one batch.

    The first is answered before the others are sent: sent all at once, the first two may
    reach the queue together (a loaded machine) and go as one batch, and the figures the
    callers check would differ."""
    stack, key = await limited(make_stack, rate=1, burst=1, queue_max_wait=5)
    await stack.control.post(
        "/_sandbox/method-cost", json={"method": "crm.deal.add", "seconds": seconds}
    )
    first = await adds(stack, key, 1, "first")
    return stack, key, first + await adds(stack, key, count - 1)


async def adds(stack: Stack, key: str, count: int, tag: str = "d") -> list[httpx.Response]:
    calls = [
        stack.call(key, {"method": "crm.deal.add", "params": {"fields": {"TITLE": f"{tag}{i}"}}})
        for i in range(count)
    ]
    return list(await asyncio.gather(*calls))


async def test_packed_calls_are_billed_to_batch_and_go_alone_near_its_budget(
    make_stack: MakeStack,
) -> None:
    # 115 s of operating time an add. Bitrix24 bills a batch to `batch` as a whole: the
    # first add goes alone (115 s to crm.deal.add), the other three packed (345 s to batch).
    stack, key, answers = await costly_adds(make_stack, seconds=115)
    assert [r.status_code for r in answers] == [200] * 4
    counters = await stack.counters()
    assert counters["batches"] == 1
    # Three more: packed, they would bring `batch` to 690 s, past its 480 s. They go one a
    # request instead, each billed to crm.deal.add (to 460 s), and nothing is blocked.
    assert [r.status_code for r in await adds(stack, key, 3, "e")] == [200] * 3
    after = await stack.counters()
    assert after["batches"] == counters["batches"]
    assert after["rest_calls"] == counters["rest_calls"] + 3
    # crm.deal.add is now within 20 s of its own budget: the next one waits for it (10
    # minutes, past the queue's maximum wait), so it is refused here, not sent.
    fifth = await stack.call(key, {"method": "crm.deal.add", "params": {"fields": {"TITLE": "f"}}})
    assert fifth.status_code == 429
    assert fifth.json()["code"] == "rate_limited"
    assert int(fifth.headers["Retry-After"]) > 500
    assert (await stack.counters())["rest_calls"] == after["rest_calls"]  # not sent
    assert (await stack.call(key, {"method": "profile"})).status_code == 200


async def test_a_packed_call_whose_method_is_blocked_gets_429(make_stack: MakeStack) -> None:
    # crm.deal.add spent its budget without the gateway (another replica before a restart):
    # the three adds packed behind a first call are refused inside the batch, where
    # Bitrix24 does not say until when.
    stack, key = await limited(make_stack, rate=1, burst=1, queue_max_wait=5)
    stack.sandbox.portal.budget.charge("crm.deal.add", 500)
    first = asyncio.ensure_future(stack.call(key, {"method": "profile"}))
    answers = await adds(stack, key, 3)
    assert (await first).status_code == 200
    assert [r.status_code for r in answers] == [429] * 3
    assert {r.json()["code"] for r in answers} == {"rate_limited"}
    assert all(int(r.headers["Retry-After"]) >= 1 for r in answers)
    sent = (await stack.counters())["rest_calls"]
    again = await stack.call(key, {"method": "crm.deal.add", "params": {"fields": {"TITLE": "x"}}})
    assert again.status_code == 429  # held here until the block lifts, not sent
    assert (await stack.counters())["rest_calls"] == sent


async def test_the_queues_figures_are_served_at_metrics_to_the_admin(
    make_stack: MakeStack,
) -> None:
    # A portal of its own: the figures are the process's, and other tests use "demo".
    stack, key = await limited(
        make_stack, rate=5, burst=5, portal="metered", admin_token="admin-token-for-tests"
    )
    await stack.control.post("/_sandbox/faults", json={"kind": "503", "count": 1})
    calls = [
        stack.call(key, {"method": "crm.deal.add", "params": {"fields": {"TITLE": f"d{i}"}}})
        for i in range(30)
    ]
    assert {r.status_code for r in await asyncio.gather(*calls)} == {200}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {key}"}):
        refused = await stack.http.get("/metrics", headers=headers)
        assert refused.status_code == 403
        assert refused.json()["code"] == "forbidden"
    page = await stack.http.get(
        "/metrics", headers={"Authorization": "Bearer admin-token-for-tests"}
    )
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    figures = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in page.text.splitlines()
        if line.startswith("b24gate_") and 'portal="metered"' in line
    }
    # Every call was carried by some request, in fewer requests than calls.
    assert figures['b24gate_request_calls_sum{portal="metered"}'] >= 30
    assert figures['b24gate_request_calls_count{portal="metered"}'] < 30
    assert figures['b24gate_limit_refusals_total{portal="metered"}'] >= 1  # the 503 absorbed
    assert figures['b24gate_queue_depth{portal="metered"}'] == 0
    assert 'b24gate_queue_wait_seconds_bucket{le="0.5",portal="metered"}' in figures


@pytest.fixture
async def redis_url() -> str:
    url = os.environ.get("B24GATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    client: Any = aioredis.from_url(url)
    try:
        await client.ping()
    except (OSError, aioredis.ConnectionError) as exc:
        if ci():
            raise
        pytest.skip(f"Redis not reachable: {exc}")
    finally:
        await client.aclose()
    return url


async def test_with_redis_the_gateway_books_from_the_shared_budget(
    make_stack: MakeStack, redis_url: str
) -> None:
    stack, key = await limited(make_stack, rate=5, burst=5, redis_url=redis_url)
    calls = [
        stack.call(key, {"method": "crm.deal.list", "params": {"filter": {}}}) for _ in range(8)
    ]
    assert [r.status_code for r in await asyncio.gather(*calls)] == [200] * 8
    assert (await stack.counters())["rejected_503"] == 0
    portal = await stack.gateway.store.portal("demo")
    assert portal is not None
    client: Any = aioredis.from_url(redis_url)
    try:
        # The portal's budget lives in Redis, under its member_id, for every replica.
        assert await client.exists(f"b24gate:bucket:{portal.member_id}") == 1
    finally:
        await client.delete(f"b24gate:bucket:{portal.member_id}")
        await client.aclose()


async def test_with_redis_down_calls_go_on_with_the_replicas_own_budget(
    make_stack: MakeStack, logs: pytest.LogCaptureFixture
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    stack, key = await limited(make_stack, rate=5, burst=5, redis_url=closed)
    calls = [
        stack.call(key, {"method": "crm.deal.list", "params": {"filter": {}}}) for _ in range(8)
    ]
    assert [r.status_code for r in await asyncio.gather(*calls)] == [200] * 8
    assert (await stack.counters())["rejected_503"] == 0
    warnings = [r.getMessage() for r in logs.records if r.name == "b24gate.limiter"]
    assert len(warnings) == 1  # said once, not once per call
    assert "shared request budget is unreachable" in warnings[0]


async def test_a_clients_own_batch_is_billed_to_batch(make_stack: MakeStack) -> None:
    stack, key = await limited(make_stack, rate=5, burst=5, queue_max_wait=5)
    await stack.control.post(
        "/_sandbox/method-cost", json={"method": "crm.deal.add", "seconds": 115}
    )
    cmd = {f"a{i}": f"crm.deal.add?fields[TITLE]=d{i}" for i in range(4)}
    batch = await stack.call(key, {"method": "batch", "params": {"halt": 0, "cmd": cmd}})
    assert batch.status_code == 200
    sent = (await stack.counters())["rest_calls"]
    # 4 x 115 s, billed to `batch`: within 20 s of its 480 s budget, as the gateway read
    # from the answer's `time` block. The next batch is refused here, not sent...
    again = await stack.call(key, {"method": "batch", "params": {"halt": 0, "cmd": cmd}})
    assert again.status_code == 429
    assert int(again.headers["Retry-After"]) > 500
    assert (await stack.counters())["rest_calls"] == sent
    # ...while crm.deal.add itself was charged nothing and still runs.
    add = await stack.call(key, {"method": "crm.deal.add", "params": {"fields": {"TITLE": "x"}}})
    assert add.status_code == 200
