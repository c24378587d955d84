"""The offline event queue behind ``event.offline.*``: one queue per application and
``auth_connector`` channel, keeping the latest state of each object rather than each change.

Read from Bitrix24's rest module in the public mirror ``avshatalov48/bitrix-core-business``
(``Bitrix\\Rest\\EventOfflineTable`` in ``modules/rest/lib/eventoffline.php``) and from the
docs (``api-reference/events/offline-events.md``, ``event-offline-get.md``,
``event-offline-clear.md``, ``event-offline-error.md``, ``event-offline-list.md``):

- A record is merged on its ``MESSAGE_ID`` (``md5`` of the event's name and data), channel
  and ``PROCESS_ID``: a second change of a deal whose record waits updates that record
  (its time and data) instead of adding one. ``ONCRMDEALADD`` and ``ONCRMDEALUPDATE`` of
  one deal are two records. A record reserved under a ``process_id`` is no longer the one
  a change merges into: a change after the reservation makes a new waiting record.
- Reserving takes up to ``limit`` waiting records (``PROCESS_ID`` empty) of the asked
  ``ERROR`` state, oldest change first unless ordered otherwise.
- Reserved records are never handed out as waiting ones again: the ``process_id`` reads them
  again, ``event.offline.clear`` deletes them, and Bitrix24's agent deletes those whose
  last change is older than :data:`PROCESS_ID_LIFETIME` (done here when the queue is read).
- Marking failed (``event.offline.error``) releases a process's records with ``ERROR=1``:
  only ``error=1`` hands them out again; a change arriving meanwhile merges into them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from ._config import new_secret
from ._entities import Condition
from ._errors import RestError

# EventOfflineTable::PROCESS_ID_LIFETIME; its comment says 30 days, the number is 34 days
# and 4 hours. cleanProcessAgent deletes reserved records whose last change is older.
PROCESS_ID_LIFETIME = 2_952_000
# IRestService::LIST_LIMIT: event.offline.get's default limit, event.offline.list's page.
LIST_LIMIT = 50
# What Api\Event::sanitizeFilter/sanitizeOrder let event.offline.get and .list name.
GET_FIELDS = ("ID", "TIMESTAMP_X", "EVENT_NAME", "MESSAGE_ID")
LIST_FIELDS = (*GET_FIELDS, "PROCESS_ID", "ERROR")
_OPERATIONS = ("", "=", ">", "<", ">=", "<=", "@", "%")
_FILTER_KEY = re.compile(r"([^a-zA-Z]*)(.*)", re.DOTALL)

Channel = tuple[str, str]  # (client_id, connector_id); "" is the default connector
Order = list[tuple[str, bool]]  # (field, descending)
OLDEST_FIRST: Order = [("TIMESTAMP_X", False)]
BY_ID: Order = [("ID", False)]


def iso(ts: float) -> str:
    """``CRestUtil::convertDateTime``: ISO 8601 with the offset (the sandbox's is UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def message_id(event_name: str, data: Any) -> str:
    """``EventOfflineTable::getMessageId``: md5 of the name and the JSON of the data."""
    encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return hashlib.md5(f"{event_name}|{encoded}".encode(), usedforsecurity=False).hexdigest()


def _bad(description: str) -> RestError:
    # A RestException thrown as it is (no `argument` in the answer).
    return RestError(400, "ERROR_ARGUMENT", description)


def _epoch(value: Any) -> Any:
    """A ``TIMESTAMP_X`` filter value as seconds, to compare with the records' time."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return value


def read_filter(raw: Any, allowed: tuple[str, ...]) -> list[Condition]:
    """``IRestService::sanitizeFilter``: upper-cased keys, the operation before the field."""
    if raw is None or raw == []:
        return []
    if isinstance(raw, list):
        raw = {str(i): v for i, v in enumerate(raw)}
    if not isinstance(raw, Mapping):
        raise _bad("The filter is not an array.")
    out = []
    for key, value in raw.items():
        match = _FILTER_KEY.fullmatch(str(key).upper())
        op, name = match.groups() if match else ("", str(key))
        if op not in _OPERATIONS:
            raise _bad(f"Filter operation not allowed: {op}")
        if name not in allowed:
            raise _bad(f"Filter field not allowed: {name}")
        out.append(Condition(name, op, _epoch(value) if name == "TIMESTAMP_X" else value))
    return out


def read_order(raw: Any, allowed: tuple[str, ...], default: Order) -> Order:
    """``IRestService::sanitizeOrder``: ``{FIELD: ASC|DESC}``, or a list of field names."""
    if raw is None:
        return default
    if isinstance(raw, list):
        raw = {str(i): v for i, v in enumerate(raw)}
    if not isinstance(raw, Mapping):
        raise _bad("The order is not an array.")
    out: Order = []
    for key, value in raw.items():
        name = str(key).upper()
        if name.isdigit():
            if value not in allowed:
                raise _bad(f"Order field not allowed: {value}")
            out.append((str(value), False))
            continue
        if name not in allowed:
            raise _bad(f"Order field not allowed: {name}")
        direction = str(value).upper()
        if direction not in ("ASC", "DESC"):
            raise _bad("Order direction should be one of {ASC|DESC}")
        out.append((name, direction == "DESC"))
    return out or default


@dataclass
class OfflineRecord:
    """One row of ``b_rest_event_offline``."""

    id: int
    event_name: str
    data: Any
    additional: dict[str, Any]
    message_id: str
    timestamp: float
    touched: int  # order of the last change: ties of TIMESTAMP_X (a frozen clock) keep it
    process_id: str = ""
    error: int = 0

    def values(self) -> dict[str, Any]:
        """What a filter compares."""
        return {
            "ID": self.id,
            "TIMESTAMP_X": self.timestamp,
            "EVENT_NAME": self.event_name,
            "MESSAGE_ID": self.message_id,
            "PROCESS_ID": self.process_id,
            "ERROR": self.error,
        }

    def row(self, listed: bool = False) -> dict[str, Any]:
        """The record as event.offline.get answers it (``listed``: as event.offline.list,
        which adds ``PROCESS_ID`` and ``ERROR``); database values are strings."""
        row = {
            "ID": str(self.id),
            "TIMESTAMP_X": iso(self.timestamp),
            "EVENT_NAME": self.event_name,
            "EVENT_DATA": self.data,
            "EVENT_ADDITIONAL": self.additional,
            "MESSAGE_ID": self.message_id,
        }
        if listed:
            row.update(PROCESS_ID=self.process_id, ERROR=str(self.error))
        return row


def _sort_key(name: str) -> Callable[[OfflineRecord], Any]:
    if name == "TIMESTAMP_X":
        return lambda r: (r.timestamp, r.touched)
    if name in ("ID", "ERROR"):
        return lambda r: r.values()[name]
    return lambda r: str(r.values()[name])


def _ordered(records: Iterable[OfflineRecord], order: Order) -> list[OfflineRecord]:
    rows = sorted(records, key=lambda r: r.id)
    for name, descending in reversed(order):
        rows.sort(key=_sort_key(name), reverse=descending)
    return rows


@dataclass
class _Queue:
    """One channel's records."""

    records: dict[int, OfflineRecord] = field(default_factory=dict)
    # Waiting records (PROCESS_ID empty) by MESSAGE_ID: where a new change merges.
    waiting: dict[str, int] = field(default_factory=dict)
    # Waiting records with ERROR=0, oldest change first: what a plain reservation takes.
    fresh: dict[int, None] = field(default_factory=dict)
    processes: dict[str, dict[int, None]] = field(default_factory=dict)

    def pool(self, process_id: str) -> Iterator[OfflineRecord]:
        ids = self.waiting.values() if process_id == "" else self.processes.get(process_id, {})
        return (self.records[i] for i in list(ids))

    def delete(self, record: OfflineRecord) -> None:
        del self.records[record.id]
        if record.process_id == "":
            if self.waiting.get(record.message_id) == record.id:
                del self.waiting[record.message_id]
            self.fresh.pop(record.id, None)
            return
        reserved = self.processes[record.process_id]
        del reserved[record.id]
        if not reserved:
            del self.processes[record.process_id]


class OfflineQueue:
    """Every channel's offline records; IDs are one sequence, as in the table."""

    def __init__(self) -> None:
        self._queues: dict[Channel, _Queue] = {}
        self._next_id = 1
        self._touches = 0

    def _queue(self, channel: Channel) -> _Queue:
        return self._queues.setdefault(channel, _Queue())

    def put(
        self,
        channel: Channel,
        event_name: str,
        data: Any,
        additional: dict[str, Any],
        now: float,
    ) -> None:
        """``EventOfflineTable::callEvent``: add the record, or refresh the waiting one of
        the same object (a failed one stays failed)."""
        queue = self._queue(channel)
        mid = message_id(event_name, data)
        self._touches += 1
        found = queue.waiting.get(mid)
        if found is not None:
            record = queue.records[found]
            record.timestamp, record.data, record.additional = now, data, additional
            record.touched = self._touches
            if found in queue.fresh:  # to the end: it is now the latest change
                del queue.fresh[found]
                queue.fresh[found] = None
            return
        record = OfflineRecord(self._next_id, event_name, data, additional, mid, now, self._touches)
        self._next_id += 1
        queue.records[record.id] = record
        queue.waiting[mid] = record.id
        queue.fresh[record.id] = None

    def _select(
        self,
        queue: _Queue,
        process_id: str,
        error: bool,
        conditions: list[Condition],
        order: Order,
        limit: int,
    ) -> list[OfflineRecord]:
        if process_id == "" and not error and not conditions and order == OLDEST_FIRST:
            return [queue.records[i] for i in islice(queue.fresh, limit)]
        wanted = int(error)
        found = (
            r
            for r in queue.pool(process_id)
            if r.error == wanted and all(c.matches(r.values()) for c in conditions)
        )
        return _ordered(found, order)[:limit]

    def reserve(
        self,
        channel: Channel,
        error: bool,
        conditions: list[Condition],
        order: Order,
        limit: int,
    ) -> str:
        """``EventOfflineTable::markEvents``: a new ``process_id`` on up to ``limit`` waiting
        records (none found still makes one)."""
        process_id = new_secret(32)
        queue = self._queue(channel)
        taken = self._select(queue, "", error, conditions, order, limit)
        reserved = queue.processes.setdefault(process_id, {})
        for record in taken:
            queue.delete(record)
            queue.records[record.id] = record
            record.process_id = process_id
            reserved[record.id] = None
        if not reserved:
            del queue.processes[process_id]
        return process_id

    def select(
        self,
        channel: Channel,
        process_id: str,
        error: bool,
        conditions: list[Condition],
        order: Order,
        limit: int,
    ) -> list[OfflineRecord]:
        """The records of ``process_id`` (``""``: the waiting ones) in that ``ERROR`` state."""
        return self._select(self._queue(channel), process_id, error, conditions, order, limit)

    def clear(
        self,
        channel: Channel,
        process_id: str,
        ids: list[int] | None = None,
        message_ids: list[str] | None = None,
    ) -> None:
        """``clearEvents``/``clearEventsByMessageId``: delete the process's records, those
        with the given IDs or MESSAGE_IDs when a list is given, whatever their ERROR."""
        queue = self._queue(channel)
        for record in list(queue.pool(process_id)):
            if ids is not None and record.id not in ids:
                continue
            if message_ids is not None and record.message_id not in message_ids:
                continue
            queue.delete(record)

    def mark_error(self, channel: Channel, process_id: str, message_ids: list[str]) -> None:
        """``EventOfflineTable::markError``: the process's records with these MESSAGE_IDs
        wait again marked failed; other unfailed records of those objects (a change made
        after the reservation, another process's) are deleted."""
        queue = self._queue(channel)
        wanted = set(message_ids)
        for record in list(queue.records.values()):
            stale = record.error == 0 and record.process_id != process_id
            if stale and record.message_id in wanted:
                queue.delete(record)
        for record in list(queue.pool(process_id)):
            if record.message_id not in wanted or record.error != 0:
                continue
            queue.delete(record)
            record.process_id, record.error = "", 1
            if record.message_id in queue.waiting:
                continue  # a failed record of that object waits already; it stands for both
            queue.records[record.id] = record
            queue.waiting[record.message_id] = record.id

    def page(
        self, channel: Channel, conditions: list[Condition], order: Order, start: int
    ) -> tuple[list[OfflineRecord], int]:
        """``event.offline.list``: one page of 50 of every record, and how many match."""
        queue = self._queue(channel)
        found = _ordered(
            (r for r in queue.records.values() if all(c.matches(r.values()) for c in conditions)),
            order,
        )
        offset = max(start, 0)
        return found[offset : offset + LIST_LIMIT], len(found)

    def expire(self, now: float) -> None:
        """``cleanProcessAgent``: reserved records whose last change is too old go."""
        cutoff = now - PROCESS_ID_LIFETIME
        for queue in self._queues.values():
            for process_id in list(queue.processes):
                for record in list(queue.pool(process_id)):
                    if record.timestamp < cutoff:
                        queue.delete(record)

    def waiting(self) -> dict[Channel, int]:
        """Records each channel would hand out now (waiting, not failed)."""
        return {channel: len(queue.fresh) for channel, queue in self._queues.items()}
