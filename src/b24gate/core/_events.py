"""Bitrix24's events for consumers behind a firewall (docs/events.md).

Two ways in, one log out. *Online*: the gateway is the handler Bitrix24 posts each event
to (``event.bind`` with ``{public_url}/bitrix/events/<secret>``); a delivery is checked
(the URL's secret, the portal's ``member_id``, its ``application_token`` in constant time
when the install event gave one), kept durably, then answered. *Offline*: the gateway
drains the portal's offline queue (``event.offline.get`` with ``clear=0`` under a
``process_id``, kept, then ``event.offline.clear``), woken by ``ONOFFLINEEVENT`` or every
``event_poll`` seconds, and its own writes carry ``auth_connector`` so they do not come
back. Consumers read the portal's log after their cursor (:class:`EventLog`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from ..errors import (
    B24GateError,
    BitrixError,
    EventRefused,
    EventsForbidden,
    InvalidSetting,
    LockTimeout,
    RequestError,
    UnknownPortal,
)
from ..settings import Settings
from ..store import Client, Event, NewEvent, Portal, ReadCache, Store, Subscription
from ._access import check_address
from ._admin import operator_client
from ._admission import resolve_portal
from ._dispatcher import Dispatcher

log = logging.getLogger("b24gate.events")

# The channel of the gateway's offline queue, and what its own writes carry.
CONNECTOR = "b24gate"
HANDLER_PATH = "/bitrix/events/"
SIGNAL = "ONOFFLINEEVENT"
# Offline records asked for a call (event.offline.get's limit: 50 by default, no maximum
# in the rest module's code): two requests (get, clear) for this many events.
OFFLINE_BATCH = 500
# A drain stops after this many rounds and lets other portals have their turn.
DRAIN_ROUNDS = 20
_EVENT_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
# A consumer waiting on another replica's writes looks at the store this often.
WAIT_STEP = 1.0
# The longest long poll, and the most events a page.
MAX_WAIT = 60.0
MAX_PAGE = 1000
PURGE_EVERY = 60.0
# How often reservations left behind by a drain that died are looked for (also at the
# first drain of each portal in a process, and after a drain that failed).
ORPHAN_CHECK = 600.0
# Bitrix24's answer to binding what is bound already (event.bind).
ALREADY_BOUND = "already binded"


def event_names(names: Iterable[str]) -> list[str]:
    """Event names as Bitrix24 spells them (upper case); :class:`InvalidSetting` for one that
    cannot be an event's name."""
    checked = list(dict.fromkeys(n.strip().upper() for n in names))
    bad = [n for n in checked if not _EVENT_NAME.fullmatch(n)]
    if not checked or bad:
        raise InvalidSetting(
            "event_names", f"not an event name: {', '.join(map(repr, bad)) or '(none given)'}"
        )
    return checked


def event_allowed(patterns: Sequence[str], name: str) -> bool:
    """Whether a key with event ``patterns`` may read ``name``; no patterns: nothing."""
    upper = name.upper()
    return any(fnmatchcase(upper, p.upper()) for p in patterns)


@dataclass(frozen=True)
class Page:
    """What a consumer reads: the events after its cursor that its key may see, the cursor
    to acknowledge them with, and how many events it missed (purged before it read them)."""

    portal: str
    events: list[Event]
    next: int
    missed: int


def event_view(event: Event) -> dict[str, Any]:
    """An event as consumers get it (read or pushed)."""
    return {
        "cursor": event.seq,
        "event": event.event,
        "data": event.data,
        "ts": event.ts,
        "source": event.source,
        "received_at": event.received_at,
    }


def handler_url(settings: Settings, secret: str) -> str:
    return f"{settings.public_url.rstrip('/')}{HANDLER_PATH}{secret}"


@dataclass(frozen=True)
class Delivery:
    """An online delivery as Bitrix24 posts it (a form, PHP brackets), parsed."""

    event: str
    data: Mapping[str, Any]
    ts: float | None
    auth: Mapping[str, Any]

    @classmethod
    def parse(cls, form: Mapping[str, Any]) -> Delivery:
        event = form.get("event")
        if not isinstance(event, str) or not _EVENT_NAME.fullmatch(event.upper()):
            raise _refused("the delivery names no event")
        data = form.get("data")
        auth = form.get("auth")
        return cls(
            event=event.upper(),
            data=data if isinstance(data, Mapping) else {},
            ts=_number(form.get("ts")),
            auth=auth if isinstance(auth, Mapping) else {},
        )


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class Events:
    """Subscriptions, the online handler's checks, the offline drain, and the wake-ups of
    consumers waiting on a portal's log."""

    def __init__(
        self, store: Store, reads: ReadCache, dispatcher: Dispatcher, settings: Settings
    ) -> None:
        self._store = store
        self._reads = reads
        self._dispatcher = dispatcher
        self._settings = settings
        self._arrived: dict[int, asyncio.Event] = {}
        self._any = asyncio.Event()
        self._wake = asyncio.Event()
        # When each portal's reservations left by a drain that died are looked for next.
        self._orphans_due: dict[int, float] = {}

    # -- subscriptions (the administrator) -------------------------------------------

    async def subscribe(self, portal_name: str, names: Sequence[str], mode: str) -> Portal:
        """Bind ``names`` at the portal (as its administrator's grant) and keep them."""
        portal = await self._portal(portal_name)
        wanted = event_names(names)
        # An event subscribed in the other mode: its old binding goes first.
        for sub in await self._store.events.subscriptions(portal.id):
            if sub.event in wanted and sub.mode != mode:
                with contextlib.suppress(BitrixError):
                    await self._call(portal, "event.unbind", await self._binding(portal, sub))
        if mode == "online":
            url = await self._handler(portal)
            for name in wanted:
                await self._bind(portal, {"event": name, "handler": url})
        else:
            for name in wanted:
                await self._bind(
                    portal, {"event": name, "event_type": "offline", "auth_connector": CONNECTOR}
                )
            # A signal when the offline queue fills, so the drain need not wait its poll.
            with contextlib.suppress(B24GateError):
                await self._bind(
                    portal,
                    {
                        "event": SIGNAL,
                        "handler": await self._handler(portal),
                        # No signal more often than the gateway drains.
                        "options": {"minTimeout": math.ceil(self._settings.event_drain_interval)},
                    },
                )
            if portal.auth_connector != CONNECTOR:
                portal = await self._store.update_portal(portal.name, auth_connector=CONNECTOR)
        await self._store.events.subscribe(portal.id, wanted, mode, time.time())
        self._wake.set()
        return portal

    async def unsubscribe(self, portal_name: str, names: Sequence[str]) -> list[Subscription]:
        portal = await self._portal(portal_name)
        wanted = event_names(names)
        current = {s.event: s for s in await self._store.events.subscriptions(portal.id)}
        for name in wanted:
            sub = current.get(name)
            if sub is None:
                continue
            await self._call(portal, "event.unbind", await self._binding(portal, sub))
        removed = await self._store.events.unsubscribe(portal.id, wanted)
        left = await self._store.events.subscriptions(portal.id)
        if not any(s.mode == "offline" for s in left) and portal.auth_connector is not None:
            with contextlib.suppress(B24GateError):
                await self._call(
                    portal,
                    "event.unbind",
                    {"event": SIGNAL, "handler": await self._handler(portal)},
                )
            await self._store.update_portal(portal.name, auth_connector=None)
        return removed

    async def _portal(self, name: str) -> Portal:
        portal = await self._store.portal(name)
        if portal is None:
            raise UnknownPortal(f"no portal named {name!r}")
        if portal.kind != "oauth":
            raise InvalidSetting(
                "portal", "events need an application's grant (event.bind): not a webhook portal"
            )
        return portal

    async def _binding(self, portal: Portal, sub: Subscription) -> dict[str, Any]:
        """The parameters that name ``sub``'s binding at Bitrix24 (for event.unbind)."""
        if sub.mode == "online":
            return {"event": sub.event, "handler": await self._handler(portal)}
        return {"event": sub.event, "event_type": "offline", "auth_connector": CONNECTOR}

    async def _handler(self, portal: Portal) -> str:
        secret = await self._store.events.handler_secret(portal.id, secrets.token_urlsafe(32))
        return handler_url(self._settings, secret)

    async def _bind(self, portal: Portal, params: dict[str, Any]) -> None:
        try:
            await self._call(portal, "event.bind", params)
        except BitrixError as exc:
            # Bitrix24 says ERROR_CORE "Unable to set event handler: Handler already binded".
            if ALREADY_BOUND not in exc.description.lower():
                raise

    async def _call(self, portal: Portal, method: str, params: Mapping[str, Any]) -> Any:
        done = await self._dispatcher.call(
            operator_client(portal.name), method, params, portal_name=portal.name
        )
        return done.body.get("result")

    # -- online deliveries -----------------------------------------------------------

    async def portal_for(self, secret: str) -> Portal:
        """The portal whose handler URL carries ``secret``; :class:`EventRefused` otherwise
        (before anything of the body is read)."""
        portal_id = await self._store.events.portal_by_secret(secret)
        # Read afresh, not through the cache: on SQLite every event kept would empty it.
        portal = None if portal_id is None else await self._store.portal_by_id(portal_id)
        if portal is None:
            # Quiet: anyone can post here, and a flood must not fill the log.
            log.debug("an event delivery named no portal's handler")
            raise EventRefused()
        return portal

    async def receive(self, portal: Portal, delivery: Delivery) -> bool:
        """Check and keep one delivery; whether it was kept (an event nobody subscribed to
        is answered but kept nowhere)."""
        _verify(portal, delivery.auth)
        if delivery.event == SIGNAL:
            self.wake()
            return False
        subscribed = {
            s.event for s in await self._store.events.subscriptions(portal.id) if s.mode == "online"
        }
        if delivery.event not in subscribed:
            log.info("portal=%s: %s is not subscribed; not kept", portal.name, delivery.event)
            return False
        new = NewEvent(event=delivery.event, data=delivery.data, ts=delivery.ts, source="online")
        await self._store.events.append(portal.id, [new], time.time())
        self.arrived(portal.id)
        return True

    # -- consumers -------------------------------------------------------------------

    async def page(
        self,
        client: Client,
        portal_name: str | None,
        *,
        address: str | None,
        after: int | None,
        limit: int,
        wait: float,
    ) -> Page:
        """The events of the portal after ``after`` (or the client's cursor) that the key may
        see, waiting up to ``wait`` seconds for the first. Passing ``after`` acknowledges
        every event up to it: the client's cursor moves there."""
        check_address(client.ips, address)
        if not client.events:
            raise EventsForbidden("this key may read no events (client add --events)")
        portal = await resolve_portal(self._reads, client, portal_name, None)
        log_ = self._store.events
        head = await log_.head(portal.id)
        if after is None:
            after = await log_.cursor(client.id, portal.id) or 0
        elif after > head.last:
            raise RequestError(
                f"`after` {after} is past the portal's last event ({head.last}): a cursor "
                "from another gateway's database?"
            )
        else:
            await log_.acknowledge(client.id, portal.id, after, time.time())
        missed = max(0, head.purged - after)
        first = True
        deadline = time.monotonic() + min(wait, MAX_WAIT)
        cursor = after
        while True:
            rows = await log_.read(portal.id, cursor, limit)
            if rows and first:
                # Purged since the head was read: the page starts after a gap.
                missed = max(missed, rows[0].seq - after - 1)
            first = first and not rows
            if rows:
                cursor = rows[-1].seq
            seen = [e for e in rows if event_allowed(client.events, e.event)]
            left = deadline - time.monotonic()
            if seen or left <= 0:
                return Page(portal.name, seen, cursor, missed)
            if not rows:  # nothing new: wait for this process's next write, or look again
                await self.wait(portal.id, min(WAIT_STEP, left))

    # -- consumers waiting -----------------------------------------------------------

    def arrived(self, portal_id: int) -> None:
        """Wake this process's consumers waiting on ``portal_id``'s log."""
        self._any.set()
        waiting = self._arrived.pop(portal_id, None)
        if waiting is not None:
            waiting.set()

    async def wait(self, portal_id: int, seconds: float) -> None:
        """Until an event of ``portal_id`` is kept in this process, or ``seconds`` passed."""
        waiting = self._arrived.setdefault(portal_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiting.wait(), seconds)

    async def any_arrival(self, seconds: float) -> None:
        """Until an event of any portal is kept in this process, or ``seconds`` passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._any.wait(), seconds)
        self._any.clear()

    # -- the offline drain -----------------------------------------------------------

    def wake(self) -> None:
        """Drain the offline queues now (an ONOFFLINEEVENT came)."""
        self._wake.set()

    async def run(self) -> None:
        """Drain every portal with offline subscriptions, then wait for a signal or the
        poll interval."""
        next_purge = 0.0
        while True:
            self._wake.clear()
            kept = 0
            try:
                kept = await self.drain_all()
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_EVERY
                    await self._store.events.purge(time.time() - self._settings.event_retention)
            except Exception:  # a failed round must not end the loop; the next one retries
                log.exception("the offline events round failed")
            # The portal's budget: at most one drain an interval (two requests), so that a
            # busy queue takes a small share next to the calls.
            interval = self._settings.event_drain_interval
            await asyncio.sleep(interval)
            if kept:
                continue  # busy: its next changes are waiting already
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(),
                    max(0.0, min(self._settings.event_poll, PURGE_EVERY) - interval),
                )

    async def drain_all(self) -> int:
        """One round over the portals with offline subscriptions; events kept."""
        offline = {
            s.portal_id for s in await self._store.events.subscriptions() if s.mode == "offline"
        }
        kept = 0
        for portal in await self._reads.portals():
            if portal.id in offline:
                try:
                    async with self._store.events.drain_lock(portal.id):
                        kept += await self.drain(portal)
                except LockTimeout:
                    continue  # another replica drains this portal now
                except Exception as exc:  # a store error too: the other portals' turn comes
                    # What this drain reserved may be left behind: look for it next time.
                    self._orphans_due.pop(portal.id, None)
                    log.warning(
                        "portal=%s: offline events not drained: %s %s",
                        portal.name,
                        getattr(exc, "code", type(exc).__name__),
                        exc,
                    )
        return kept

    async def drain(self, portal: Portal) -> int:
        """Take the portal's offline records, keep them, then clear them at Bitrix24."""
        kept = 0
        if time.monotonic() >= self._orphans_due.get(portal.id, 0.0):
            kept += await self._orphans(portal)
            self._orphans_due[portal.id] = time.monotonic() + ORPHAN_CHECK
        for _ in range(DRAIN_ROUNDS):
            got = await self._call(
                portal,
                "event.offline.get",
                {"clear": 0, "limit": OFFLINE_BATCH, "auth_connector": CONNECTOR},
            )
            records = got.get("events") if isinstance(got, Mapping) else None
            process_id = got.get("process_id") if isinstance(got, Mapping) else None
            if not records or not isinstance(records, list) or not process_id:
                break
            read = [(record, _offline_event(record)) for record in records]
            fresh = [new for _, new in read if new is not None]
            # Kept before cleared: a crash between leaves them reserved at Bitrix24, handed
            # out again later and kept once (their origin).
            await self._store.events.append(portal.id, fresh, time.time())
            kept += len(fresh)
            self.arrived(portal.id)
            await self._settle(portal, process_id, read)
            if len(records) < OFFLINE_BATCH:
                break
        return kept

    async def _orphans(self, portal: Portal) -> int:
        """Records reserved by a drain that never cleared them (its process died between
        keeping and clearing, or its clear failed): Bitrix24 hands reserved records out to
        no one again, so they are listed, kept (once: their origin) and cleared here. Only
        the drain lock's holder drains, so any reservation on the gateway's channel is
        left over."""
        kept = 0
        for _ in range(DRAIN_ROUNDS):
            got = await self._call(
                portal,
                "event.offline.list",
                {
                    "filter": {">PROCESS_ID": ""},
                    "order": {"ID": "ASC"},
                    "auth_connector": CONNECTOR,
                },
            )
            records = [r for r in got if isinstance(r, Mapping)] if isinstance(got, list) else []
            if not records:
                break
            by_process: dict[Any, list[tuple[Any, NewEvent | None]]] = {}
            for record in records:
                by_process.setdefault(record.get("PROCESS_ID"), []).append(
                    (record, _offline_event(record))
                )
            for process_id, read in by_process.items():
                fresh = [new for _, new in read if new is not None]
                kept += len(await self._store.events.append(portal.id, fresh, time.time()))
                await self._settle(portal, process_id, read)
            log.warning(
                "portal=%s: %d offline events left reserved by an earlier drain were kept",
                portal.name,
                len(records),
            )
        if kept:
            self.arrived(portal.id)
        return kept

    async def _settle(
        self, portal: Portal, process_id: Any, read: list[tuple[Any, NewEvent | None]]
    ) -> None:
        """Clear the records kept; mark the ones that could not be read failed
        (``event.offline.error``), so that they stay at Bitrix24 for someone to look at."""
        bad = [_field(r, "MESSAGE_ID") for r, new in read if new is None]
        good = [_field(r, "ID") for r, new in read if new is not None]
        if bad:
            log.warning("portal=%s: %d offline events could not be read", portal.name, len(bad))
            await self._call(
                portal,
                "event.offline.error",
                {
                    "process_id": process_id,
                    "message_id": [m for m in bad if m is not None],
                    "auth_connector": CONNECTOR,
                },
            )
        if good:
            await self._call(
                portal,
                "event.offline.clear",
                {
                    "process_id": process_id,
                    "id": [i for i in good if i is not None],
                    "auth_connector": CONNECTOR,
                },
            )


def _field(record: Any, name: str) -> Any:
    return record.get(name) if isinstance(record, Mapping) else None


def _offline_event(record: Any) -> NewEvent | None:
    if not isinstance(record, Mapping):
        return None
    name = record.get("EVENT_NAME")
    if not isinstance(name, str) or not _EVENT_NAME.fullmatch(name.upper()):
        return None
    data = record.get("EVENT_DATA")
    return NewEvent(
        event=name.upper(),
        data=data if isinstance(data, Mapping) else {},
        ts=_timestamp(record.get("TIMESTAMP_X")),
        source="offline",
        origin=f"offline:{record.get('ID')}:{record.get('TIMESTAMP_X')}",
    )


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _refused(reason: str) -> EventRefused:
    log.warning("an event delivery was refused: %s", reason)
    return EventRefused()


def _verify(portal: Portal, auth: Mapping[str, Any]) -> None:
    """The delivery names this portal and, when the install event gave us the app's token,
    carries it (compared in constant time)."""
    member = auth.get("member_id")
    if portal.member_id is None or not isinstance(member, str) or member != portal.member_id:
        raise _refused(f"portal={portal.name}: the delivery's member_id is not the portal's")
    if portal.application_token is not None:
        token = auth.get("application_token")
        if not isinstance(token, str) or not hmac.compare_digest(
            token.encode(), portal.application_token.encode()
        ):
            raise _refused(
                f"portal={portal.name}: the delivery's application_token is not the app's"
            )
