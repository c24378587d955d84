"""The scheduler's timing against the sandbox's leaky bucket, on virtual time (see
:mod:`._lanes`): the bucket's pace, fairness, the 429 path, 503 absorption and batching,
with exact figures instead of real seconds."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest

from b24gate.core import (
    LINGER,
    CallResult,
    LocalLimiter,
    OperatingBudget,
    Pager,
    Scheduler,
    list_query,
)
from b24gate.errors import BitrixError, OperationTimeLimit, RateLimited
from b24gate.store import Portal

from ._lanes import EPOCH, Sent, VirtualTimeLoop, a_portal, lane, run_virtual

# Calls whose params cannot travel in a batch command (an empty filter): a request each.
ALONE = ("crm.deal.list", {"filter": {}, "start": -1})


def add(title: str) -> tuple[str, dict[str, Any]]:
    return "crm.deal.add", {"fields": {"TITLE": title}}


def test_the_burst_goes_at_once_then_one_request_per_drain_interval() -> None:
    async def main() -> list[float]:
        async with lane(rate=2, burst=10) as it:
            await asyncio.gather(*(it.call("erp", *ALONE) for _ in range(30)))
            assert it.rejected == 0
            return [s.at for s in it.sent]

    times = run_virtual(main)
    # The whole bucket: 10 at once, then one every 1/rate.
    assert times[:10] == [0.0] * 10
    for earlier, later in itertools.pairwise(times[9:]):
        assert later - earlier == pytest.approx(0.5)
    assert times[-1] == pytest.approx((30 - 10) * 0.5)


def test_a_bulk_load_is_packed_and_runs_at_the_theoretical_pace() -> None:
    """The benchmark's load (a): 2,000 adds by 100 callers, 20 each, one after another."""

    async def main() -> tuple[float, list[Sent], list[list[int]], int]:
        async with lane(rate=2, burst=10, latency=0.02) as it:
            loop = asyncio.get_running_loop()

            async def caller(n: int) -> list[int]:
                ids = []
                for i in range(20):
                    # Callers over HTTP are not all back at once: 3 to 30 ms apart.
                    await asyncio.sleep((1 + n % 10) * 0.003)
                    answer = await it.call("erp", *add(f"c{n}-{i}"))
                    ids.append(answer["result"])
                return ids

            started = loop.time()
            ids = await asyncio.gather(*(caller(n) for n in range(100)))
            elapsed = loop.time() - started
            table = it.sandbox.portal.tables["crm.deal"]
            titles = {deal: row["TITLE"] for deal, row in table.records.items()}
            mismatched = sum(
                titles[int(deal)] != f"c{n}-{i}"
                for n, mine in enumerate(ids)
                for i, deal in enumerate(mine)
            )
            return elapsed, it.sent, ids, it.rejected + mismatched

    elapsed, sent, ids, wrong = run_virtual(main)
    assert wrong == 0  # nothing refused, and every caller got the ID of its own deal
    assert len({deal for mine in ids for deal in mine}) == 2000
    # 40 full requests at best. The callers' first calls leave before most callers are
    # there, and their last ones as the callers finish: a request more at each end.
    assert sum(s.calls for s in sent) == 2000
    assert len(sent) <= 42
    theoretical = (40 - 10) / 2
    assert elapsed <= (len(sent) - 9) / 2 + 0.1
    assert theoretical / elapsed >= 0.9


def test_a_call_on_a_quiet_portal_or_of_a_light_load_waits_for_nobody() -> None:
    async def main() -> tuple[float, float]:
        async with lane(rate=2, burst=50) as it:
            loop = asyncio.get_running_loop()
            started = loop.time()
            await it.call("erp", "profile", {})
            alone = loop.time() - started

            async def caller(n: int) -> None:
                for i in range(5):
                    await it.call("erp", *add(f"{n}-{i}"))

            started = loop.time()
            await asyncio.gather(caller(1), caller(2))
            return alone, loop.time() - started

    alone, light = run_virtual(main)
    assert alone == 0.0
    assert light < LINGER  # two callers, ten calls, well inside the bucket: no lingering


def test_a_light_steady_load_is_never_held_for_company_past_one_request() -> None:
    """A call every 12.5 ms while each request takes 20 ms: a request often sees two calls
    arrive after carrying one. That is a light load's noise, not a growing load."""

    async def main() -> list[float]:
        async with lane(rate=2, burst=50, latency=0.02) as it:
            loop = asyncio.get_running_loop()
            latencies: list[float] = []

            async def one(n: int) -> None:
                await asyncio.sleep(n * 0.0125)
                started = loop.time()
                await it.call("erp", *add(f"d{n}"))
                latencies.append(loop.time() - started)

            await asyncio.gather(*(one(n) for n in range(40)))
            return latencies

    latencies = run_virtual(main)
    # At worst a call waits for the request on its way, then takes its own: 2 x 20 ms.
    assert max(latencies) <= 2 * 0.02 + 1e-9


def test_a_call_that_must_go_alone_does_not_wait_while_packed_calls_gather() -> None:
    async def main() -> tuple[float, list[Sent]]:
        async with lane(rate=2, burst=50, latency=0.05) as it:
            loop = asyncio.get_running_loop()
            adds = [asyncio.ensure_future(it.call("erp", *add("d0")))]
            await asyncio.sleep(0.001)  # the first add is on its way; four gather behind it
            adds += [asyncio.ensure_future(it.call("erp", *add(f"d{n}"))) for n in range(1, 5)]
            await asyncio.sleep(0.01)
            started = loop.time()
            await it.call("other", *ALONE)
            waited = loop.time() - started
            await asyncio.gather(*adds)
            return waited, it.sent

    waited, sent = run_virtual(main)
    assert waited == pytest.approx(0.05)  # its own request's time, not the add's as well
    assert [s.calls for s in sent] == [1, 1, 4]  # the add, the list, then the four adds


def test_a_second_client_is_served_within_two_drain_intervals() -> None:
    async def main() -> float:
        async with lane(rate=2, burst=10) as it:
            loop = asyncio.get_running_loop()
            bulk = [asyncio.ensure_future(it.call("bulk", *ALONE)) for _ in range(40)]
            await asyncio.sleep(3.2)  # the burst is spent; 30 bulk calls still wait
            started = loop.time()
            await it.call("single", "profile", {})
            waited = loop.time() - started
            await asyncio.gather(*bulk)
            assert it.rejected == 0
            return waited

    waited = run_virtual(main)
    # Round robin: the slot already booked for the bulk client (0.3 s later), then the
    # single call's turn; not behind the 30 bulk calls still waiting (15 s).
    assert waited <= 2 * 0.5


def test_a_wait_past_the_maximum_is_refused_at_once_with_its_estimate() -> None:
    async def main() -> tuple[list[float], list[float]]:
        async with lane(rate=2, burst=10, max_wait=5) as it:
            loop = asyncio.get_running_loop()
            waits: list[float] = []
            refusals: list[float] = []

            async def one() -> None:
                started = loop.time()
                try:
                    await it.call("erp", *ALONE)
                except RateLimited as exc:
                    assert loop.time() == started  # told at once, not after waiting
                    refusals.append(exc.retry_after)
                else:
                    waits.append(loop.time() - started)

            await asyncio.gather(*(one() for _ in range(40)))
            assert it.rejected == 0
            return waits, refusals

    waits, refusals = run_virtual(main)
    assert len(waits) + len(refusals) == 40
    assert refusals
    assert min(refusals) > 5
    assert max(waits) <= 5 + 0.5  # what was accepted was served within the maximum


def test_a_refusal_from_a_shared_bucket_is_absorbed_and_slows_the_lane() -> None:
    async def main() -> tuple[list[float], int, int]:
        async with lane(rate=2, burst=10) as it:
            # Another application on the same portal fills the bucket to the brim.
            loop = asyncio.get_running_loop()
            assert isinstance(loop, VirtualTimeLoop)
            async with aiohttp.ClientSession() as other:
                for _ in range(10):
                    with loop.real_io():
                        async with other.post(f"{it.sandbox.base_url}/rest/server.time") as r:
                            assert r.status in (200, 401)
            calls = [it.call("erp", *ALONE) for _ in range(4)]
            calls.append(it.call("erp", *add("once")))
            answers = await asyncio.gather(*calls)
            assert answers[-1]["result"]
            deals = [
                row
                for row in it.sandbox.portal.tables["crm.deal"].records.values()
                if row["TITLE"] == "once"
            ]
            return [s.at for s in it.sent], it.rejected, len(deals)

    times, rejected, created = run_virtual(main)
    first = [t for t in times if t == 0.0]
    assert rejected == len(first) >= 1  # what went at once was refused; no caller saw it
    assert created == 1  # the refused request was sent again, and ran once
    # Refused: the bucket is full. Nothing goes for 1 s, then the lane runs at half the
    # rate (1 s apart) and the sandbox refuses nothing more.
    later = times[len(first) :]
    assert later[0] == pytest.approx(1.0)
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(later))


def test_each_caller_of_a_shared_batch_gets_its_own_answer_or_error() -> None:
    async def main() -> list[Any]:
        async with lane(rate=2, burst=10) as it:
            first = await it.call("erp", *add("existing"))
            calls: list[Any] = [it.call(f"c{n % 3}", *add(f"t{n}")) for n in range(60)]
            calls.append(it.call("c9", "crm.deal.get", {"id": 424242}))
            calls.append(it.call("c8", "crm.deal.get", {"id": first["result"]}))
            answers = await asyncio.gather(*calls, return_exceptions=True)
            assert max(s.calls for s in it.sent) == 50
            assert len(it.sent) <= 1 + 3  # the first add, then 62 calls in 2 or 3 requests
            rows = it.sandbox.portal.tables["crm.deal"].records
            return [
                rows[int(a["result"])]["TITLE"] if isinstance(a, dict) and n < 60 else a
                for n, a in enumerate(answers)
            ]

    answers = run_virtual(main)
    assert answers[:60] == [f"t{n}" for n in range(60)]
    missing, found = answers[60], answers[61]
    assert isinstance(missing, BitrixError)
    assert missing.description == "Not found"
    assert found["result"]["TITLE"] == "existing"
    assert "operating" in found["time"]  # the command's own time block


def test_an_export_of_30000_records_pages_in_id_order_at_the_buckets_pace() -> None:
    async def main() -> tuple[list[int], list[Sent], float, int]:
        async with lane(rate=2, burst=4) as it:
            loop = asyncio.get_running_loop()
            it.sandbox.portal.tables["crm.deal"].seed(30_000)

            async def call(method: str, params: Mapping[str, Any]) -> CallResult:
                return CallResult(await it.call("erp", method, params), it.portal.name, 0.0)

            query = list_query("crm.deal.list", {"select": ["TITLE"]})
            pager = Pager(call, query, query.after)
            ids: list[int] = []
            while not pager.done:
                for page in await pager.fetch():
                    ids.extend(pager.id_of(record) for record in page)
            return ids, it.sent, loop.time(), it.rejected

    ids, sent, elapsed, rejected = run_virtual(main)
    assert ids == list(range(1, 30_001))
    assert rejected == 0
    # 50 pages of 50 a request: 12 requests, and a 13th that finds the next page empty.
    assert [s.calls for s in sent] == [50] * 13  # each a `batch` of 50 pages
    # Each request needs the last ID of the one before: 4 back to back, then one every 0.5 s.
    assert elapsed == pytest.approx((13 - 4) * 0.5)


class SlowBitrix:
    """A portal that takes ``request`` seconds per request plus ``command`` per call and
    bills each request's time to its method (a ``batch`` as a whole), in ten-minute
    windows, blocking a method past ``limit`` as Bitrix24 does; the gateway's
    :class:`OperatingBudget` records what it answers, as the forwarder does."""

    def __init__(
        self, operating: OperatingBudget, *, request: float, command: float = 0.0, limit: float
    ) -> None:
        self.operating = operating
        self.request, self.command, self.limit = request, command, limit
        self.charged: dict[str, list[tuple[float, float]]] = {}
        self.sent: list[Sent] = []
        self.blocked = 0

    def _charge(self, method: str, seconds: float) -> dict[str, Any]:
        now = EPOCH + asyncio.get_running_loop().time()
        window = [(at, s) for at, s in self.charged.get(method, []) if at > now - 600]
        if sum(s for _, s in window) > self.limit:
            self.blocked += 1
            raise OperationTimeLimit(429, "OPERATION_TIME_LIMIT", "blocked", reset_at=now + 60)
        window.append((now, seconds))
        self.charged[method] = window
        reset_at = window[0][0] + 600
        return {"processing": seconds, "operating": sum(s for _, s in window),
                "operating_reset_at": reset_at}  # fmt: skip

    async def send(self, portal: Portal, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        calls = len(params["cmd"]) if method == "batch" else 1
        self.sent.append(Sent(asyncio.get_running_loop().time(), calls))
        spent = self.request + self.command * calls
        await asyncio.sleep(spent)
        timing = self._charge(method, spent)
        if method == "batch":
            keys = list(params["cmd"])
            body: dict[str, Any] = {
                "result": {
                    "result": dict.fromkeys(keys, 1),
                    "result_time": {key: {"processing": self.command} for key in keys},
                },
                "time": timing,
            }
        else:
            body = {"result": 1, "time": timing}
        self.operating.record(portal, method, body)
        return body


def virtual_budget() -> OperatingBudget:
    loop = asyncio.get_running_loop()
    return OperatingBudget(clock=lambda: EPOCH + loop.time())


async def adds_at_once(
    calls: int, *, request: float, command: float = 0.0
) -> tuple[int, list[Sent], float]:
    """``calls`` adds submitted at once to a :class:`SlowBitrix` behind a bucket of 2/s
    and 50: how often it blocked `batch`, the requests it got, and when the last answer
    came (virtual seconds)."""
    loop = asyncio.get_running_loop()
    operating = virtual_budget()
    bitrix = SlowBitrix(operating, request=request, command=command, limit=480)
    scheduler = Scheduler(
        LocalLimiter(), bitrix, operating=operating, max_wait=1e9, queue_limit=calls
    )
    try:
        portal = a_portal(rate=2, burst=50)
        await asyncio.gather(
            *(scheduler.submit(portal, "erp", *add(f"d{i}")) for i in range(calls))
        )
    finally:
        await scheduler.close()
    return bitrix.blocked, bitrix.sent, loop.time()


def test_a_bulk_load_keeps_the_bucket_busy_on_a_slow_portal() -> None:
    """3,000 adds handed over at once to a portal that takes 2 s a request: the requests
    leave at the bucket's pace, many on their way at once, not one after another."""

    blocked, sent, elapsed = run_virtual(lambda: adds_at_once(3000, request=2.0), io_grace=0)
    assert blocked == 0
    assert sum(s.calls for s in sent) == 3000
    assert len(sent) == 60  # every request full
    # 50 requests at once (the whole bucket), the other 10 at 2/s, then 2 s each.
    theory = (60 - 50) / 2 + 2.0
    assert elapsed == pytest.approx(theory, abs=0.1)
    assert theory / elapsed >= 0.8


def test_a_call_is_held_for_company_one_drain_interval_at_most_on_a_slow_portal() -> None:
    """A request takes 2 s: the call that arrives while it is on its way waits for company
    half a second at most (one drain interval), not until that request is answered."""

    async def main() -> float:
        operating = virtual_budget()
        scheduler = Scheduler(
            LocalLimiter(), SlowBitrix(operating, request=2.0, limit=480), operating=operating
        )
        portal = a_portal(rate=2, burst=50)
        loop = asyncio.get_running_loop()
        try:
            first = asyncio.ensure_future(scheduler.submit(portal, "erp", *add("a")))
            await asyncio.sleep(0.1)
            started = loop.time()
            await scheduler.submit(portal, "shop", *add("b"))
            await first
        finally:
            await scheduler.close()
        return loop.time() - started

    assert run_virtual(main) == pytest.approx(0.5 + 2.0)


def test_requests_carry_fewer_calls_when_each_call_takes_long() -> None:
    """Each call takes the portal 1 s: once it has said so, no request carries more than
    20 s of calls, far from Bitrix24's 60 s cap on a request."""

    async def main() -> list[Sent]:
        operating = virtual_budget()
        bitrix = SlowBitrix(operating, request=0.5, command=1.0, limit=10_000)
        scheduler = Scheduler(LocalLimiter(), bitrix, operating=operating)
        portal = a_portal(rate=2, burst=50)
        try:
            first = [scheduler.submit(portal, "erp", *add(f"a{i}")) for i in range(50)]
            await asyncio.gather(*first)
            await asyncio.gather(
                *(scheduler.submit(portal, "erp", *add(f"b{i}")) for i in range(200))
            )
        finally:
            await scheduler.close()
        return bitrix.sent

    sent = run_virtual(main)
    assert sent[0].calls == 50  # nothing known yet
    assert sum(s.calls for s in sent) == 250
    assert max(s.calls for s in sent[1:]) == 20


def test_packed_requests_never_exhaust_the_operating_time_of_batch() -> None:
    """A packed request of 50 takes 1.7 s, billed to `batch` as a whole, which may spend
    480 s in ten minutes: 300 of them at the bucket's pace would pass it after about two
    and a half minutes. The lane stops packing short of it and sends calls one a request,
    each billed to its own method, until the oldest charges leave the window."""
    blocked, sent, elapsed = run_virtual(
        lambda: adds_at_once(15_000, request=0.2, command=0.03), io_grace=0
    )
    assert blocked == 0  # neither `batch` nor crm.deal.add was ever blocked
    assert sum(s.calls for s in sent) == 15_000
    alone = [s for s in sent if s.calls == 1]
    assert alone  # packing paused...
    assert max(s.at for s in alone) < max(s.at for s in sent)  # ...and resumed
    assert elapsed < 900


@pytest.mark.parametrize(("latency", "theory"), [(0.02, (60 - 50) / 2), (2.0, 30 * 2.0)])
def test_a_hundred_callers_keep_pace_and_none_laps_the_others(
    latency: float, theory: float
) -> None:
    """3,000 adds by 100 callers, one call outstanding each, back 3 to 30 ms after their
    answer. Theory: 60 full requests from a bucket of 50 at 2/s on an instant portal; with
    2 s a request, the callers' own pace (30 calls each, 2 s apiece). The calls of callers
    that are back go with those still on their way back, so the last requests are full too.
    """

    async def main() -> tuple[float, list[Sent], int]:
        async with lane(rate=2, burst=50, latency=latency) as it:
            loop = asyncio.get_running_loop()

            async def caller(n: int) -> None:
                for i in range(30):
                    await asyncio.sleep((1 + n % 10) * 0.003)
                    await it.call("erp", *add(f"c{n}-{i}"))

            started = loop.time()
            await asyncio.gather(*(caller(n) for n in range(100)))
            return loop.time() - started, it.sent, it.rejected

    elapsed, sent, rejected = run_virtual(main)
    assert rejected == 0
    assert sum(s.calls for s in sent) == 3000
    assert len(sent) <= 61  # the first call finds the portal quiet and goes at once
    assert theory / elapsed >= (0.9 if latency < 1 else 0.85)
