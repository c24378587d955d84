"""The per-portal scheduler and the limiter behind it, with a stand-in for Bitrix24."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import redis.asyncio as aioredis

from b24gate.core import (
    SHARED_RETRY,
    FallbackLimiter,
    LocalLimiter,
    OperatingBudget,
    Plan,
    RedisLimiter,
    Scheduler,
)
from b24gate.errors import BitrixError, OperationTimeLimit, QueryLimitExceeded, RateLimited
from b24gate.sandbox import build_php_query, parse_php_query
from b24gate.store import Portal

from ._lanes import a_portal as portal
from ._lanes import lane, run_virtual, sandbox
from .test_scheduler_timing import ALONE

REDIS_URL = os.environ.get("B24GATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class FakeBitrix:
    """Answers calls and batches like Bitrix24; records each request and when it came."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, str, Mapping[str, Any]]] = []
        self.refuse = 0
        self.refuse_commands = 0  # commands of a batch to refuse unexecuted
        self.next_id = 0

    def _one(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        if method == "fail":
            raise BitrixError(400, "", "Not found", {"error": "", "error_description": "Not found"})
        if method == "busy" and self.refuse_commands:
            self.refuse_commands -= 1
            raise QueryLimitExceeded(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
        self.next_id += 1
        return {"result": {"method": method, "params": dict(params), "n": self.next_id}}

    async def send(self, portal: Portal, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        self.requests.append((asyncio.get_running_loop().time(), method, params))
        await asyncio.sleep(0)
        if self.refuse:
            self.refuse -= 1
            raise QueryLimitExceeded(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
        if method != "batch":
            return self._one(method, params)
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for key, command in params["cmd"].items():
            name, _, query = command.partition("?")
            try:
                results[key] = self._one(name, parse_php_query(query))["result"]
            except BitrixError as exc:
                errors[key] = {"error": exc.error, "error_description": exc.description}
        return {
            "result": {
                "result": results,
                "result_error": errors or [],
                "result_total": [],
                "result_next": [],
                "result_time": [],
            }
        }


@pytest.fixture
def bitrix() -> FakeBitrix:
    return FakeBitrix()


@pytest.fixture
async def scheduler(bitrix: FakeBitrix) -> AsyncIterator[Scheduler]:
    s = Scheduler(LocalLimiter(), bitrix, plan=lambda p: Plan(rate=20, burst=3), max_wait=5)
    yield s
    await s.close()


async def test_one_call_alone_goes_as_itself(scheduler: Scheduler, bitrix: FakeBitrix) -> None:
    body = await scheduler.submit(portal(), "erp", "profile", {})
    assert body["result"]["method"] == "profile"
    assert [m for _, m, _ in bitrix.requests] == ["profile"]


async def test_waiting_calls_share_a_batch_and_each_gets_its_own_answer(
    scheduler: Scheduler, bitrix: FakeBitrix
) -> None:
    calls = [
        scheduler.submit(portal(), "erp", "crm.deal.add", {"fields": {"TITLE": f"d{i}"}})
        for i in range(120)
    ] + [scheduler.submit(portal(), "erp", "fail", {"id": 1})]
    results = await asyncio.gather(*calls, return_exceptions=True)
    titles = [r["result"]["params"]["fields"]["TITLE"] for r in results[:120]]  # type: ignore[index]
    assert titles == [f"d{i}" for i in range(120)]
    error = results[120]
    assert isinstance(error, BitrixError)
    assert (error.status, error.error, error.description) == (400, "", "Not found")
    sizes = [len(p["cmd"]) if m == "batch" else 1 for _, m, p in bitrix.requests]
    assert sum(sizes) == 121
    assert max(sizes) == 50
    assert len(bitrix.requests) <= 5  # 121 calls in a handful of requests, not 121


async def test_unpackable_calls_go_alone(scheduler: Scheduler, bitrix: FakeBitrix) -> None:
    await asyncio.gather(
        scheduler.submit(portal(), "a", "crm.deal.update", {"id": 1, "fields": {"OPENED": True}}),
        scheduler.submit(portal(), "b", "crm.deal.list", {"filter": {}}),
        scheduler.submit(portal(), "c", "profile", {}),
    )
    alone = [p for _, m, p in bitrix.requests if m != "batch"]
    assert {"id": 1, "fields": {"OPENED": True}} in alone
    assert {"filter": {}} in alone


async def test_queue_over_the_wait_limit_is_429(bitrix: FakeBitrix) -> None:
    s = Scheduler(
        LocalLimiter(),
        bitrix,
        plan=lambda p: Plan(rate=1, burst=2),
        max_wait=3,
        queue_limit=1000,
    )
    try:
        waiting = [
            asyncio.create_task(s.submit(portal(), "a", "x.y", {"v": None})) for _ in range(300)
        ]
        await asyncio.sleep(0)
        with pytest.raises(RateLimited) as refused:
            await s.submit(portal(), "a", "x.y", {"v": None})
        assert refused.value.retry_after > 3
        for task in waiting:
            task.cancel()
    finally:
        await s.close()


async def test_refused_requests_are_sent_again_and_slow_the_lane(
    scheduler: Scheduler, bitrix: FakeBitrix
) -> None:
    bitrix.refuse = 2
    body = await scheduler.submit(portal(), "erp", "crm.deal.add", {"fields": {"TITLE": "x"}})
    assert body["result"]["params"] == {"fields": {"TITLE": "x"}}
    assert len(bitrix.requests) == 3
    assert bitrix.next_id == 1  # executed once


def test_a_command_refused_inside_a_batch_alone_is_sent_again_after_a_pause() -> None:
    bitrix = FakeBitrix()
    bitrix.refuse_commands = 1

    async def main() -> list[Any]:
        s = Scheduler(LocalLimiter(), bitrix, plan=lambda p: Plan(rate=10, burst=5))
        try:
            first = asyncio.ensure_future(s.submit(portal(), "erp", "profile", {}))
            await asyncio.sleep(0)  # it goes alone; the next three share a batch
            calls = [
                s.submit(portal(), "erp", m, {"n": i}) for i, m in enumerate(("a", "busy", "c"))
            ]
            return list(await asyncio.gather(first, *calls))
        finally:
            await s.close()

    answers = run_virtual(main)
    assert [a["result"]["method"] for a in answers] == ["profile", "a", "busy", "c"]
    sent = [(at, m, p["cmd"] if m == "batch" else p) for at, m, p in bitrix.requests]
    assert [m for _, m, _ in sent] == ["profile", "batch", "busy"]  # only it, once more
    # Bitrix24's bucket is full: nothing for 1 s, then one request a drain interval.
    assert sent[2][0] - sent[1][0] >= 1.0


def test_calls_queued_for_a_method_that_got_blocked_get_its_429_at_their_turn() -> None:
    bitrix = FakeBitrix()
    operating = OperatingBudget(clock=lambda: 0.0)

    async def main() -> list[Any]:
        s = Scheduler(LocalLimiter(), bitrix, operating=operating, plan=lambda p: Plan(1, 1))
        try:
            calls = [
                asyncio.ensure_future(s.submit(portal(), "erp", "x.y", {"v": None}))
                for _ in range(3)
            ]
            await calls[0]
            # Bitrix24 blocked it for 300 s while the other two waited.
            block = OperationTimeLimit(429, "OPERATION_TIME_LIMIT", "blocked", reset_at=300.0)
            operating.blocked(portal(), "x.y", block)
            return list(await asyncio.gather(*calls, return_exceptions=True))
        finally:
            await s.close()

    answers = run_virtual(main)
    assert isinstance(answers[0], dict)
    assert all(isinstance(a, RateLimited) and a.retry_after == 300 for a in answers[1:])
    assert len(bitrix.requests) == 1  # the two never reached Bitrix24


async def test_php_query_round_trip_of_packed_commands() -> None:
    params = {"fields": {"TITLE": "A&B ё", "OPPORTUNITY": "10.5"}, "select": ["ID", "TITLE"]}
    assert parse_php_query(build_php_query(params)) == params


@pytest.fixture
async def redis_url() -> str:
    client: Any = aioredis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (OSError, aioredis.ConnectionError) as exc:
        await client.aclose()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Redis not reachable: {exc}")
    await client.delete("b24gate:test:p")
    await client.aclose()
    return REDIS_URL


async def test_redis_limiter_shares_one_budget_between_replicas(redis_url: str) -> None:
    one, two = RedisLimiter(redis_url, "b24gate:test:"), RedisLimiter(redis_url, "b24gate:test:")
    try:
        waits = []
        for i in range(8):
            limiter = one if i % 2 else two
            wait = await limiter.reserve("p", rate=10, burst=3, max_wait=60)
            assert wait is not None
            waits.append(wait)
        # burst 3: three go at once, then every booking 0.1 s later.
        assert waits[:3] == [0.0, 0.0, 0.0]
        for earlier, later in itertools.pairwise(waits[2:]):
            assert later - earlier == pytest.approx(0.1, abs=0.02)
        assert await one.reserve("p", rate=10, burst=3, max_wait=0.1) is None  # nothing booked
        # A refusal: the bucket is full, and nothing goes for 5 s; then one a drain interval.
        await two.pause("p", rate=10, burst=3, seconds=5)
        after = [await one.reserve("p", rate=10, burst=3, max_wait=60) for _ in range(2)]
        assert after[0] == pytest.approx(5, abs=0.05)
        assert after[1] == pytest.approx(5.1, abs=0.05)
    finally:
        await one.close()
        await two.close()


async def test_local_limiter_books_like_the_redis_one() -> None:
    limiter = LocalLimiter()
    waits = [await limiter.reserve("p", 10, 3, 60) for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[4] == pytest.approx(0.2, abs=0.02)
    assert await limiter.reserve("p", 10, 3, 0.1) is None
    assert await limiter.reserve("p", 0, 3, 0) == 0.0  # limits off


async def test_two_replicas_sharing_redis_keep_one_budget_against_the_sandbox(
    redis_url: str,
) -> None:
    # Real time: Redis books with its own clock. Two schedulers (two replicas) for the
    # same portal, each with its own RedisLimiter, in front of one sandbox's bucket.
    prefix = f"b24gate:test:{uuid.uuid4().hex}:"
    one, two = RedisLimiter(redis_url, prefix), RedisLimiter(redis_url, prefix)
    try:
        async with (
            sandbox(rate=10, burst=4) as upstream,
            lane(10, 4, upstream=upstream, limiter=one) as first,
            lane(10, 4, upstream=upstream, limiter=two) as second,
        ):
            started = time.monotonic()
            await asyncio.gather(
                *(replica.call("erp", *ALONE) for replica in (first, second) for _ in range(15))
            )
            elapsed = time.monotonic() - started
            assert upstream.portal.counters.rejected_503 == 0
    finally:
        await one.close()
        await two.close()
    # 30 requests, 4 at once, then 10 a second between them, not 10 a second each (1.1 s).
    assert elapsed >= (30 - 4) / 10 - 0.05


class BrokenLimiter(LocalLimiter):
    async def reserve(self, key: str, rate: float, burst: int, max_wait: float) -> float | None:
        raise RuntimeError("the budget is broken")


async def test_a_queue_that_stops_fails_its_callers_instead_of_leaving_them_waiting(
    bitrix: FakeBitrix,
) -> None:
    s = Scheduler(BrokenLimiter(), bitrix, plan=lambda p: Plan(rate=10, burst=3), max_wait=5)
    try:
        calls = [s.submit(portal(), "erp", "profile", {}) for _ in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
    finally:
        await s.close()
    assert [str(r) for r in results] == ["the budget is broken"] * 3
    assert bitrix.requests == []


class FlakyShared(LocalLimiter):
    """A shared budget that can be switched off, as Redis going down and coming back."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.asked = 0

    async def reserve(self, key: str, rate: float, burst: int, max_wait: float) -> float | None:
        self.asked += 1
        if self.down:
            raise aioredis.ConnectionError("Connection refused")
        return await super().reserve(key, rate, burst, max_wait)

    async def book_until(self, key: str, ahead: float) -> None:  # type: ignore[override]
        LocalLimiter.book_until(self, key, ahead)  # Redis's is a coroutine

    async def ping(self) -> None:
        if self.down:
            raise aioredis.ConnectionError("Connection refused")


def test_an_unreachable_shared_budget_falls_back_then_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> tuple[list[float | None], int, float]:
        shared = FlakyShared()
        limiter = FallbackLimiter(shared)
        try:
            # 1 request/s from a bucket of 3: three at once, then one a second. The first
            # three bookings are the shared budget's, mirrored in the replica's own.
            waits = [await limiter.reserve("p", 1, 3, 60) for _ in range(3)]
            shared.down = True
            # Down: the replica's own budget goes on from where the shared one was.
            waits += [await limiter.reserve("p", 1, 3, 60) for _ in range(2)]
            asked_while_down = shared.asked
            waits += [await limiter.reserve("p", 1, 3, 60) for _ in range(3)]
            assert shared.asked == asked_while_down  # not asked again on every booking
            shared.down = False
            await asyncio.sleep(SHARED_RETRY + 0.01)
            # Back: the bookings still ahead (8 s of them) were carried into the shared one.
            ahead = shared.booked()["p"]
            waits.append(await limiter.reserve("p", 1, 3, 60))
            return waits, asked_while_down, ahead
        finally:
            await limiter.close()

    waits, asked, ahead = run_virtual(main)
    assert waits[:5] == pytest.approx([0.0, 0.0, 0.0, 1.0, 2.0])
    assert asked == 4  # 3 bookings, and the one that found it down
    assert ahead == pytest.approx(8 - (SHARED_RETRY + 0.01))
    assert waits[-1] == pytest.approx(ahead - 2)  # the shared budget knew them
    messages = [r.getMessage() for r in caplog.records if r.name == "b24gate.limiter"]
    assert len(messages) == 2
    assert "unreachable" in messages[0]
    assert "answers again" in messages[1]
