"""The control API under ``/_sandbox/``: chaos knobs, clock, seeding and counters for tests.

Sandbox only; documented in docs/sandbox.md as the contract tests, demo and benchmarks use.
Every endpoint takes and returns JSON; bad input gets 400 ``{"error", "error_description"}``.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from ._config import new_secret
from ._events import MAX_CHANGES, UI_USER
from ._faults import FAULT_KINDS, Fault
from ._latency import Latency
from ._oauth import App, OAuthError

if TYPE_CHECKING:
    from ._server import SandboxServer

Body = dict[str, Any]
Endpoint = Callable[["SandboxServer", Body], Awaitable[Body]]
_EVENT_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=5)
_LATENCY_KEYS = tuple(f.name for f in dataclasses.fields(Latency))


class BadRequest(Exception):
    pass


def _number(body: Body, key: str, default: float | None = None, minimum: float = 0) -> float:
    value = body.get(key, default)
    # JSON as Python reads it has NaN and Infinity too; neither is a usable setting.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < minimum
    ):
        raise BadRequest(f"'{key}' must be a number >= {minimum}")
    return float(value)


def _text(body: Body, key: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{key}' must be a non-empty string")
    return value


def _scope(body: Body, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = body.get("scope")
    if raw is None:
        return default
    if not isinstance(raw, str):
        raise BadRequest("'scope' must be a comma-separated string")
    return tuple(s.strip() for s in raw.split(",") if s.strip())


async def _state(sb: SandboxServer, body: Body) -> Body:
    p = sb.portal
    return {
        "base_url": sb.base_url,
        "domain": p.domain,
        "old_domains": sorted(p.old_domains),
        "member_id": p.member_id,
        "client_id": p.app.client_id,
        "scope": ",".join(p.app.scope),
        "installed": p.app.installed,
        "rate": p.bucket.rate,
        "burst": p.bucket.burst,
        "bucket_level": p.bucket.level(),
        "now": p.clock.now(),
        "frozen": p.clock.frozen,
        "pending_faults": len(p.faults),
    }


async def _counters(sb: SandboxServer, body: Body) -> Body:
    p = sb.portal
    rest = dataclasses.asdict(p.counters)
    return {
        "grants": dict(p.oauth.counters.grants),
        "failed_grants": p.oauth.counters.failed_grants,
        **rest,
    }


async def _reset_counters(sb: SandboxServer, body: Body) -> Body:
    in_flight = sb.portal.counters.in_flight
    sb.portal.counters = type(sb.portal.counters)(in_flight=in_flight, max_concurrent=in_flight)
    sb.portal.oauth.counters = type(sb.portal.oauth.counters)()
    return await _counters(sb, body)


def _no_keys(body: Body) -> None:
    # A key here is a mistake (say, an entity to clear one entity alone), not a wish to
    # ignore: refusing it keeps a test from reading counts it did not mean to.
    if body:
        raise BadRequest(f"this endpoint takes no parameters; got {sorted(body)}")


async def _writes(sb: SandboxServer, body: Body) -> Body:
    _no_keys(body)
    return sb.portal.writes.snapshot()


async def _reset_writes(sb: SandboxServer, body: Body) -> Body:
    _no_keys(body)
    sb.portal.writes.reset()
    return sb.portal.writes.snapshot()


async def _secrets(sb: SandboxServer, body: Body) -> Body:
    return {"secrets": list(sb.portal.oauth.issued)}


async def _received(sb: SandboxServer, body: Body) -> Body:
    return {"urls": list(sb.portal.received)}


async def _expire(sb: SandboxServer, body: Body) -> Body:
    return {"expired": sb.portal.oauth.expire_access_tokens()}


async def _revoke(sb: SandboxServer, body: Body) -> Body:
    error = OAuthError(
        int(_number(body, "status", 400, 100)),
        _text(body, "error", "invalid_grant"),
        _text(body, "error_description", "Invalid refresh token"),
    )
    return {"revoked": sb.portal.oauth.revoke_refresh_tokens(error)}


async def _faults(sb: SandboxServer, body: Body) -> Body:
    kind = body.get("kind")
    if kind not in FAULT_KINDS:
        raise BadRequest(f"'kind' must be one of {', '.join(FAULT_KINDS)}")
    target = body.get("target", "rest")
    if target not in ("rest", "oauth", "any"):
        raise BadRequest("'target' must be rest, oauth or any")
    count = int(_number(body, "count", 1, 1))
    sb.portal.faults.inject(Fault(kind, target, _number(body, "delay", 1.0)), count)
    return {"pending": len(sb.portal.faults)}


async def _clear_faults(sb: SandboxServer, body: Body) -> Body:
    sb.portal.faults.clear()
    return {"pending": 0}


async def _move(sb: SandboxServer, body: Body) -> Body:
    p = sb.portal
    default = (
        p.domain.replace("127.0.0.1", "localhost")
        if "127.0.0.1" in p.domain
        else (p.domain.replace("localhost", "127.0.0.1"))
    )
    p.move(_text(body, "domain", default))
    return {"domain": p.domain, "old_domains": sorted(p.old_domains)}


async def _seed(sb: SandboxServer, body: Body) -> Body:
    entity = _text(body, "entity", "crm.deal")
    table = sb.portal.tables.get(entity)
    if table is None:
        raise BadRequest(f"unknown entity {entity!r}; known: {', '.join(sb.portal.tables)}")
    table.seed(int(_number(body, "count", None, 1)))
    return {"entity": entity, "count": len(table.records), "last_id": table.next_id - 1}


async def _clock(sb: SandboxServer, body: Body) -> Body:
    clock = sb.portal.clock
    if body.get("freeze") is True:
        clock.freeze()
    if body.get("unfreeze") is True:
        clock.unfreeze()
    if "advance" in body:
        clock.advance(_number(body, "advance"))
    return {"now": clock.now(), "frozen": clock.frozen}


async def _limits(sb: SandboxServer, body: Body) -> Body:
    p = sb.portal
    if "rate" in body:
        p.bucket.rate = _number(body, "rate")
    if "burst" in body:
        p.bucket.burst = int(_number(body, "burst", None, 1))
    if "operating_limit" in body:
        p.budget.limit = _number(body, "operating_limit")
    if "request_time_limit" in body:
        p.request_time_limit = _number(body, "request_time_limit")
    for flag in ("require_https", "auto_approve"):
        if flag in body:
            if not isinstance(body[flag], bool):
                raise BadRequest(f"'{flag}' must be true or false")
            setattr(p, flag, body[flag])
    if body.get("reset") is True:
        p.bucket.reset()
        p.budget.reset()
    return {
        "rate": p.bucket.rate,
        "burst": p.bucket.burst,
        "operating_limit": p.budget.limit,
        "request_time_limit": p.request_time_limit,
        "require_https": p.require_https,
        "auto_approve": p.auto_approve,
    }


async def _latency(sb: SandboxServer, body: Body) -> Body:
    """Read (GET, or POST with ``{}``) or change the latency model; a body with a bad
    value changes nothing."""
    latency = sb.portal.latency
    unknown = set(body) - set(_LATENCY_KEYS)
    if unknown:
        raise BadRequest(f"unknown keys {sorted(unknown)}; known: {', '.join(_LATENCY_KEYS)}")
    changes = {key: _number(body, key) for key in _LATENCY_KEYS if key in body}
    for key, seconds in changes.items():
        setattr(latency, key, seconds)
    return dataclasses.asdict(latency)


async def _method_cost(sb: SandboxServer, body: Body) -> Body:
    method = _text(body, "method").lower()
    sb.portal.method_costs[method] = _number(body, "seconds")
    return {"method": method, "seconds": sb.portal.method_costs[method]}


async def _apps(sb: SandboxServer, body: Body) -> Body:
    client_id = _text(body, "client_id", f"local.{new_secret(14)}")
    if client_id in sb.portal.oauth.apps:
        raise BadRequest(f"an app {client_id!r} exists already")
    redirect = body.get("redirect_uri")
    if redirect is not None and not isinstance(redirect, str):
        raise BadRequest("'redirect_uri' must be a string")
    app = sb.portal.oauth.register(
        App(client_id, new_secret(50), _scope(body, sb.portal.app.scope), redirect)
    )
    return {"client_id": app.client_id, "client_secret": app.client_secret}


async def _webhooks(sb: SandboxServer, body: Body) -> Body:
    user_id = int(_number(body, "user_id", 1, 1))
    if user_id not in sb.portal.users:
        raise BadRequest(f"no user {user_id}")
    hook = sb.portal.add_webhook(user_id, frozenset(_scope(body, sb.portal.app.scope)))
    return {"url": f"{sb.base_url}/rest/{hook.user_id}/{hook.code}/"}


def _app_from(sb: SandboxServer, body: Body) -> App:
    client_id = _text(body, "client_id", sb.portal.app.client_id)
    app = sb.portal.oauth.apps.get(client_id)
    if app is None:
        raise BadRequest(f"no app {client_id!r}")
    return app


async def _post_event(sb: SandboxServer, url: str, form: Body) -> Body:
    posted = await sb.portal.events.post(url, form, _EVENT_TIMEOUT)
    if posted.status is None:
        # "No second chances": Bitrix24 does not retry a failed delivery.
        return {"status": None, "error": posted.error}
    return {"status": posted.status, "body": posted.body}


async def _install(sb: SandboxServer, body: Body) -> Body:
    """(Re)install an app and deliver its ONAPPINSTALL-shaped form to ``url``.

    The same form serves the "uses only API" installation callback (inferred: the docs
    show the callback's fields as ONAPPINSTALL's, with ``event_handler_id``).
    """
    app = _app_from(sb, body)
    overrides = body.get("auth", {})
    if not isinstance(overrides, dict):
        raise BadRequest("'auth' must be an object of fields to override")
    app.installed = True
    grant = sb.portal.oauth.new_grant(app, user_id=1)
    access, refresh, expires = sb.portal.oauth.tokens_for(grant)
    auth = {
        "access_token": access,
        "expires": str(int(expires)),
        "expires_in": str(sb.config.access_ttl),
        "scope": ",".join(app.scope),
        **sb.portal.events.auth_base(app),
        # ONAPPINSTALL only: ONAPPUNINSTALL's auth has no status (on-app-uninstall.md).
        "status": "L",
        "user_id": "1",
        "refresh_token": refresh,
        **overrides,
    }
    form = {
        "event": "ONAPPINSTALL",
        "event_handler_id": "1",
        "data": {"VERSION": "1", "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": "ru"},
        "ts": str(int(sb.portal.clock.now())),
        "auth": auth,
    }
    delivered = await _post_event(sb, _text(body, "url"), form)
    return {"delivered": delivered, "client_id": app.client_id}


async def _uninstall(sb: SandboxServer, body: Body) -> Body:
    app = _app_from(sb, body)
    overrides = body.get("auth", {})
    if not isinstance(overrides, dict):
        raise BadRequest("'auth' must be an object of fields to override")
    sb.portal.oauth.uninstall(app)
    sb.portal.events.forget_app(app.client_id)
    form = {
        "event": "ONAPPUNINSTALL",
        "data": {"LANGUAGE_ID": "ru", "CLEAN": str(int(_number(body, "clean", 0)))},
        "ts": str(int(sb.portal.clock.now())),
        "auth": {**sb.portal.events.auth_base(app), **overrides},
    }
    delivered = await _post_event(sb, _text(body, "url"), form)
    return {"delivered": delivered, "client_id": app.client_id}


async def _events(sb: SandboxServer, body: Body) -> Body:
    _no_keys(body)
    return sb.portal.events.snapshot()


async def _reset_events(sb: SandboxServer, body: Body) -> Body:
    _no_keys(body)
    sb.portal.events.log.clear()
    return sb.portal.events.snapshot()


async def _event_settings(sb: SandboxServer, body: Body) -> Body:
    """Read (``{}``) or change the delivery timeout; a bad value changes nothing."""
    unknown = set(body) - {"timeout"}
    if unknown:
        raise BadRequest(f"unknown keys {sorted(unknown)}; known: timeout")
    hub = sb.portal.events
    if "timeout" in body:
        hub.timeout = _number(body, "timeout", minimum=0.001)
    return {"timeout": hub.timeout}


_CHANGE_KEYS = frozenset({"entity", "action", "id", "fields", "count"})


def _change_targets(sb: SandboxServer, prefix: str, body: Body) -> list[int]:
    """The records an update or delete changes: ``id`` alone, or with ``count`` the first
    ``count`` records from ``id`` on (from the first record when no ``id``)."""
    table = sb.portal.tables[prefix]
    if "count" not in body:
        record_id = int(_number(body, "id", None, 1))
        if table.get(record_id) is None:
            raise BadRequest(f"no {prefix} record {record_id}")
        return [record_id]
    count = int(_number(body, "count", None, 1))
    first = int(_number(body, "id", 1, 1))
    start = bisect.bisect_left(table.ids, first)
    return table.ids[start : start + count]


async def _changes(sb: SandboxServer, body: Body) -> Body:
    """Changes a person makes in the portal's pages (user 1, no ``auth_connector``)."""
    unknown = set(body) - _CHANGE_KEYS
    if unknown:
        raise BadRequest(
            f"unknown keys {sorted(unknown)}; known: {', '.join(sorted(_CHANGE_KEYS))}"
        )
    entity = _text(body, "entity")
    prefix = entity if entity.startswith("crm.") else f"crm.{entity}"
    table = sb.portal.tables.get(prefix)
    if table is None or table.spec.style != "crm":
        known = [
            p.removeprefix("crm.") for p, t in sb.portal.tables.items() if t.spec.style == "crm"
        ]
        raise BadRequest(f"unknown entity {entity!r}; known: {', '.join(known)}")
    action = body.get("action")
    if action not in ("add", "update", "delete"):
        raise BadRequest("'action' must be add, update or delete")
    count = int(_number(body, "count", 1, 1))
    if count > MAX_CHANGES:
        raise BadRequest(f"'count' must be at most {MAX_CHANGES}")
    fields = body.get("fields", {})
    if not isinstance(fields, dict):
        raise BadRequest("'fields' must be an object")
    hub = sb.portal.events
    ids: list[int] = []
    with hub.hit(None):
        if action == "add":
            for _ in range(count):
                ids.append(int(table.add(fields, UI_USER)["ID"]))
                hub.changed(prefix, "add", ids[-1])
        else:
            for record_id in _change_targets(sb, prefix, body):
                if action == "update":
                    table.update(record_id, fields)
                else:
                    table.delete(record_id)
                hub.changed(prefix, action, record_id)
                ids.append(record_id)
    return {"entity": entity, "action": action, "ids": ids}


_ROUTES: dict[tuple[str, str], Endpoint] = {
    ("GET", "state"): _state,
    ("GET", "counters"): _counters,
    ("POST", "counters/reset"): _reset_counters,
    ("GET", "writes"): _writes,
    ("POST", "writes/reset"): _reset_writes,
    ("GET", "secrets"): _secrets,
    ("GET", "received"): _received,
    ("POST", "expire-access-tokens"): _expire,
    ("POST", "revoke-refresh-tokens"): _revoke,
    ("POST", "faults"): _faults,
    ("DELETE", "faults"): _clear_faults,
    ("POST", "move"): _move,
    ("POST", "seed"): _seed,
    ("POST", "clock"): _clock,
    ("POST", "limits"): _limits,
    ("GET", "latency"): _latency,
    ("POST", "latency"): _latency,
    ("POST", "method-cost"): _method_cost,
    ("POST", "apps"): _apps,
    ("POST", "webhooks"): _webhooks,
    ("POST", "events/install"): _install,
    ("POST", "events/uninstall"): _uninstall,
    ("GET", "events"): _events,
    ("POST", "events/reset"): _reset_events,
    ("POST", "events/settings"): _event_settings,
    ("POST", "changes"): _changes,
}


def add_control_routes(app: web.Application, sb: SandboxServer) -> None:
    def bind(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                raw = await request.read()
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise BadRequest("the body must be a JSON object")
                return web.json_response(await endpoint(sb, body))
            except (BadRequest, ValueError) as exc:
                return web.json_response(
                    {"error": "invalid_request", "error_description": str(exc)}, status=400
                )

        return handle

    for (verb, path), endpoint in _ROUTES.items():
        app.router.add_route(verb, f"/_sandbox/{path}", bind(endpoint))
