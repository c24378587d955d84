"""Bitrix24's REST events in the sandbox: the bindings (``event.bind``, ``event.unbind``,
``event.get``, ``event.offline.*``), what a change of a CRM record fires, the delivery of
online events to their handlers and the offline queues (:mod:`._offline`).

Read from Bitrix24's rest module in the public mirror ``avshatalov48/bitrix-core-business``
(``Bitrix\\Rest\\Api\\Event`` in ``modules/rest/lib/api/event.php``, ``EventTable``,
``Event\\Sender``, ``Event\\ProviderOffline``, ``Event\\Callback``, ``HandlerHelper``) and the
docs in ``bitrix24/b24restdocs`` (``api-reference/events/*``); docs/sandbox.md, "Events",
says where they are silent and what the sandbox does then.

A change does not fire at once: as Bitrix24 sends its events and writes its offline records
from a background job when the hit ends, what one REST request (a ``batch`` is one) or one
``POST /_sandbox/changes`` changed fires when it ends (:meth:`EventHub.hit`). Online
deliveries then leave from one background task per handler, in order, once each.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from . import _errors as errors
from ._batch import parse_url
from ._methods import Caller, param
from ._offline import (
    BY_ID,
    GET_FIELDS,
    LIST_FIELDS,
    LIST_LIMIT,
    OLDEST_FIRST,
    Channel,
    OfflineQueue,
    read_filter,
    read_order,
)
from ._params import build_php_query

if TYPE_CHECKING:
    from ._oauth import App
    from ._portal import Portal

# A handler that has not answered within this many seconds loses the event (settable with
# POST /_sandbox/events/settings). Bitrix24 publishes no figure; 10 s is the sandbox's choice.
DEFAULT_DELIVERY_TIMEOUT = 10.0
# POST /_sandbox/changes makes at most this many changes at once.
MAX_CHANGES = 100_000
# The sandbox's user 1 stands for a person working in the portal's own pages.
UI_USER = 1
OFFLINE_SIGNAL = "ONOFFLINEEVENT"
# EventOfflineTable::OFFLINE_EVENT_DEFAULT_TIMEOUT: ONOFFLINEEVENT's minTimeout when unset.
DEFAULT_MIN_TIMEOUT = 1
DELIVERY_LOG_SIZE = 100_000
# A cached access token is sent with events while it has more than this many seconds left.
_TOKEN_MARGIN = 60.0
_LEADING_INT = re.compile(r"\s*([+-]?[0-9]+)")

# CRM entity events as the crm module names them (api-reference/crm/*/events). Leads have
# none of the sandbox's records, but binding their events works as on a portal.
_CRM_EVENTS = {
    "crm.deal": "ONCRMDEAL",
    "crm.contact": "ONCRMCONTACT",
    "crm.company": "ONCRMCOMPANY",
    "crm.lead": "ONCRMLEAD",
}
_VERBS = {"add": "ADD", "update": "UPDATE", "delete": "DELETE"}
# The events event.bind finds, by the scope that lists them; "" is the global scope
# (CRestProvider's own events and onOfflineEvent). The app's events are accepted and
# listed, though the sandbox sends them only through the control API's install/uninstall.
_EVENTS: dict[str, frozenset[str]] = {
    "": frozenset(
        {
            "ONAPPINSTALL",
            "ONAPPUNINSTALL",
            "ONAPPUPDATE",
            "ONAPPPAYMENT",
            "ONAPPTEST",
            "ONAPPMETHODCONFIRM",
            "ONSUBSCRIPTIONRENEW",
            OFFLINE_SIGNAL,
        }
    ),
    "crm": frozenset(stem + verb for stem in _CRM_EVENTS.values() for verb in _VERBS.values()),
}


def event_name(prefix: str, action: str) -> str | None:
    """The event a change fires (``crm.deal``, ``update`` → ``ONCRMDEALUPDATE``), if any."""
    stem = _CRM_EVENTS.get(prefix)
    return None if stem is None else stem + _VERBS[action]


def php_int(value: Any) -> int:
    """PHP's ``intval``: the leading integer of a string, 0 when there is none."""
    if isinstance(value, bool | int | float):
        return int(value)
    found = _LEADING_INT.match(value) if isinstance(value, str) else None
    return int(found.group(1)) if found else 0


def _text(value: Any) -> str:
    return str(value) if isinstance(value, str | int | float) else ""


def _check_handler(url: str) -> None:
    """``HandlerHelper::checkCallback``: an http(s) URL whose host has a dot."""
    parts = parse_url(url) or {}
    host = str(parts.get("host", ""))
    if host.find(".") <= 0:
        raise errors.RestError(400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL")
    if parts.get("scheme") not in ("http", "https"):
        raise errors.RestError(400, "ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol")


@dataclass(frozen=True)
class Binding:
    """One row of ``b_rest_event``: an online handler, or an offline binding (no handler)."""

    id: int
    client_id: str
    event: str
    handler: str
    user_id: int  # auth_type; 0: the user whose change fired the event
    connector_id: str
    options: Mapping[str, int] = field(default_factory=dict)

    @property
    def offline(self) -> bool:
        return self.handler == ""

    def listed(self) -> dict[str, Any]:
        """As ``event.get`` lists it."""
        if self.offline:
            return {"event": self.event, "connector_id": self.connector_id, "offline": 1}
        return {
            "event": self.event,
            "handler": self.handler,
            "auth_type": str(self.user_id),
            "offline": 0,
        }


@dataclass(frozen=True)
class Posted:
    """What became of one POST to a handler: its status, or why there was none."""

    status: int | None
    body: str = ""
    error: str | None = None
    timed_out: bool = False

    @property
    def outcome(self) -> str:
        if self.status is not None and 200 <= self.status < 300:
            return "delivered"
        return "timeout" if self.timed_out else "failed"


@dataclass(frozen=True)
class _Delivery:
    event: str
    record_id: int | None
    form: dict[str, Any]


@dataclass
class _Hit:
    """What one request or one control-API change set changed, and who made the changes."""

    hub: EventHub
    client_id: str | None  # None: a webhook or the portal's own pages
    connector: str
    user_id: int
    changes: list[tuple[str, int]] = field(default_factory=list)


_HIT: ContextVar[_Hit | None] = ContextVar("sandbox_event_hit", default=None)


class EventHub:
    """The portal's event bindings, offline queues and deliveries."""

    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self.bindings: dict[int, Binding] = {}
        self.queue = OfflineQueue()
        self.timeout = DEFAULT_DELIVERY_TIMEOUT
        # Every delivery attempt, oldest first (GET /_sandbox/events).
        self.log: deque[dict[str, Any]] = deque(maxlen=DELIVERY_LOG_SIZE)
        self.server_endpoint = ""  # known once the server listens
        self._next_id = 1
        self._signalled: dict[int, float] = {}  # ONOFFLINEEVENT binding → last signal
        self._tokens: dict[tuple[str, int], str] = {}
        self._outboxes: dict[str, tuple[asyncio.Queue[_Delivery], asyncio.Task[None]]] = {}
        self._session: aiohttp.ClientSession | None = None

    # -- who may call -----------------------------------------------------------------

    def _app(self, caller: Caller) -> App:
        if caller.client_id is None:
            raise errors.wrong_auth_type()
        return self.portal.oauth.apps[caller.client_id]

    def _admin(self, caller: Caller) -> bool:
        return bool(self.portal.users[caller.user_id]["ADMIN"])

    def _channel(self, caller: Caller) -> Channel:
        """The offline queue a call reads: its app's, on its ``auth_connector``."""
        app = self._app(caller)
        if not self._admin(caller):
            raise errors.access_denied()
        return app.client_id, caller.auth_connector

    @staticmethod
    def _offline_type(params: Mapping[str, Any]) -> bool:
        event_type = _text(param(params, "event_type")).lower()
        if event_type not in ("", "online", "offline"):
            raise errors.ArgumentError("Value must be one of {online|offline}", "EVENT_TYPE")
        return event_type == "offline"

    # -- event.bind, event.unbind, event.get ------------------------------------------

    def bind(self, caller: Caller, params: Mapping[str, Any]) -> bool:
        app = self._app(caller)
        admin = self._admin(caller)
        name = _text(param(params, "event")).upper()
        handler = _text(param(params, "handler"))
        user_id = php_int(param(params, "auth_type"))
        if user_id > 0 and not admin and user_id != caller.user_id:
            raise errors.access_denied(
                "Event binding with AUTH_TYPE requires administrator access rights"
            )
        if user_id <= 0 and not admin:
            user_id = caller.user_id
        if not name:
            raise errors.argument_null("EVENT")
        offline = self._offline_type(params)
        if offline:
            if not admin:
                raise errors.access_denied(
                    "Offline events binding requires administrator access rights"
                )
            handler, user_id = "", 0
        elif not handler:
            raise errors.argument_null("HANDLER")
        if handler:
            _check_handler(handler)
        scopes = {"", *caller.scope}
        if not any(name in _EVENTS.get(scope, ()) for scope in scopes):
            raise errors.RestError(400, "ERROR_EVENT_NOT_FOUND", "Event not found")
        if offline and name == OFFLINE_SIGNAL:
            raise errors.RestError(
                400, "ERROR_ARGUMENT", "Offline event cannot be registered for this event."
            )
        options = param(params, "options")
        kept: dict[str, int] = {}
        if name == OFFLINE_SIGNAL and isinstance(options, Mapping) and "minTimeout" in options:
            kept["minTimeout"] = php_int(options["minTimeout"])
        binding = Binding(
            self._next_id, app.client_id, name, handler, user_id, caller.auth_connector, kept
        )
        if any(
            (b.client_id, b.event, b.handler, b.user_id, b.connector_id)
            == (binding.client_id, name, handler, user_id, binding.connector_id)
            for b in self.bindings.values()
        ):
            raise errors.RestError(
                400, "ERROR_CORE", "Unable to set event handler: Handler already binded"
            )
        self.bindings[binding.id] = binding
        self._next_id += 1
        return True

    def unbind(self, caller: Caller, params: Mapping[str, Any]) -> dict[str, int]:
        app = self._app(caller)
        admin = self._admin(caller)
        name = _text(param(params, "event")).upper()
        handler = _text(param(params, "handler"))
        if not name:
            raise errors.argument_null("EVENT")
        offline = self._offline_type(params)
        if offline:
            if not admin:
                raise errors.access_denied(
                    "Offline events unbinding requires administrator access rights"
                )
            handler = ""
        elif not handler:
            raise errors.argument_null("HANDLER")
        user_id: int | None = None
        auth_type = param(params, "auth_type")
        if not offline and auth_type is not None:
            if not admin:
                raise errors.access_denied(
                    "Event unbinding with AUTH_TYPE requires administrator access rights"
                )
            user_id = php_int(auth_type)
        elif not offline and not admin:
            user_id = caller.user_id
        gone = [
            b.id
            for b in self.bindings.values()
            if (b.client_id, b.event, b.handler) == (app.client_id, name, handler)
            and (not offline or b.connector_id == caller.auth_connector)
            and user_id in (None, b.user_id)
        ]
        for binding_id in gone:
            del self.bindings[binding_id]
        return {"count": len(gone)}

    def listed(self, caller: Caller) -> list[dict[str, Any]]:
        app = self._app(caller)
        admin = self._admin(caller)
        return [
            b.listed()
            for b in self.bindings.values()
            if b.client_id == app.client_id and (admin or b.user_id == caller.user_id)
        ]

    def forget_app(self, client_id: str) -> None:
        """An uninstalled application's handlers are removed (event-bind.md)."""
        for binding_id in [i for i, b in self.bindings.items() if b.client_id == client_id]:
            del self.bindings[binding_id]

    # -- event.offline.* --------------------------------------------------------------

    def offline_get(self, caller: Caller, params: Mapping[str, Any]) -> dict[str, Any]:
        channel = self._channel(caller)
        raw_clear = param(params, "clear")
        clear = 1 if raw_clear is None else php_int(raw_clear)
        raw_process = param(params, "process_id")
        process_id = None if raw_process is None else _text(raw_process).strip()
        raw_limit = param(params, "limit")
        limit = LIST_LIMIT if raw_limit is None else php_int(raw_limit)
        error = php_int(param(params, "error")) == 1
        if limit <= 0:
            raise errors.ArgumentError("Value must be positive integer", "LIMIT")
        conditions = read_filter(param(params, "filter"), GET_FIELDS)
        order = read_order(param(params, "order"), GET_FIELDS, OLDEST_FIRST)
        self.queue.expire(self.portal.clock.now())
        # A process_id comes back when the records stay (clear=0) or when one was given.
        answered = not clear or process_id is not None
        if process_id is None:
            process_id = self.queue.reserve(channel, error, conditions, order, limit)
        records = self.queue.select(channel, process_id, error, conditions, order, limit)
        if clear and records:
            self.queue.clear(channel, process_id)
        return {
            "process_id": process_id if answered else None,
            "events": [r.row() for r in records],
        }

    def _process_id(self, params: Mapping[str, Any]) -> str:
        raw = param(params, "process_id")
        if raw is None:
            raise errors.argument_null("PROCESS_ID")
        return _text(raw).strip()

    def offline_clear(self, caller: Caller, params: Mapping[str, Any]) -> bool:
        channel = self._channel(caller)
        process_id = self._process_id(params)
        message_ids = param(params, "message_id")
        ids = param(params, "id")
        # Api\Event::eventOfflineClear reads message_id first, so it wins over id (the docs
        # say the other way round); an empty list clears the whole process, as there.
        if message_ids is not None:
            if not isinstance(message_ids, list | dict):
                raise errors.ArgumentError("Value must be array of MESSAGE_ID values", "message_id")
            values = [_text(v).strip() for v in _items(message_ids)]
            if any(len(v) != 32 for v in values):
                # Sic: the rest module names the argument so here.
                raise errors.ArgumentError(
                    "Value must be array of MESSAGE_ID values", "messsage_id"
                )
            self.queue.clear(channel, process_id, message_ids=values or None)
            return True
        numbers = None
        if ids is not None:
            if not isinstance(ids, list | dict):
                raise errors.ArgumentError("Value must be array of integers", "id")
            numbers = [php_int(v) for v in _items(ids)]
            if any(n <= 0 for n in numbers):
                raise errors.ArgumentError("Value must be array of integers", "id")
        self.queue.clear(channel, process_id, ids=numbers or None)
        return True

    def offline_error(self, caller: Caller, params: Mapping[str, Any]) -> bool:
        channel = self._channel(caller)
        process_id = self._process_id(params)
        message_ids = param(params, "message_id")
        if not isinstance(message_ids, list | dict):
            raise errors.ArgumentError("Value must be array of MESSAGE_ID values", "message_id")
        values = [_text(v) for v in _items(message_ids)]
        if values:
            self.queue.mark_error(channel, process_id, values)
        return True

    def offline_list(
        self, caller: Caller, params: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], int, int | None]:
        """One page of the channel's records, read without reserving: rows, total, next."""
        channel = self._channel(caller)
        conditions = read_filter(param(params, "filter"), LIST_FIELDS)
        order = read_order(param(params, "order"), LIST_FIELDS, BY_ID)
        start = php_int(param(params, "start"))
        self.queue.expire(self.portal.clock.now())
        records, total = self.queue.page(channel, conditions, order, start)
        shown = max(start, 0) + len(records)
        return [r.row(listed=True) for r in records], total, shown if shown < total else None

    # -- changes ----------------------------------------------------------------------

    @contextlib.contextmanager
    def hit(self, caller: Caller | None) -> Iterator[None]:
        """One hit: a REST request by ``caller``, or (``None``) a change set made in the
        portal's own pages by user 1. What it changed fires when it ends, even on error."""
        current = (
            _Hit(self, caller.client_id, caller.auth_connector, caller.user_id)
            if caller is not None
            else _Hit(self, None, "", UI_USER)
        )
        token = _HIT.set(current)
        try:
            yield
        finally:
            _HIT.reset(token)
            self._commit(current)

    def changed(self, prefix: str, action: str, record_id: int) -> None:
        """A record of ``prefix`` was added, updated or deleted (``action``)."""
        name = event_name(prefix, action)
        if name is None:
            return
        current = _HIT.get()
        if current is None or current.hub is not self:
            current = _Hit(self, None, "", UI_USER)
            current.changes.append((name, record_id))
            self._commit(current)
            return
        current.changes.append((name, record_id))

    def _commit(self, hit: _Hit) -> None:
        """``Event\\Callback``, ``Sender::call`` and ``ProviderOffline::finalize`` for one hit."""
        if not hit.changes:
            return
        apps = self.portal.oauth.apps
        by_event: dict[str, list[Binding]] = {}
        for b in self.bindings.values():
            if apps[b.client_id].installed:
                by_event.setdefault(b.event, []).append(b)
        now = self.portal.clock.now()
        queued: set[str] = set()
        for name, record_id in hit.changes:
            data = {"FIELDS": {"ID": record_id}}
            for b in by_event.get(name, ()):
                user_id = b.user_id or hit.user_id
                if not b.offline:
                    self._send(b, data, record_id, user_id, now)
                elif (hit.client_id, hit.connector) != (b.client_id, b.connector_id):
                    # The app's own write on this connector stays out of this queue.
                    additional = {"user_id": user_id}
                    self.queue.put((b.client_id, b.connector_id), name, data, additional, now)
                    queued.add(b.client_id)
        for b in by_event.get(OFFLINE_SIGNAL, ()):
            if b.client_id in queued and self._signal_due(b, now):
                # prepareOfflineEvent returns no data: the form carries none.
                self._send(b, None, None, b.user_id or hit.user_id, now, refresh=True)

    def _signal_due(self, binding: Binding, now: float) -> bool:
        """``EventOfflineTable::checkSendTime``: one signal per ``minTimeout`` seconds, the
        rest dropped (not delayed); 0 or less: one per hit."""
        timeout = binding.options.get("minTimeout", DEFAULT_MIN_TIMEOUT)
        if timeout > 0:
            last = self._signalled.get(binding.id)
            if last is not None and now - last < timeout:
                return False
            self._signalled[binding.id] = now
        return True

    # -- delivery ---------------------------------------------------------------------

    def auth_base(self, app: App) -> dict[str, Any]:
        """The portal's part of an event's ``auth``, the same in every event."""
        portal = self.portal
        return {
            "domain": portal.domain,
            "server_endpoint": self.server_endpoint,
            "client_endpoint": portal.client_endpoint(portal.config.scheme),
            "member_id": portal.member_id,
            "application_token": app.application_token,
        }

    def _access(self, app: App, user_id: int, now: float) -> tuple[str, float]:
        """An access token of ``user_id`` for ``app``: the last one sent while it lasts
        (inferred: the docs do not say whether each event gets a new one)."""
        oauth = self.portal.oauth
        cached = self._tokens.get((app.client_id, user_id))
        grant = oauth.access.get(cached) if cached else None
        if cached and grant is not None and grant.expires_at - now > _TOKEN_MARGIN:
            return cached, grant.expires_at
        access, _, expires = oauth.tokens_for(oauth.new_grant(app, user_id))
        self._tokens[(app.client_id, user_id)] = access
        return access, expires

    def _auth(self, app: App, user_id: int, now: float, refresh: bool) -> dict[str, Any]:
        oauth = self.portal.oauth
        refresh_token = None
        if refresh:  # "sendRefreshToken": a new pair, as ONAPPINSTALL gets
            access, refresh_token, expires = oauth.tokens_for(oauth.new_grant(app, user_id))
        else:
            access, expires = self._access(app, user_id, now)
        auth = {
            "access_token": access,
            "expires": str(int(expires)),
            "expires_in": str(max(0, int(expires - now))),
            "scope": ",".join(app.scope),
            **self.auth_base(app),
            "status": "L",
            "user_id": str(user_id),
        }
        if refresh_token is not None:
            auth["refresh_token"] = refresh_token
        return auth

    def _send(
        self,
        binding: Binding,
        data: dict[str, Any] | None,
        record_id: int | None,
        user_id: int,
        now: float,
        refresh: bool = False,
    ) -> None:
        app = self.portal.oauth.apps[binding.client_id]
        form: dict[str, Any] = {"event": binding.event, "event_handler_id": str(binding.id)}
        if data is not None:
            form["data"] = data
        form["ts"] = str(int(now))
        form["auth"] = self._auth(app, user_id, now, refresh)
        self._outbox(binding.handler).put_nowait(_Delivery(binding.event, record_id, form))

    def _outbox(self, url: str) -> asyncio.Queue[_Delivery]:
        box = self._outboxes.get(url)
        if box is not None and not box[1].done():
            return box[0]
        queue: asyncio.Queue[_Delivery] = asyncio.Queue()
        task = asyncio.get_running_loop().create_task(self._drain(url, queue))
        self._outboxes[url] = (queue, task)
        return queue

    async def _drain(self, url: str, queue: asyncio.Queue[_Delivery]) -> None:
        """One handler's deliveries, in order, each tried once ("no second chances")."""
        while True:
            delivery = await queue.get()
            at = self.portal.clock.now()
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            posted = await self.post(url, delivery.form, timeout)
            self.log.append(
                {
                    "event": delivery.event,
                    "handler": url,
                    "id": delivery.record_id,
                    "status": posted.outcome,
                    "http_status": posted.status,
                    "at": at,
                }
            )

    async def post(
        self, url: str, form: Mapping[str, Any], limits: aiohttp.ClientTimeout
    ) -> Posted:
        """POST ``form`` as Bitrix24 sends events: form-encoded with PHP brackets."""
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession()
        try:
            async with session.post(
                url,
                data=build_php_query(form),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=limits,
            ) as response:
                body = await response.read()
                return Posted(response.status, body.decode("utf-8", "replace"))
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors
            return Posted(None, error=type(exc).__name__, timed_out=True)
        except (aiohttp.ClientError, ValueError) as exc:
            return Posted(None, error=type(exc).__name__)

    async def close(self) -> None:
        """Stop the deliveries (those not sent yet are lost) and close the HTTP session."""
        tasks = [task for _, task in self._outboxes.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._outboxes.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the control API --------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Every delivery attempt, and the records waiting per channel
        (``"<client_id>:<auth_connector>"``, bound channels included at 0)."""
        waiting = {
            f"{b.client_id}:{b.connector_id}": 0 for b in self.bindings.values() if b.offline
        }
        waiting.update({f"{c}:{k}": n for (c, k), n in self.queue.waiting().items()})
        return {"deliveries": list(self.log), "offline": dict(sorted(waiting.items()))}


def _items(value: list[Any] | dict[str, Any]) -> list[Any]:
    return list(value.values()) if isinstance(value, dict) else list(value)
