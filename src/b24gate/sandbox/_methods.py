"""The REST methods the sandbox portal answers, and the registry that dispatches them.

System methods (``profile``, ``user.*``, ``app.info``, ``scope``, ``server.time``,
``methods``) are written out; entity methods are generated from :mod:`._entities`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import _errors as errors
from ._entities import ENTITIES, Condition, EntityTable

if TYPE_CHECKING:
    from ._portal import Portal

# Every scope the sandbox knows, as `scope?full=true` lists them.
ALL_SCOPES = ("crm", "catalog", "user", "user_brief", "user_basic", "department", "task", "im")


@dataclass(frozen=True)
class Caller:
    """Who is calling: an app's access token or an incoming webhook."""

    user_id: int
    scope: frozenset[str]
    client_id: str | None  # None for a webhook
    # An app's call's `auth_connector` (a batch's own, for all its commands): the offline
    # event channel it reads and writes as (docs/sandbox.md, "Events").
    auth_connector: str = ""

    @property
    def webhook(self) -> bool:
        return self.client_id is None


@dataclass
class Outcome:
    result: Any
    total: int | None = None
    next: int | None = None


Handler = Callable[["Portal", Caller, dict[str, Any]], Awaitable[Outcome]]


@dataclass(frozen=True)
class Method:
    name: str
    scope: str | None  # None: basic, every app and webhook has it
    handler: Handler


def param(params: Mapping[str, Any], name: str) -> Any:
    """Top-level parameter names are case-insensitive (docs' cURL examples send `ID`, `FIELDS`)."""
    if name in params:
        return params[name]
    lowered = name.lower()
    for key, value in params.items():
        if key.lower() == lowered:
            return value
    return None


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "y", "yes")
    return bool(value)


def _map(value: Any, what: str) -> dict[str, Any]:
    if value is None or value == "" or value == []:
        return {}
    if isinstance(value, dict):
        return value
    raise errors.RestError(400, "", f"Parameter '{what}' must be array.")


def _list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, dict):
        return [str(v) for v in value.values()]
    return [str(value)]


def _start(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _id(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise errors.invalid_id() from None
    if number <= 0:
        raise errors.invalid_id()
    return number


# -- system methods ---------------------------------------------------------------------


def _user(portal: Portal, user_id: int) -> dict[str, Any]:
    return dict(portal.users[user_id])


async def _profile(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
    user = portal.users[caller.user_id]
    keys = ("ID", "ADMIN", "NAME", "LAST_NAME", "PERSONAL_GENDER", "TIME_ZONE")
    return Outcome({k: user[k] for k in keys})


async def _user_current(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
    return Outcome(_user(portal, caller.user_id))


async def _user_get(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
    raw = params.get("FILTER", params.get("filter"))
    # user.get also takes filter fields at the top level (ID=1).
    flt = (
        _map(raw, "filter")
        if raw is not None
        else {
            k: v
            for k, v in params.items()
            if k.upper() == k and k not in ("SORT", "ORDER", "START")
        }
    )
    conditions = [Condition.parse(k, v) for k, v in flt.items()]
    users = [u for u in portal.users.values() if all(c.matches(u) for c in conditions)]
    start = max(_start(param(params, "start")), 0)
    page = users[start : start + 50]
    nxt = start + 50 if len(users) > start + 50 else None
    return Outcome(page, total=len(users), next=nxt)


async def _app_info(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
    if caller.client_id is None:
        raise errors.application_context_required()
    app = portal.oauth.apps[caller.client_id]
    return Outcome(
        {
            "ID": app.numeric_id,
            "CODE": app.client_id,
            "VERSION": 1,
            "STATUS": "L",
            "INSTALLED": app.installed,
            "PAYMENT_EXPIRED": "N",
            "DAYS": None,
            "LANGUAGE_ID": "ru",
            "LICENSE": "ru_project",
            "LICENSE_TYPE": "project",
            "LICENSE_FAMILY": "project",
        }
    )


async def _scope(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
    if _flag(param(params, "full")):
        return Outcome(list(ALL_SCOPES))
    return Outcome(sorted(caller.scope))


async def _server_time(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
    now = datetime.fromtimestamp(portal.clock.now(), UTC)
    return Outcome(now.strftime("%Y-%m-%dT%H:%M:%S+00:00"))


async def _methods(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
    scope = param(params, "scope")
    if scope is not None:
        wanted = str(scope) or None  # an empty scope lists only the basic methods
        return Outcome([m.name for m in REGISTRY.values() if m.scope == wanted])
    full = _flag(param(params, "full"))
    return Outcome(
        [m.name for m in REGISTRY.values() if full or m.scope is None or m.scope in caller.scope]
    )


# -- entity methods ---------------------------------------------------------------------


def _entity_methods(prefix: str) -> dict[str, Handler]:
    def table(portal: Portal) -> EntityTable:
        return portal.tables[prefix]

    async def add(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
        t = table(portal)
        fields = _map(param(params, "fields"), "fields")
        if t.spec.style == "catalog":
            if not fields:
                raise errors.RestError(
                    400, "100", "Parameter 'fields' is not specified or is empty"
                )
            missing = [f.name for f in t.spec.fields if f.required and f.name not in fields]
            if missing:
                raise errors.RestError(400, "0", "Required fields: " + ", ".join(missing))
            element = t.full(t.add(fields, caller.user_id))
            portal.writes.record(prefix, fields)
            return Outcome({"element": element})
        record = t.add(fields, caller.user_id)
        portal.writes.record(prefix, fields)
        new_id = int(record[t.spec.id_field])
        portal.events.changed(prefix, "add", new_id)
        return Outcome(new_id)

    async def get(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
        t = table(portal)
        record = t.get(_id(param(params, "id")))
        if t.spec.style == "catalog":
            if record is None:
                raise errors.RestError(400, "", "product does not exist.")
            return Outcome({"product": t.full(record)})
        if record is None:
            raise errors.not_found()
        return Outcome(t.full(record))

    async def update(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
        t = table(portal)
        record_id = _id(param(params, "id"))
        record = t.update(record_id, _map(param(params, "fields"), "fields"))
        if record is not None:
            portal.events.changed(prefix, "update", record_id)
        if t.spec.style == "catalog":
            if record is None:
                raise errors.RestError(
                    400, "0", "Product with the specified identifier does not exist"
                )
            return Outcome({"element": t.full(record)})
        if record is None:
            raise errors.not_found()
        return Outcome(True)

    async def delete(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
        t = table(portal)
        record_id = _id(param(params, "id"))
        if not t.delete(record_id):
            if t.spec.style == "catalog":
                raise errors.RestError(400, "", "product does not exist.")
            raise errors.not_found()
        portal.events.changed(prefix, "delete", record_id)
        return Outcome(True)

    async def fields(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
        t = table(portal)
        return Outcome(
            {
                f.name: {
                    "type": f.type,
                    "isRequired": f.required,
                    "isReadOnly": f.read_only,
                    "isImmutable": False,
                    "isMultiple": f.multiple,
                    "isDynamic": False,
                    "title": f.name,
                }
                for f in t.spec.fields
            }
        )

    async def list_(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
        t = table(portal)
        flt = _map(param(params, "filter"), "filter")
        order_map = _map(param(params, "order"), "order")
        select = _list(param(params, "select"))
        if t.spec.style == "catalog":
            # catalog-product-list.md: select must name id and iblockId, filter iblockId.
            if not {"id", "iblockId"} <= set(select):
                raise errors.RestError(400, "0", "Required select fields: id, iblockId")
            if "iblockId" not in flt:
                raise errors.RestError(400, "0", "Required filter fields: iblockId")
        conditions = t.conditions(flt)
        order = [(k, str(v).upper() == "DESC") for k, v in order_map.items()]
        page = t.list(conditions, order, select, _start(param(params, "start")))
        rows: Any = {"products": page.rows} if t.spec.style == "catalog" else page.rows
        return Outcome(rows, total=page.total, next=page.next)

    return {
        "add": add,
        "get": get,
        "update": update,
        "delete": delete,
        "fields": fields,
        "list": list_,
    }


# -- events (the work is in :mod:`._events`) -------------------------------------------


async def _event_bind(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
    return Outcome(portal.events.bind(caller, params))


async def _event_unbind(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
    return Outcome(portal.events.unbind(caller, params))


async def _event_get(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
    return Outcome(portal.events.listed(caller))


async def _offline_get(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
    return Outcome(portal.events.offline_get(caller, params))


async def _offline_clear(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
    return Outcome(portal.events.offline_clear(caller, params))


async def _offline_error(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
    return Outcome(portal.events.offline_error(caller, params))


async def _offline_list(portal: Portal, caller: Caller, params: dict[str, Any]) -> Outcome:
    rows, total, nxt = portal.events.offline_list(caller, params)
    return Outcome(rows, total=total, next=nxt)


def _registry() -> dict[str, Method]:
    methods = [
        Method("profile", None, _profile),
        Method("app.info", None, _app_info),
        Method("scope", None, _scope),
        Method("server.time", None, _server_time),
        Method("methods", None, _methods),
        Method("user.current", "user", _user_current),
        Method("user.get", "user", _user_get),
        Method("event.bind", None, _event_bind),
        Method("event.unbind", None, _event_unbind),
        Method("event.get", None, _event_get),
        Method("event.offline.get", None, _offline_get),
        Method("event.offline.clear", None, _offline_clear),
        Method("event.offline.error", None, _offline_error),
        Method("event.offline.list", None, _offline_list),
    ]
    for spec in ENTITIES:
        for verb, handler in _entity_methods(spec.prefix).items():
            methods.append(Method(f"{spec.prefix}.{verb}", spec.scope, handler))
    return {m.name.lower(): m for m in methods}


# Method names are case-insensitive (fast_bitrix24 lower-cases them before sending).
REGISTRY: dict[str, Method] = _registry()
