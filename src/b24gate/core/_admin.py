"""Portal and client administration: the rules a portal or a client key must follow, and
the changes an administrator makes. The command line only parses and prints; an admin
page or API would call the same functions.

The builders (:func:`oauth_portal`, :func:`webhook_portal`, :func:`new_client`, …) check
values without touching the store, so a caller can refuse bad input before opening
anything; the ``async`` functions check again and then write. Every refusal is an error
of the one tree: :class:`~b24gate.errors.InvalidSetting` naming the ``field`` at fault,
:class:`~b24gate.errors.Conflict` for a taken name or domain,
:class:`~b24gate.errors.UnknownPortal` and :class:`~b24gate.errors.UnknownClient`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypedDict, cast

from ..bitrix import (
    PLANS,
    WebhookAddress,
    check_burst,
    check_rate,
    oauth_address,
    portal_address,
    webhook_address,
)
from ..errors import Conflict, InvalidSetting, RequestError, UnknownClient, UnknownPortal
from ..store import (
    Client,
    Grant,
    NewPortal,
    Portal,
    PortalChanges,
    Store,
    TokenMethod,
)
from ._access import new_key
from ._dispatcher import Dispatcher

NAME_MAX: Final = 64
# What a method pattern may hold: a method name's characters and fnmatch's wildcards.
_PATTERN: Final = re.compile(r"[A-Za-z0-9_.*?\[\]!-]+")
_EVENT_PATTERN: Final = re.compile(r"[A-Z0-9_*?]{1,64}")
# The principal of calls an administrator makes from the shell (``b24gate call``).
OPERATOR: Final = "(operator)"


class Budget(TypedDict, total=False):
    """A portal's request budget, or the part of it a change gives."""

    rate: float
    burst: int


@dataclass(frozen=True)
class NewClient:
    """A client key as the administrator asks for it, checked."""

    name: str
    portals: tuple[str, ...]
    methods: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    allow_url_key: bool = False
    events: tuple[str, ...] = ()


@dataclass(frozen=True)
class IssuedKey:
    """A created client and its key: shown once, only its hash is stored."""

    client: Client
    key: str = field(repr=False)


@dataclass(frozen=True)
class PortalStatus:
    portal: Portal
    grant: Grant | None


# -- the rules, without the store ----------------------------------------------------------


def portal_name(name: str) -> str:
    """A name clients use in calls and administrators in commands: letters, digits, - and _."""
    if len(name) > NAME_MAX or not name.replace("-", "").replace("_", "").isalnum():
        raise InvalidSetting(
            "name", f"a portal's name has letters, digits, - and _ only (at most {NAME_MAX})"
        )
    return name


def client_name(name: str) -> str:
    """A name shown in lists and log lines: 1 to ``NAME_MAX`` printable characters (any
    script and spaces; no control, format or line-separator characters, which could
    break a line or disguise one name as another)."""
    if not name.strip() or len(name) > NAME_MAX or not name.isprintable():
        raise InvalidSetting("name", f"a client's name has 1 to {NAME_MAX} printable characters")
    return name


# The address rules (portal_address, oauth_address, webhook_address) and the budget's
# ranges (check_rate, check_burst) are Bitrix24's and live in b24gate.bitrix, where the
# store checks through them too.


def token_request_method(value: str | None) -> TokenMethod:
    """How token requests go to the OAuth server: POST (the default) or GET."""
    method = (value or "POST").upper()
    if method not in ("POST", "GET"):
        raise InvalidSetting("token_method", "the token method is POST or GET")
    return cast("TokenMethod", method)


def request_budget(
    plan: str | None = None, rate: float | None = None, burst: int | None = None
) -> Budget:
    """The budget a plan (``standard``, ``enterprise``) or explicit numbers give; only what
    was given, so that a change of the rate alone keeps the burst."""
    if plan is not None and (rate is not None or burst is not None):
        raise InvalidSetting("plan", "give a plan, or a rate and a burst, not both")
    if plan is not None:
        chosen = PLANS.get(plan.lower())
        if chosen is None:
            known = ", ".join(f"{n} ({p.rate:g}/s, bucket {p.burst})" for n, p in PLANS.items())
            raise InvalidSetting("plan", f"a plan is one of {known}")
        rate, burst = chosen.rate, chosen.burst
    budget: Budget = {}
    if rate is not None:
        budget["rate"] = check_rate(rate)
    if burst is not None:
        budget["burst"] = check_burst(burst)
    return budget


def ip_ranges(values: Iterable[str]) -> tuple[str, ...]:
    """Addresses or CIDRs a client key may call from; none: any."""
    ranges = []
    for value in values:
        cidr = value.strip()
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise InvalidSetting("ips", f"{cidr[:80]!r} is not an address or CIDR") from None
        ranges.append(cidr)
    return tuple(ranges)


def event_patterns(values: Iterable[str]) -> tuple[str, ...]:
    """Event name patterns like ``ONCRMDEAL*`` a key may read (matched case-insensitively);
    none: no events at all."""
    patterns = []
    for value in values:
        pattern = value.strip().upper()
        if not _EVENT_PATTERN.fullmatch(pattern):
            raise InvalidSetting(
                "events",
                f"{pattern[:80]!r} is not an event pattern (letters, digits, _ and the "
                "wildcards * ?)",
            )
        patterns.append(pattern)
    return tuple(dict.fromkeys(patterns))


def method_patterns(values: Iterable[str]) -> tuple[str, ...]:
    """Method patterns like ``crm.*`` (matched case-insensitively); none: every method.
    A pattern with a character no method name has could never match: it is refused."""
    patterns = []
    for value in values:
        pattern = value.strip()
        if not _PATTERN.fullmatch(pattern):
            raise InvalidSetting(
                "methods",
                f"{pattern[:80]!r} is not a method pattern (letters, digits, _ . and "
                "the wildcards * ?)",
            )
        patterns.append(pattern)
    return tuple(patterns)


def oauth_portal(
    name: str,
    url: str,
    client_id: str,
    client_secret: str,
    *,
    oauth_url: str | None = None,
    scope: str = "",
    token_method: str | None = None,
    budget: Budget | None = None,
    connect_by_install: bool = False,
) -> NewPortal:
    """A portal reached through an OAuth app (a local or marketplace application).
    ``connect_by_install``: the app's install event may connect it while it was never
    connected (otherwise only an administrator's authorization does)."""
    origin = portal_address(url)
    if not client_id.strip():
        raise InvalidSetting("client_id", "an OAuth portal needs its app's client id")
    if not client_secret:
        raise InvalidSetting("client_secret", "an OAuth portal needs its app's client secret")
    return NewPortal(
        name=portal_name(name),
        url=origin.base,
        domain=origin.domain,
        client_id=client_id.strip(),
        client_secret=client_secret,
        oauth_url=oauth_address(oauth_url),
        scope=scope.replace(" ", ""),
        token_method=token_request_method(token_method),
        connect_by_install=connect_by_install,
        **(budget or {}),
    )


def webhook_portal(
    name: str, webhook: WebhookAddress, *, scope: str = "", budget: Budget | None = None
) -> NewPortal:
    """A portal reached through an incoming webhook: its URL names the portal and is its
    only credential; it is connected from the start."""
    return NewPortal(
        name=portal_name(name),
        url=webhook.origin.base,
        domain=webhook.origin.domain,
        scope=scope.replace(" ", ""),
        kind="webhook",
        webhook_url=webhook.url,
        **(budget or {}),
    )


def new_client(
    name: str,
    portals: Iterable[str],
    *,
    methods: Iterable[str] = (),
    ips: Iterable[str] = (),
    allow_url_key: bool = False,
    events: Iterable[str] = (),
) -> NewClient:
    wanted = tuple(dict.fromkeys(p.strip() for p in portals))
    if not wanted or not all(wanted):
        raise InvalidSetting("portals", "a client needs at least one portal")
    return NewClient(
        name=client_name(name),
        portals=wanted,
        methods=method_patterns(methods),
        ips=ip_ranges(ips),
        allow_url_key=allow_url_key,
        events=event_patterns(events),
    )


def operator_client(portal: str) -> Client:
    """The administrator as a caller of ``portal``: every method, from anywhere. Its calls
    go through :meth:`Dispatcher.call` like a client's, so they wait their turn in the
    portal's budget and obey its state and Bitrix24's operating-time limit."""
    return Client(
        id=0,
        name=OPERATOR,
        key_id="",
        key_hash="",
        methods=(),
        ips=(),
        allow_url_key=False,
        portals=(portal,),
        created_at=0.0,
        revoked_at=None,
    )


# -- changes in the store -------------------------------------------------------------------


def _check_portal(new: NewPortal) -> None:
    """What the builders ensure, for a :class:`NewPortal` made some other way. (The store
    refuses a bad address or budget itself too.)"""
    portal_name(new.name)
    portal_address(new.url)
    request_budget(rate=new.rate, burst=new.burst)
    if new.kind == "webhook":
        webhook_address(new.webhook_url or "")
    else:
        if not new.oauth_url:
            raise InvalidSetting("oauth_url", "an OAuth portal needs its OAuth server's URL")
        oauth_address(new.oauth_url)
        token_request_method(new.token_method)
        if not new.client_id.strip() or not new.client_secret:
            raise InvalidSetting("client_id", "an OAuth portal needs its app's id and secret")


async def add_portal(store: Store, new: NewPortal) -> Portal:
    """Register a portal; :class:`Conflict` when its name or domain is taken."""
    _check_portal(new)
    return await store.add_portal(new)


async def _portal(store: Store, name: str) -> Portal:
    portal = await store.portal(name)
    if portal is None:
        raise UnknownPortal(f"no portal named {name!r}")
    return portal


def portal_change(
    *,
    budget: Budget | None = None,
    webhook: WebhookAddress | None = None,
    connect_by_install: bool | None = None,
) -> None:
    """A change of a portal (:func:`set_portal`) changes something: else
    :class:`~b24gate.errors.RequestError`, before anything is opened."""
    if not budget and webhook is None and connect_by_install is None:
        raise RequestError(
            "nothing to change: give a request budget, whether the app's install event "
            "may connect the portal, or a webhook URL"
        )


async def set_portal(
    store: Store,
    name: str,
    *,
    budget: Budget | None = None,
    webhook: WebhookAddress | None = None,
    connect_by_install: bool | None = None,
) -> Portal:
    """Change a portal's request budget, whether the app's install event may connect an
    OAuth portal, or a webhook portal's incoming webhook (it was deleted, or the portal
    moved: the portal is connected again at once)."""
    portal_change(budget=budget, webhook=webhook, connect_by_install=connect_by_install)
    changes: PortalChanges = {}
    if budget:
        checked = request_budget(rate=budget.get("rate"), burst=budget.get("burst"))
        if "rate" in checked:
            changes["rate"] = checked["rate"]
        if "burst" in checked:
            changes["burst"] = checked["burst"]
    portal = await _portal(store, name)
    if connect_by_install is not None:
        if portal.kind != "oauth":
            raise Conflict(f"portal {name!r} calls an incoming webhook: it has no install event")
        changes["connect_by_install"] = connect_by_install
    if webhook is not None:
        if portal.kind != "webhook":
            raise Conflict(
                f"portal {name!r} uses an OAuth app, not a webhook; register a webhook portal "
                "with `b24gate portal add NAME --webhook-url-file FILE`"
            )
        changes.update(
            {
                "url": webhook.origin.base,
                "domain": webhook.origin.domain,
                "webhook_url": webhook.url,
                "client_endpoint": None,
                "state": "connected",
                "state_reason": None,
            }
        )
    return await store.update_portal(name, **changes)


async def portal_status(store: Store, name: str) -> PortalStatus:
    portal = await _portal(store, name)
    return PortalStatus(portal, await store.grant(portal))


async def list_portals(store: Store) -> list[PortalStatus]:
    """Every portal by name, with its grant."""
    return [PortalStatus(p, await store.grant(p)) for p in await store.portals()]


async def add_client(store: Store, new: NewClient) -> IssuedKey:
    """Create a client key. :class:`UnknownPortal` for a portal that is not registered,
    :class:`Conflict` for a name that is taken."""
    checked = new_client(
        new.name,
        new.portals,
        methods=new.methods,
        ips=new.ips,
        allow_url_key=new.allow_url_key,
        events=new.events,
    )
    registered = {p.name for p in await store.portals()}
    missing = [p for p in checked.portals if p not in registered]
    if missing:
        raise UnknownPortal(f"no portal named {', '.join(map(repr, missing))}")
    key = new_key()
    client = await store.add_client(
        checked.name,
        key.key_id,
        key.key_hash,
        list(checked.portals),
        list(checked.methods),
        list(checked.ips),
        checked.allow_url_key,
        list(checked.events),
    )
    return IssuedKey(client, key.key)


async def list_clients(store: Store) -> list[Client]:
    """Every client by name, the revoked ones included."""
    return await store.clients()


async def revoke_client(store: Store, name: str) -> None:
    """Revoke a client's key: its next call is refused. :class:`UnknownClient` when no
    active client has that name."""
    if not await store.revoke_client(name):
        raise UnknownClient(f"no active client named {name!r}")


async def set_client_methods(store: Store, name: str, methods: Iterable[str]) -> None:
    """Change the method patterns of an active client's key (none: every method); its next
    call is checked against them. :class:`UnknownClient` when no active client has that
    name."""
    checked = method_patterns(methods)
    if not await store.set_client_methods(name, list(checked)):
        raise UnknownClient(f"no active client named {name!r}")


async def operator_call(
    dispatcher: Dispatcher, portal: str, method: str, params: Mapping[str, Any]
) -> dict[str, Any]:
    """One call by the administrator, through the same entrance as a client's."""
    result = await dispatcher.call(operator_client(portal), method, params, portal_name=portal)
    return result.body
