"""Every record of a list method: Bitrix24's fast ID-ordered paging, 50 pages a request,
several ID ranges at once.

Bitrix24 answers lists 50 rows a page and, by default, counts every match again for each
page. With ``start=-1`` it skips the count, and with ``order: {ID: ASC}`` plus
``filter: {">ID": last}`` each page starts where the previous one ended (docs/protocol.md
§3.4). One ``batch`` carries up to 50 such pages, each taking its lower bound from the
page before it (``filter[>ID]=$result[p0][49][ID]``), so one request brings up to 2,500
records. The pages are read in order and the first one with fewer than 50 rows ends the
list: the pages after it hold unresolved references and are ignored.

Such a chain has one request in flight, so a portal that takes 2 s a request would pace
the export at its latency, not at its budget. :meth:`Pager.stream` therefore cuts the IDs
up to the highest one (found by a probe riding in the first request) into ranges of about
one request each (``>ID lo`` plus ``<=ID hi``) and keeps as many in flight as keep the
portal's bucket busy; the answers wait in a bounded reorder buffer until every range
below them is out, so records still leave in ascending ID order.

Cursors for clients that page themselves (1C) are opaque strings bound to the query they
came from; that mode stays one request at a time (:func:`read_page`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import math
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..bitrix import (
    BATCH_LIMIT,
    PAGE_SIZE,
    BatchAnswer,
    as_map,
    batchable,
    command_error,
    encode_batch,
    valid_method,
)
from ..errors import (
    B24GateError,
    InvalidMethod,
    RateLimited,
    RequestError,
    UpstreamInvalid,
)
from ._dispatcher import CallResult

PAGES_PER_REQUEST = BATCH_LIMIT  # a page is a command of one batch
MAX_PAGE_SIZE = 5_000  # the largest page a client may ask for in cursor mode
# Requests of one export in flight or answered and held at most. The bucket stays busy
# while ceil(rate x request time) + 1 are in flight: at Bitrix24's standard 2 requests/s,
# 8 cover requests of up to 3.5 s (a batch of 50 pages at about 0.07 s a page). More
# would hold more memory (each may bring 2,500 records) for portals slower than that,
# which still get 8 times today's pace.
MAX_WINDOW = 8
# What a request may take on the portal: a third of Bitrix24's 60 s cap, so that a page
# slower than the ones measured so far does not take the request past it.
REQUEST_SECONDS = 20.0
# Ranges are cut for this much more than the density measured so far, so that most of
# them fit in one request; IDs are distinct whole numbers, so none is denser than 1.
DENSITY_MARGIN = 1.1

Call = Callable[[str, Mapping[str, Any]], Awaitable[CallResult]]
Record = dict[str, Any]


@dataclass(frozen=True)
class ListShape:
    """Where a list method's answer keeps its rows and what their ID field is called."""

    id_field: str = "ID"
    # The key holding the rows when the result is an object rather than a list.
    container: str | None = None
    # What the highest-ID probe selects: the ID, and what the method will not answer without.
    probe_select: tuple[str, ...] = ("ID",)


CLASSIC = ListShape()
# Methods whose rows are not the result itself. Others can join once a test shows that
# they honour `start=-1` and the `>id` filter (crm.item.list, tasks.task.list, …).
SHAPES: Mapping[str, ListShape] = {
    "catalog.product.list": ListShape(
        id_field="id", container="products", probe_select=("id", "iblockId")
    ),
}

_MANAGED = ("filter", "select", "order", "start")


@dataclass(frozen=True)
class ListQuery:
    """A client's list request, checked, with the paging parameters left to the pager."""

    method: str
    shape: ListShape
    filter: Mapping[str, Any]  # without the `>ID` and `<=ID` bounds
    select: list[str] | None
    extra: Mapping[str, Any]  # every other parameter, passed through (e.g. entityTypeId)
    after: int  # the client's own `>ID` bound, or 0
    fingerprint: str  # what a cursor is bound to
    upto: int | None = None  # the client's own `<=ID` bound

    def params(self, after: int | str, upto: int | None = None) -> dict[str, Any]:
        """One page's parameters: the rows with an ID above ``after`` (and at most ``upto``),
        in ID order."""
        params: dict[str, Any] = {
            **self.extra,
            "filter": self._bounded(after, upto),
            "order": {self.shape.id_field: "ASC"},
            "start": -1,
        }
        if self.select is not None:
            params["select"] = self.select
        return params

    def probe(self, after: int, upto: int | None = None) -> dict[str, Any]:
        """The parameters of a page whose first row has the highest ID the export will meet:
        the same filter, in descending order, with only the ID selected."""
        return {
            **self.extra,
            "filter": self._bounded(after, upto),
            "order": {self.shape.id_field: "DESC"},
            "start": -1,
            "select": list(self.shape.probe_select),
        }

    def _bounded(self, after: int | str, upto: int | None) -> dict[str, Any]:
        """The client's filter with the export's ID bounds: the client's own `<=ID`, if
        any, is already folded into ``upto`` (:class:`Pager`), so none is overwritten."""
        id_field = self.shape.id_field
        bounded = {**self.filter, f">{id_field}": after}
        if upto is not None:
            bounded[f"<={id_field}"] = upto
        return bounded


def list_query(method: str, params: Mapping[str, Any]) -> ListQuery:
    """Check a list request. ``ID`` is added to a ``select`` that lacks it and stays in the
    records: the export pages by it, and a record without its ID is of little use.
    """
    # The list method is the client's input here, not a call's: every page is built around
    # it (the fingerprint, batch commands) before the first request goes through admission,
    # which then checks what is sent (`batch` and each of its commands) once more.
    if not valid_method(method):
        raise InvalidMethod(f"{method[:80]!r} is not a Bitrix24 method name")
    if not method.lower().endswith(".list"):
        raise RequestError(f"{method} is not a list method: the name must end in .list")
    shape = SHAPES.get(method.lower(), CLASSIC)
    managed: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in params.items():
        # Bitrix24 reads top-level parameter names regardless of case.
        name = key.lower()
        if name not in _MANAGED:
            extra[key] = value
        elif name in managed:
            raise RequestError(f"`params` holds `{name}` twice")
        else:
            managed[name] = value
    if managed.get("start") is not None:
        raise RequestError("`params.start` is not allowed: the export pages by ID itself")
    _check_order(shape, managed.get("order"))
    flt = managed.get("filter")
    if flt is None:
        flt = {}
    if not isinstance(flt, dict):
        raise RequestError("`params.filter` must be a JSON object")
    # The export sets these two keys itself: the client's are taken out and intersected
    # with the export's ranges. Other conditions on the ID (`>=ID`, `<ID`, `ID`, `@ID`)
    # are other keys, which Bitrix24 applies together with the export's.
    flt = dict(flt)
    after = _id_bound(flt, f">{shape.id_field}")
    return ListQuery(
        method=method,
        shape=shape,
        filter=flt,
        select=_select(shape, managed.get("select")),
        extra=extra,
        after=after or 0,
        fingerprint=_fingerprint(method, params),
        upto=_id_bound(flt, f"<={shape.id_field}"),
    )


def _id_bound(flt: dict[str, Any], key: str) -> int | None:
    """The client's bound under ``key``, taken out of ``flt``; None if there is none."""
    if key not in flt:
        return None
    bound = _record_id(flt.pop(key))
    if bound is None:
        raise RequestError(f"`params.filter[{key}]` must be a whole number")
    return bound


def _check_order(shape: ListShape, order: Any) -> None:
    if order is None or order == {}:
        return
    if (
        isinstance(order, dict)
        and list(order) == [shape.id_field]
        and isinstance(order[shape.id_field], str)
        and order[shape.id_field].upper() == "ASC"
    ):
        return
    raise RequestError(
        f"`params.order` must be left out: records come in {shape.id_field} order, ascending"
    )


def _select(shape: ListShape, select: Any) -> list[str] | None:
    if select is None:
        return None
    if not isinstance(select, list) or not all(isinstance(s, str) and s for s in select):
        raise RequestError("`params.select` must be a list of field names")
    if not select:
        return None
    if shape.id_field in select or (shape is CLASSIC and "*" in select):
        return select
    return [shape.id_field, *select]


def _fingerprint(method: str, params: Mapping[str, Any]) -> str:
    canonical = json.dumps(
        [method.lower(), params], sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def _record_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


@dataclass
class _Tally:
    """What an export's requests add up to, whichever of its ranges sent them."""

    requests: int = 0
    upstream_ms: float = 0.0
    portal: str = "-"


class Pager:
    """The pages of one list, in ID order.

    ``fetch`` returns the next pages (at most one request's worth) and sets ``done`` once
    the list has ended; :meth:`stream` gives the rest of the list from several ID ranges
    at once. Parameters that cannot travel in a batch command (``null``, booleans, empty
    arrays, text that Bitrix24 could read as a ``$result``-style reference to another
    page) are sent as they are, one page a request.
    """

    # The most records :meth:`stream` holds at once: each request in flight or waiting
    # for its turn may bring 50 full pages.
    MAX_BUFFERED = MAX_WINDOW * PAGES_PER_REQUEST * PAGE_SIZE

    def __init__(
        self, call: Call, query: ListQuery, after: int, *, upto: int | None = None
    ) -> None:
        self._call = call
        self.query = query
        self.after = after
        # The last ID this pager may reach: its range's and the client's `<=ID`, the lower.
        self.upto = min((b for b in (upto, query.upto) if b is not None), default=None)
        self.done = False
        self._tally = _Tally()
        # The 429s of the last request's pages blocked for their operating time, by key.
        self._blocked: Mapping[str, RateLimited] = {}
        # Pages ride in a batch only if their parameters survive a command's query string.
        self._batched = batchable(query.params(after))
        # The highest ID of the list, once a probe found it (``fetch(probe=True)``).
        self.top: int | None = None
        # What was received (records, the first one's ID) and how long the last request
        # took: its wall time (queue included) and Bitrix24's own time for each command.
        self.received = 0
        self.lowest: int | None = None
        self.wall = 0.0
        self.answered_at = 0.0
        self.page_seconds: float | None = None
        self.max_buffered = 0  # the most records :meth:`stream` held at once

    @property
    def requests(self) -> int:
        return self._tally.requests

    @property
    def upstream_ms(self) -> float:
        """Time spent waiting for Bitrix24, summed over the requests (several may overlap)."""
        return self._tally.upstream_ms

    @property
    def portal(self) -> str:
        return self._tally.portal

    @property
    def batched(self) -> bool:
        """Whether its pages ride in a batch, 50 a request, or go one a request."""
        return self._batched

    def id_of(self, record: Mapping[str, Any]) -> int:
        found = _record_id(record.get(self.query.shape.id_field))
        assert found is not None  # checked by _accept before any record leaves the pager
        return found

    async def fetch(
        self, pages: int = PAGES_PER_REQUEST, *, probe: bool = False
    ) -> list[list[Record]]:
        """Up to ``pages`` pages from one request; none once the list has ended. ``probe``:
        the request also finds the list's highest ID (``top``) in place of one page, if
        its pages ride in a batch."""
        if self.done:
            return []
        pages = max(1, min(pages, PAGES_PER_REQUEST - 1 if probe else PAGES_PER_REQUEST))
        if (pages == 1 and not probe) or not self._batched:
            body = await self._send(self.query.method, self.query.params(self.after, self.upto))
            return self._accept([body.get("result")])
        method = self.query.method
        commands = {
            f"p{i}": (method, self.query.params(self._bound(i), self.upto)) for i in range(pages)
        }
        if probe:
            commands["top"] = (method, self.query.probe(self.after, self.upto))
        answer = BatchAnswer.of(await self._send("batch", encode_batch(commands)))
        if probe and "top" not in answer.errors:
            self.top = self._top_of(answer.results.get("top"))
        answers: list[Any] = []
        for i in range(pages):
            key = f"p{i}"
            if key in answer.errors or key not in answer.results:
                if not answers:
                    raise self._page_error(key, as_map(answer.errors.get(key)))
                # The pages before it stand; the next request starts again at this one.
                break
            answers.append(answer.results[key])
        return self._accept(answers)

    async def find_top(self) -> None:
        """Find the list's highest ID with a request of its own (when no batch carries it)."""
        body = await self._send(self.query.method, self.query.probe(self.after, self.upto))
        self.top = self._top_of(body.get("result"))

    def stream(self) -> AsyncGenerator[list[Record]]:
        """The pages after those :meth:`fetch` returned, to the end of the list, in ID order,
        from several ranges at once (:class:`_Ranges`). Close it (``aclose``) to stop: its
        requests in flight are cancelled."""
        return _Ranges(self).pages()

    def part(self, after: int, upto: int | None) -> Pager:
        """A pager for the IDs above ``after`` up to ``upto`` (None: to the end), whose
        requests count as this one's."""
        part = Pager(self._call, self.query, after, upto=upto)
        part._tally = self._tally
        return part

    def _bound(self, index: int) -> int | str:
        """Page ``index``'s lower bound: the last ID of the page before it."""
        if index == 0:
            return self.after
        shape = self.query.shape
        rows = f"[{shape.container}]" if shape.container else ""
        return f"$result[p{index - 1}]{rows}[{PAGE_SIZE - 1}][{shape.id_field}]"

    async def _send(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        clock = asyncio.get_running_loop()
        started = clock.time()
        result = await self._call(method, params)
        self.answered_at = clock.time()
        self.wall = self.answered_at - started
        tally = self._tally
        tally.requests += 1
        tally.upstream_ms += result.upstream_ms
        tally.portal = result.portal
        self._blocked = result.blocked
        commands = len(params["cmd"]) if method == "batch" else 1
        self.page_seconds = _seconds(result.body.get("time"), self.wall) / commands
        return result.body

    def _top_of(self, answer: Any) -> int | None:
        try:
            rows = self._rows(answer)
        except RequestError:  # a probe that did not work: the export goes on without it
            return None
        return _record_id(rows[0].get(self.query.shape.id_field)) if rows else None

    def _accept(self, answers: list[Any]) -> list[list[Record]]:
        """The pages in order, up to the first short one; every ID above the one before
        and within the bound."""
        accepted: list[list[Record]] = []
        for answer in answers:
            rows = self._rows(answer)
            for row in rows:
                found = _record_id(row.get(self.query.shape.id_field))
                if found is None:
                    raise self._unfit(
                        f"a record without a whole-number {self.query.shape.id_field}"
                    )
                if found <= self.after:
                    raise self._unfit("records out of ID order (the `>ID` filter was ignored)")
                if self.upto is not None and found > self.upto:
                    raise self._unfit("a record past the range (the `<=ID` filter was ignored)")
                self.after = found
                if self.lowest is None:
                    self.lowest = found
            self.received += len(rows)
            if rows:
                accepted.append(rows)
            if len(rows) < PAGE_SIZE or self.after == self.upto:
                self.done = True
                break
        return accepted

    def _rows(self, answer: Any) -> list[Record]:
        container = self.query.shape.container
        if container is not None and isinstance(answer, Mapping) and container in answer:
            answer = answer[container]
        if answer is None or answer == []:
            return []
        if not isinstance(answer, list) or not all(isinstance(r, dict) for r in answer):
            where = f"`{container}` of the result" if container else "the result"
            raise self._unfit(f"{where} is not a list of records")
        return answer

    def _unfit(self, why: str) -> RequestError:
        return RequestError(f"{self.query.method} cannot be exported by ID: {why}")

    def _page_error(self, key: str, error: Mapping[str, Any]) -> B24GateError:
        if not error:
            return UpstreamInvalid("Bitrix24's batch did not answer the first page")
        # A page blocked for its operating time: the 429 the gateway's operating-time
        # budget made of it when the batch came back (:meth:`OperatingBudget.blocked_commands`).
        return self._blocked.get(key) or command_error(error)


def _seconds(block: Any, wall: float) -> float:
    """How long Bitrix24 says a request ran (its ``time`` block), else its wall time."""
    if isinstance(block, Mapping):
        for name in ("duration", "processing"):
            value = block.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                return float(value)
    return wall


@dataclass
class _Gap:
    """IDs above ``after`` up to ``upto`` (None: to the end) that no request has asked for."""

    after: int
    upto: int | None


@dataclass
class _Range:
    """One request for the IDs above ``after`` up to its pager's bound, in flight or
    answered; its pages wait here until every range below it is out."""

    pager: Pager
    after: int
    upto: int | None
    task: asyncio.Task[list[list[Record]]]
    settled: bool = False
    pages: list[list[Record]] = field(default_factory=list)
    error: BaseException | None = None


class _Ranges:
    """The rest of a list after a pager's first request, cut into ID ranges of about one
    request each, as many in flight as keep the portal's bucket busy.

    ``items`` is the rest of the list in ID order: ranges asked for and gaps not yet asked
    for. A range whose request comes back full before its bound leaves a gap right after
    it, which is asked for before anything above it (gaps are served lowest first), so the
    head of ``items`` is always the next to come out. A range holds its slot, and its
    records, from the moment it is sent until its pages are out: at most ``MAX_WINDOW``
    requests' worth of records are ever held.
    """

    def __init__(self, head: Pager) -> None:
        self._head = head
        self._items: list[_Gap | _Range] = [] if head.done else [_Gap(head.after, head.upto)]
        self._held = 0
        # Latency: the quickest request so far, queue included (the least queued one).
        self._base = head.wall
        # When requests came back, for the rate the portal serves this export at.
        self._answered: deque[float] = deque([head.answered_at], maxlen=MAX_WINDOW + 1)
        self._page_seconds = head.page_seconds
        # Density: records per ID over what was asked for so far (not below the first ID).
        self._records = head.received
        self._span = 0 if head.lowest is None else head.after - head.lowest + 1

    async def pages(self) -> AsyncGenerator[list[Record]]:
        try:
            if self._items and self._head.top is None and self._window() > 1:
                await self._find_top()
            while self._items:
                self._settle()
                self._fill()
                head = self._items[0]
                if not isinstance(head, _Range) or not head.settled:
                    pending = [
                        i.task for i in self._items if isinstance(i, _Range) and not i.settled
                    ]
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    continue
                if head.error is not None:
                    raise head.error
                del self._items[0]
                for page in head.pages:
                    yield page
                    self._held -= len(page)
            self._head.done = True
        finally:
            tasks = [i.task for i in self._items if isinstance(i, _Range)]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _find_top(self) -> None:
        # Without the highest ID the export goes on as one chain, as before.
        with contextlib.suppress(B24GateError):
            await self._head.find_top()

    def _window(self) -> int:
        """Requests to keep in flight: the rate the portal answers at times the latency,
        plus one for the request on its way (Little's law). Until two answers have come
        back the rate is unknown: the window opens fully, since the scheduler sends no
        request before the portal's budget has room for it."""
        if self._base <= 0:
            return 1
        answered = self._answered
        took = max(answered) - min(answered)
        if len(answered) < 3 or took <= 0:
            return MAX_WINDOW
        rate = (len(answered) - 1) / took
        return max(1, min(MAX_WINDOW, math.ceil(rate * self._base) + 1))

    def _pages(self) -> int:
        """Pages a request: as many as Bitrix24 runs in ``REQUEST_SECONDS`` at the pace seen."""
        if not self._head.batched:
            return 1
        seconds = self._page_seconds
        if not seconds:
            return PAGES_PER_REQUEST
        return max(1, min(PAGES_PER_REQUEST, int(REQUEST_SECONDS / seconds)))

    def _width(self, records: int) -> int | None:
        """IDs that hold about ``records`` at the density seen; None while it is unknown."""
        if self._records <= 0 or self._span <= 0:
            return None
        density = min(1.0, DENSITY_MARGIN * self._records / self._span)
        return math.ceil(records / density)

    def _settle(self) -> None:
        """Take in every answer that came back: its pages, its timing, the gap it leaves."""
        items: list[_Gap | _Range] = []
        for item in self._items:
            self._push(items, item)
            if isinstance(item, _Range) and not item.settled and item.task.done():
                gap = self._answer(item)
                if gap is not None:
                    self._push(items, gap)
        self._items = items

    def _answer(self, item: _Range) -> _Gap | None:
        item.settled = True
        if item.task.cancelled():
            item.error = asyncio.CancelledError()
            return None
        error = item.task.exception()
        if error is not None:
            item.error = error
            return None
        item.pages = item.task.result()
        held = sum(len(page) for page in item.pages)
        self._held += held
        self._head.max_buffered = max(self._head.max_buffered, self._held)
        pager = item.pager
        self._base = min(self._base, pager.wall)
        self._answered.append(pager.answered_at)
        if pager.page_seconds is not None:
            # Slower pages are believed at once, quicker ones halfway: a request past
            # Bitrix24's cap fails, one a little short of the target only costs a request.
            before = self._page_seconds
            seconds = pager.page_seconds
            if before is not None and seconds < before:
                seconds = (before + seconds) / 2
            self._page_seconds = seconds
        self._records += held
        reached = pager.upto if pager.done and pager.upto is not None else pager.after
        self._span += reached - item.after
        return None if pager.done else _Gap(pager.after, item.upto)

    @staticmethod
    def _push(items: list[_Gap | _Range], item: _Gap | _Range) -> None:
        """Append ``item``, joining it to a gap right below it."""
        last = items[-1] if items else None
        if isinstance(item, _Gap) and isinstance(last, _Gap) and last.upto == item.after:
            last.upto = item.upto
        else:
            items.append(item)

    def _fill(self) -> None:
        """Ask for the lowest gaps while the window has room. The head of the line is asked
        for whatever the window: the ranges above it wait for it, slots and all."""
        window = self._window()
        slots = sum(isinstance(item, _Range) for item in self._items)
        items: list[_Gap | _Range] = []
        for index, item in enumerate(self._items):
            if isinstance(item, _Range):
                items.append(item)
                if item.error is not None:  # the export ends there: nothing above is needed
                    items += self._items[index + 1 :]
                    break
                continue
            gap: _Gap | None = item
            while gap is not None and (slots < window or not items):
                sent = self._send(gap, window)
                items.append(sent)
                gap = self._rest(gap, sent)
                slots += 1
            if gap is not None:
                items.append(gap)
        self._items = items

    def _send(self, gap: _Gap, window: int) -> _Range:
        """A request for the front of ``gap``: about one request's records at the density
        seen, or the whole gap when the window is one (a chain, as one request at a time
        pages best), when the density or the list's end is unknown, or when the gap ends
        within reach. The last range stays open above: records added meanwhile are in it."""
        pages = self._pages()
        upto = gap.upto
        width = self._width(pages * PAGE_SIZE)
        end = min((b for b in (upto, self._head.top) if b is not None), default=None)
        if window > 1 and width is not None and end is not None and gap.after + width < end:
            upto = gap.after + width
        pager = self._head.part(gap.after, upto)
        task = asyncio.create_task(pager.fetch(pages))
        return _Range(pager, gap.after, upto, task)

    @staticmethod
    def _rest(gap: _Gap, sent: _Range) -> _Gap | None:
        if sent.upto == gap.upto:
            return None
        assert sent.upto is not None
        return _Gap(sent.upto, gap.upto)


async def read_page(pager: Pager, size: int) -> tuple[list[Record], int | None]:
    """At most ``size`` records and the ID to go on after, or None at the end of the list.

    A page that ends exactly where the list does may still say "go on": the next one is
    then empty, with no ID to go on after.
    """
    items: list[Record] = []
    while len(items) < size and not pager.done:
        wanted = math.ceil((size - len(items)) / PAGE_SIZE)
        for page in await pager.fetch(wanted):
            items.extend(page)
    if len(items) > size:
        del items[size:]
        return items, pager.id_of(items[-1])
    if pager.done:
        return items, None
    return items, pager.id_of(items[-1])


# -- cursors --------------------------------------------------------------------------
#
# A cursor is base64url(JSON + 8 bytes of its SHA-256). The checksum catches a cursor that
# was cut or mangled on its way through 1C, which would otherwise skip or repeat records
# silently. It is not a signature and needs none: a cursor only holds an ID to go on after
# and the fingerprint of its query, and whoever forges one could send the same `>ID`
# filter in `params` anyway.

_CURSOR_VERSION = 1
_CURSOR_MAX = 256


def _checksum(raw: bytes) -> bytes:
    return hashlib.sha256(b"b24gate-cursor\x00" + raw).digest()[:8]


def encode_cursor(query: ListQuery, after: int) -> str:
    raw = json.dumps(
        {"v": _CURSOR_VERSION, "after": after, "q": query.fingerprint}, separators=(",", ":")
    ).encode()
    return base64.urlsafe_b64encode(raw + _checksum(raw)).rstrip(b"=").decode("ascii")


def decode_cursor(query: ListQuery, cursor: str) -> int:
    """The ID a cursor goes on after; a cursor of another query or a mangled one is refused."""
    refused = RequestError("`cursor` is not one that this query returned")
    if len(cursor) > _CURSOR_MAX or not cursor.isascii():
        raise refused
    try:
        data = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise refused from None
    raw, check = data[:-8], data[-8:]
    if len(data) <= 8 or not hmac.compare_digest(_checksum(raw), check):
        raise refused
    try:
        body = json.loads(raw)
    except ValueError:
        raise refused from None
    if not isinstance(body, dict):
        raise refused
    after = body.get("after")
    if (
        not isinstance(after, int)
        or isinstance(after, bool)
        or after < 0
        or body.get("v") != _CURSOR_VERSION
        or body.get("q") != query.fingerprint
    ):
        raise refused
    return after
