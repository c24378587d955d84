"""Bitrix24's two limits as a client meets them: the leaky bucket and the operating time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from b24gate.sandbox import Clock, LeakyBucket, OperatingBudget

from .conftest import T0, MakeSandbox, connect, rest

QUERY_LIMIT = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}


@pytest.fixture
async def limited(make_sandbox: MakeSandbox) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A portal with a small bucket (2 per second, 5 deep) and a connected client."""
    sb = await make_sandbox(rate=2, burst=5)
    async with httpx.AsyncClient(base_url=sb.base_url, timeout=10) as http:
        yield http, (await connect(http, sb))["access_token"]


async def _statuses(
    http: httpx.AsyncClient, token: str, n: int, method: str = "profile"
) -> list[int]:
    return [(await rest(http, method, token)).status_code for _ in range(n)]


async def _deal_total(http: httpx.AsyncClient, token: str) -> int:
    response = await rest(http, "crm.deal.list", token)
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


# -- the leaky bucket over HTTP ---------------------------------------------------------


async def test_a_full_bucket_refuses_without_executing_and_drains_at_the_rate(
    limited: tuple[httpx.AsyncClient, str], clock: Clock
) -> None:
    http, token = limited
    for i in range(5):
        added = await rest(http, "crm.deal.add", token, fields={"TITLE": f"Deal {i}"})
        assert added.status_code == 200, added.text

    refused = await rest(http, "crm.deal.add", token, fields={"TITLE": "one too many"})
    assert refused.status_code == 503
    assert refused.json() == QUERY_LIMIT

    # Half a second drains exactly one request; the refused call took no room.
    clock.advance(0.5)
    assert await _deal_total(http, token) == 5  # the refused add created nothing
    assert (await rest(http, "profile", token)).status_code == 503

    clock.advance(2.5)
    assert await _statuses(http, token, 5) == [200] * 5
    assert await _statuses(http, token, 1) == [503]

    counters = (await http.get("/_sandbox/counters")).json()
    assert counters["rejected_503"] == 3
    assert counters["executed"] == 11


async def test_rate_zero_never_limits(make_sandbox: MakeSandbox) -> None:
    sb = await make_sandbox(rate=0, burst=1)
    async with httpx.AsyncClient(base_url=sb.base_url, timeout=10) as http:
        token = (await connect(http, sb))["access_token"]
        assert set(await _statuses(http, token, 200)) == {200}


async def test_a_batch_takes_one_place_in_the_bucket(
    limited: tuple[httpx.AsyncClient, str],
) -> None:
    http, token = limited
    assert await _statuses(http, token, 4) == [200] * 4
    cmd = {f"c{i}": "profile" for i in range(10)}
    batch = await rest(http, "batch", token, cmd=cmd)
    assert batch.status_code == 200
    assert batch.json()["result"]["result_error"] == []
    assert await _statuses(http, token, 1) == [503]


async def test_limits_change_at_runtime(
    client: httpx.AsyncClient, token: str, clock: Clock
) -> None:
    # The default test sandbox has no limit.
    assert set(await _statuses(client, token, 20)) == {200}

    answer = await client.post("/_sandbox/limits", json={"rate": 1, "burst": 2, "reset": True})
    assert answer.status_code == 200
    assert answer.json()["rate"] == 1
    assert answer.json()["burst"] == 2
    assert await _statuses(client, token, 3) == [200, 200, 503]
    state = (await client.get("/_sandbox/state")).json()
    assert (state["rate"], state["burst"], state["bucket_level"]) == (1, 2, 2)

    clock.advance(1)
    assert await _statuses(client, token, 2) == [200, 503]

    # reset empties the bucket without any time passing.
    await client.post("/_sandbox/limits", json={"reset": True})
    assert await _statuses(client, token, 3) == [200, 200, 503]

    await client.post("/_sandbox/limits", json={"rate": 0})
    assert set(await _statuses(client, token, 20)) == {200}


async def test_bad_limits_are_refused(client: httpx.AsyncClient) -> None:
    for body in ({"rate": -1}, {"rate": "fast"}, {"burst": 0}, {"require_https": "yes"}):
        response = await client.post("/_sandbox/limits", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"] == "invalid_request"
    state = (await client.get("/_sandbox/state")).json()
    assert (state["rate"], state["burst"]) == (0, 50)


# -- operating time over HTTP -----------------------------------------------------------


async def _exhaust_deal_list(http: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    """Call crm.deal.list (100 s each) until it is blocked; return the successful times."""
    times = []
    for _ in range(5):
        response = await rest(http, "crm.deal.list", token)
        assert response.status_code == 200, response.text
        times.append(response.json()["time"])
    return times


async def _check_operating_limit(http: httpx.AsyncClient, token: str, clock: Clock) -> None:
    times = await _exhaust_deal_list(http, token)
    assert [round(t["operating"]) for t in times] == [100, 200, 300, 400, 500]
    assert {t["operating_reset_at"] for t in times} == {int(T0) + 600}

    blocked = await rest(http, "crm.deal.list", token)
    assert blocked.status_code == 429
    assert blocked.json()["error"] == "OPERATION_TIME_LIMIT"
    # Only that method is blocked.
    assert (await rest(http, "profile", token)).status_code == 200
    assert (await rest(http, "crm.deal.add", token, fields={"TITLE": "x"})).status_code == 200

    clock.advance(599)
    assert (await rest(http, "crm.deal.list", token)).status_code == 429
    clock.advance(1)
    again = await rest(http, "crm.deal.list", token)
    assert again.status_code == 200
    assert round(again.json()["time"]["operating"]) == 100
    assert again.json()["time"]["operating_reset_at"] == int(T0) + 1200


async def test_operating_time_blocks_one_method_for_ten_minutes(
    make_sandbox: MakeSandbox, clock: Clock
) -> None:
    sb = await make_sandbox(method_costs=(("crm.deal.list", 100.0),))
    async with httpx.AsyncClient(base_url=sb.base_url, timeout=10) as http:
        token = (await connect(http, sb))["access_token"]
        await _check_operating_limit(http, token, clock)


async def test_method_cost_set_through_the_control_api(
    client: httpx.AsyncClient, token: str, clock: Clock
) -> None:
    answer = await client.post(
        "/_sandbox/method-cost", json={"method": "CRM.DEAL.LIST", "seconds": 100}
    )
    assert answer.json() == {"method": "crm.deal.list", "seconds": 100.0}
    await _check_operating_limit(client, token, clock)


async def test_a_lower_operating_limit_and_reset(client: httpx.AsyncClient, token: str) -> None:
    await client.post("/_sandbox/method-cost", json={"method": "profile", "seconds": 10})
    await client.post("/_sandbox/limits", json={"operating_limit": 15})
    assert await _statuses(client, token, 3) == [200, 200, 429]
    await client.post("/_sandbox/limits", json={"reset": True})
    assert await _statuses(client, token, 3) == [200, 200, 429]


# -- the pieces, on a frozen clock ------------------------------------------------------


def test_bucket_refuses_at_burst_and_a_refusal_adds_nothing() -> None:
    clock = Clock(frozen_at=T0)
    bucket = LeakyBucket(clock, rate=2, burst=3)
    assert [bucket.try_acquire() for _ in range(5)] == [True, True, True, False, False]
    assert bucket.level() == 3
    clock.advance(0.5)
    assert bucket.level() == 2
    assert bucket.try_acquire()
    assert not bucket.try_acquire()


def test_bucket_drains_to_zero_and_no_lower() -> None:
    clock = Clock(frozen_at=T0)
    bucket = LeakyBucket(clock, rate=2, burst=3)
    for _ in range(3):
        bucket.try_acquire()
    clock.advance(1000)
    assert bucket.level() == 0
    assert [bucket.try_acquire() for _ in range(4)] == [True, True, True, False]


def test_bucket_with_rate_zero_is_off_and_reset_empties_it() -> None:
    clock = Clock(frozen_at=T0)
    bucket = LeakyBucket(clock, rate=0, burst=1)
    assert all(bucket.try_acquire() for _ in range(1000))
    bucket.rate = 1
    assert [bucket.try_acquire() for _ in range(2)] == [True, False]
    bucket.reset()
    assert bucket.level() == 0
    assert bucket.try_acquire()


def test_budget_blocks_a_method_over_the_limit_in_a_sliding_window() -> None:
    clock = Clock(frozen_at=T0)
    budget = OperatingBudget(clock, limit=480)
    assert budget.charge("crm.deal.list", 200) == (200, int(T0) + 600)
    clock.advance(300)
    assert budget.charge("crm.deal.list", 200) == (400, int(T0) + 600)
    assert not budget.blocked("crm.deal.list")
    assert budget.charge("crm.deal.list", 100) == (500, int(T0) + 600)
    assert budget.blocked("crm.deal.list")
    assert not budget.blocked("profile")

    # At T0 + 600 the first charge leaves the window: 300 s remain, the next one frees later.
    clock.advance(299)
    assert budget.blocked("crm.deal.list")
    clock.advance(1)
    assert not budget.blocked("crm.deal.list")
    assert budget.charge("crm.deal.list", 0) == (300, int(T0) + 900)


def test_budget_at_exactly_the_limit_is_not_blocked_and_reset_forgets() -> None:
    clock = Clock(frozen_at=T0)
    budget = OperatingBudget(clock, limit=480)
    budget.charge("m", 480)
    assert not budget.blocked("m")
    budget.charge("m", 0.5)
    assert budget.blocked("m")
    budget.reset()
    assert not budget.blocked("m")
    assert budget.charge("m", 1) == (1, int(T0) + 600)
