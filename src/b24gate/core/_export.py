"""Every record of a list method: Bitrix24's fast ID-ordered paging, 50 pages a request.

Bitrix24 answers lists 50 rows a page and, by default, counts every match again for each
page. With ``start=-1`` it skips the count, and with ``order: {ID: ASC}`` plus
``filter: {">ID": last}`` each page starts where the previous one ended (docs/protocol.md
§3.4). One ``batch`` carries up to 50 such pages, each taking its lower bound from the
page before it (``filter[>ID]=$result[p0][49][ID]``), so one request brings up to 2,500
records. The pages are read in order and the first one with fewer than 50 rows ends the
list: the pages after it hold unresolved references and are ignored.

A :class:`Pager` holds one request's pages at a time, so an export of any size runs in
constant memory. Cursors for clients that page themselves (1C) are opaque strings bound
to the query they came from.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
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

Call = Callable[[str, Mapping[str, Any]], Awaitable[CallResult]]
Record = dict[str, Any]


@dataclass(frozen=True)
class ListShape:
    """Where a list method's answer keeps its rows and what their ID field is called."""

    id_field: str = "ID"
    # The key holding the rows when the result is an object rather than a list.
    container: str | None = None


CLASSIC = ListShape()
# Methods whose rows are not the result itself. Others can join once a test shows that
# they honour `start=-1` and the `>id` filter (crm.item.list, tasks.task.list, …).
SHAPES: Mapping[str, ListShape] = {
    "catalog.product.list": ListShape(id_field="id", container="products"),
}

_MANAGED = ("filter", "select", "order", "start")


@dataclass(frozen=True)
class ListQuery:
    """A client's list request, checked, with the paging parameters left to the pager."""

    method: str
    shape: ListShape
    filter: Mapping[str, Any]  # without the `>ID` bound
    select: list[str] | None
    extra: Mapping[str, Any]  # every other parameter, passed through (e.g. entityTypeId)
    after: int  # the client's own `>ID` bound, or 0
    fingerprint: str  # what a cursor is bound to

    def params(self, after: int | str) -> dict[str, Any]:
        """One page's parameters: the rows with an ID above ``after``, in ID order."""
        shape = self.shape
        params: dict[str, Any] = {
            **self.extra,
            "filter": {**self.filter, f">{shape.id_field}": after},
            "order": {shape.id_field: "ASC"},
            "start": -1,
        }
        if self.select is not None:
            params["select"] = self.select
        return params


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
    bound_key = f">{shape.id_field}"
    after = 0
    if bound_key in flt:
        flt = dict(flt)
        bound = _record_id(flt.pop(bound_key))
        if bound is None:
            raise RequestError(f"`params.filter[{bound_key}]` must be a whole number")
        after = bound
    return ListQuery(
        method=method,
        shape=shape,
        filter=flt,
        select=_select(shape, managed.get("select")),
        extra=extra,
        after=after,
        fingerprint=_fingerprint(method, params),
    )


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


class Pager:
    """The pages of one list, in ID order, one request at a time.

    ``fetch`` returns the next pages (at most one request's worth) and sets ``done`` once
    the list has ended. Parameters that cannot travel in a batch command (``null``,
    booleans, empty arrays, text that Bitrix24 could read as a ``$result``-style reference
    to another page) are sent as they are, one page a request.
    """

    def __init__(self, call: Call, query: ListQuery, after: int) -> None:
        self._call = call
        self.query = query
        self.after = after
        self.done = False
        self.requests = 0
        self.upstream_ms = 0.0
        self.portal = "-"
        # The 429s of the last request's pages blocked for their operating time, by key.
        self._blocked: Mapping[str, RateLimited] = {}
        # Pages ride in a batch only if their parameters survive a command's query string.
        self._batched = batchable(query.params(after))

    def id_of(self, record: Mapping[str, Any]) -> int:
        found = _record_id(record.get(self.query.shape.id_field))
        assert found is not None  # checked by _accept before any record leaves the pager
        return found

    async def fetch(self, pages: int = PAGES_PER_REQUEST) -> list[list[Record]]:
        """Up to ``pages`` pages from one request; none once the list has ended."""
        if self.done:
            return []
        pages = max(1, min(pages, PAGES_PER_REQUEST))
        if pages == 1 or not self._batched:
            body = await self._send(self.query.method, self.query.params(self.after))
            return self._accept([body.get("result")])
        method = self.query.method
        body = await self._send(
            "batch",
            encode_batch(
                {f"p{i}": (method, self.query.params(self._bound(i))) for i in range(pages)}
            ),
        )
        answer = BatchAnswer.of(body)
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

    def _bound(self, index: int) -> int | str:
        """Page ``index``'s lower bound: the last ID of the page before it."""
        if index == 0:
            return self.after
        shape = self.query.shape
        rows = f"[{shape.container}]" if shape.container else ""
        return f"$result[p{index - 1}]{rows}[{PAGE_SIZE - 1}][{shape.id_field}]"

    async def _send(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        result = await self._call(method, params)
        self.requests += 1
        self.upstream_ms += result.upstream_ms
        self.portal = result.portal
        self._blocked = result.blocked
        return result.body

    def _accept(self, answers: list[Any]) -> list[list[Record]]:
        """The pages in order, up to the first short one; every ID above the one before."""
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
                self.after = found
            if rows:
                accepted.append(rows)
            if len(rows) < PAGE_SIZE:
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
        # budget made of it when the batch came back (:meth:`OperatingBudget.record_batch`).
        return self._blocked.get(key) or command_error(error)


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
