"""The export of a whole list (:meth:`Pager.stream`) against the sandbox, on virtual time
(see :mod:`._lanes`): ranges in flight at once, in ID order, within its memory bound."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from b24gate.core import CallResult, Pager, list_query
from b24gate.errors import BitrixError

from ._lanes import Lane, lane, run_virtual

Call = Callable[[str, Mapping[str, Any]], Awaitable[CallResult]]


def through(it: Lane) -> Call:
    async def call(method: str, params: Mapping[str, Any]) -> CallResult:
        return CallResult(await it.call("erp", method, params), it.portal.name, 0.0)

    return call


async def read(pager: Pager, ids: list[int], reader: float = 0.0) -> None:
    """Put in ``ids`` every ID the export gives, as the HTTP surface runs it: the first
    request, then the stream; a ``reader`` that takes that many seconds for each page."""
    for page in await pager.fetch(probe=True):
        ids.extend(pager.id_of(record) for record in page)
    async for page in pager.stream():
        ids.extend(pager.id_of(record) for record in page)
        await asyncio.sleep(reader)


async def export(
    call: Call, params: Mapping[str, Any], *, reader: float = 0.0
) -> tuple[list[int], Pager]:
    query = list_query("crm.deal.list", params)
    pager = Pager(call, query, query.after)
    ids: list[int] = []
    await read(pager, ids, reader)
    return ids, pager


def bound(command: str, operator: str) -> int | None:
    """The ID bound of a batch command (``crm.deal.list?filter[%3EID]=5&…``) under
    ``operator`` as it is encoded (``%3E`` for ``>``); None if it has none."""
    found = re.search(rf"filter\[{operator}ID\]=(\d+)(&|$)", command)
    return int(found.group(1)) if found else None


def keep(it: Lane, wanted: Callable[[int], bool]) -> list[int]:
    """Leave in the sandbox's deals only the IDs ``wanted``: an ID space with holes."""
    table = it.sandbox.portal.tables["crm.deal"]
    table.ids = [i for i in table.ids if wanted(i)]
    table.records = {i: table.records[i] for i in table.ids}
    return list(table.ids)


def exporting() -> list[asyncio.Task[Any]]:
    """The requests of exports still running."""
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and "Pager.fetch" in task.get_coro().__qualname__  # type: ignore[union-attr]
    ]


def test_an_export_on_a_slow_portal_runs_at_the_buckets_pace_not_at_its_latency() -> None:
    """100,000 deals, 2 s a request, 2 requests/s from a bucket of 10: 40 requests'
    worth, which the bucket lets through in 15 s, plus the last one's 2 s."""

    async def main() -> tuple[list[int], float, int, int]:
        async with lane(rate=2, burst=10, latency=2.0) as it:
            loop = asyncio.get_running_loop()
            it.sandbox.portal.tables["crm.deal"].seed(100_000)
            started = loop.time()
            ids, pager = await export(through(it), {"select": ["TITLE"]})
            return ids, loop.time() - started, pager.requests, it.rejected

    ids, elapsed, requests, rejected = run_virtual(main)
    assert ids == list(range(1, 100_001))  # complete, each once, ascending
    assert rejected == 0
    theory = (math.ceil(100_000 / 2_500) - 10) / 2 + 2.0
    print(f"slow portal: {elapsed:.1f} s for {requests} requests, theory {theory:.1f} s")
    assert requests <= 42
    assert theory / elapsed >= 0.8  # one request after another took 41 x 2 s = 82 s


def test_on_an_instant_portal_the_export_is_one_chain_as_before() -> None:
    """No latency, no reason for ranges: the same requests as one request after another
    (what the export did before), and no slower."""

    async def chained() -> tuple[float, list[int]]:
        async with lane(rate=2, burst=4) as it:
            loop = asyncio.get_running_loop()
            it.sandbox.portal.tables["crm.deal"].seed(15_000)
            query = list_query("crm.deal.list", {"select": ["TITLE"]})
            pager = Pager(through(it), query, query.after)
            while not pager.done:
                await pager.fetch()
            return loop.time(), [s.calls for s in it.sent]

    async def streamed() -> tuple[list[int], float, list[int], int]:
        async with lane(rate=2, burst=4) as it:
            loop = asyncio.get_running_loop()
            it.sandbox.portal.tables["crm.deal"].seed(15_000)
            ids, _ = await export(through(it), {"select": ["TITLE"]})
            return ids, loop.time(), [s.calls for s in it.sent], it.rejected

    before, sent_before = run_virtual(chained)
    ids, elapsed, sent, rejected = run_virtual(streamed)
    assert ids == list(range(1, 15_001))
    assert rejected == 0
    # The first request carries 49 pages and the probe for the highest ID, then 2,500
    # records a request: 7 requests of 50 commands either way.
    assert sent == sent_before == [50] * 7
    assert elapsed <= before
    print(f"instant portal: {elapsed:.1f} s, one request after another {before:.1f} s")


def test_holes_and_a_dense_stretch_among_sparse_ones_are_exported_whole_and_in_order() -> None:
    """1-5,000 dense, then every 97th ID to 30,000, an empty stretch to 40,000, then
    dense again to 45,000: ranges cut for the density seen so far come back part-filled,
    empty or over-full, and each is continued before anything above it."""

    def wanted(i: int) -> bool:
        return i <= 5_000 or (i <= 30_000 and i % 97 == 0) or 40_000 < i <= 45_000

    async def main() -> tuple[list[int], list[int], int, int]:
        async with lane(rate=2, burst=10, latency=2.0) as it:
            it.sandbox.portal.tables["crm.deal"].seed(45_000)
            expected = keep(it, wanted)
            ids, pager = await export(through(it), {})
            return ids, expected, pager.requests, it.rejected

    ids, expected, requests, rejected = run_virtual(main)
    assert ids == expected
    assert rejected == 0
    # 10,258 records: 5 requests' worth; the density changes cost some more, not dozens.
    assert requests <= 14


def test_the_clients_own_id_bounds_are_kept_by_every_range() -> None:
    async def main() -> tuple[list[int], list[Any]]:
        async with lane(rate=2, burst=10, latency=2.0) as it:
            it.sandbox.portal.tables["crm.deal"].seed(30_000)
            bounds: list[Any] = []
            call = through(it)

            async def noted(method: str, params: Mapping[str, Any]) -> CallResult:
                for command in params.get("cmd", {}).values():
                    upto = bound(command, "%3C%3D")
                    if upto is not None:
                        bounds.append(upto)
                return await call(method, params)

            ids, _ = await export(noted, {"filter": {">ID": 1_000, "<=ID": 20_000, "<ID": 19_000}})
            return ids, bounds

    ids, bounds = run_virtual(main)
    assert ids == list(range(1_001, 19_000))
    assert bounds  # the ranges were bounded ...
    assert max(bounds) <= 20_000  # ... and none past the client's own bound


def test_a_page_error_in_a_later_range_ends_the_export_there_and_cancels_the_rest() -> None:
    async def main() -> tuple[list[int], BaseException, int, int]:
        async with lane(rate=2, burst=10, latency=2.0) as it:
            it.sandbox.portal.tables["crm.deal"].seed(40_000)
            call = through(it)
            failed: list[int] = []

            async def failing(method: str, params: Mapping[str, Any]) -> CallResult:
                result = await call(method, params)
                first = params.get("cmd", {}).get("p0", "")
                after, upto = bound(first, "%3E"), bound(first, "%3C%3D")
                # The range holding ID 20,000 fails.
                if after is not None and upto is not None and after < 20_000 <= upto:
                    failed.append(after)
                    error = {"error": "INTERNAL_SERVER_ERROR", "error_description": "boom"}
                    body = {"result": {"result": [], "result_error": {"p0": error}}}
                    return CallResult(body, result.portal, 0.0)
                return result

            query = list_query("crm.deal.list", {})
            pager = Pager(failing, query, 0)
            ids: list[int] = []
            with pytest.raises(BitrixError) as raised:
                await read(pager, ids)
            await asyncio.sleep(0)
            return ids, raised.value, failed[0], len(exporting())

    ids, error, after, left = run_virtual(main)
    assert isinstance(error, BitrixError)
    assert error.description == "boom"
    # The records below the failing range all came out first, then its error.
    assert ids == list(range(1, after + 1))
    assert left == 0  # no request of the export is left running


def test_a_slow_reader_holds_no_more_records_than_the_bound() -> None:
    async def main() -> tuple[list[int], int]:
        async with lane(rate=2, burst=10, latency=2.0) as it:
            it.sandbox.portal.tables["crm.deal"].seed(30_000)
            # A reader taking 1 s a page of 50: the portal is 50 times quicker.
            ids, pager = await export(through(it), {}, reader=1.0)
            return ids, pager.max_buffered

    ids, held = run_virtual(main)
    assert ids == list(range(1, 30_001))
    # Several requests' worth waited for the reader (without a bound, all 30,000 would).
    assert 2_500 < held <= Pager.MAX_BUFFERED == 20_000


def test_a_reader_that_leaves_cancels_the_requests_in_flight() -> None:
    async def main() -> tuple[int, int, int]:
        async with lane(rate=2, burst=2, latency=2.0) as it:
            it.sandbox.portal.tables["crm.deal"].seed(60_000)
            query = list_query("crm.deal.list", {})
            pager = Pager(through(it), query, 0)
            await pager.fetch(probe=True)
            stream = pager.stream()
            await anext(stream)
            running = len(exporting())
            await stream.aclose()
            await asyncio.sleep(0)
            return pager.requests, running, len(exporting())

    requests, running, left = run_virtual(main)
    assert running > 1  # several ranges were in flight when the reader left ...
    assert left == 0  # ... and none is once it has
    assert requests < 24  # far from the 25 requests of the whole list
