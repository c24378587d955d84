"""Admission: whether a client's calls may go to a portal, decided before anything is sent.

Every entrance admits through :func:`admit_calls`, in this order, and the first check that
fails answers (docs/design.md §1):

1. each method is a well-formed Bitrix24 method name (400 ``invalid_method``), and a
   ``batch`` only where it can be read (REST 1's ``/api/v1/call`` and ``/rest/batch``);
2. the caller's address is within the key's CIDRs (403 ``ip_forbidden``);
3. the portal: by name, by registered domain (or the new domain of a moved portal), or
   the key's only portal (404 ``unknown_portal`` for one the key may not use, too);
4. the key's method patterns, for a ``batch`` every command as Bitrix24 reads it
   (403 ``method_forbidden``, 400 ``invalid_batch``); what goes on is the batch rebuilt
   from what was checked (:func:`._access.admit`);
5. the portal's state (409 ``needs_authorization``).

:meth:`Dispatcher.call <._dispatcher.Dispatcher.call>` admits each call; a bulk request
(:mod:`._bulk`) admits all its commands at once first, so that nothing runs unless all may.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..bitrix import valid_method
from ..errors import (
    Forbidden,
    InvalidBatch,
    InvalidMethod,
    NeedsAuthorization,
    RequestError,
    UnknownPortal,
)
from ..store import Client, Portal, ReadCache
from ._access import admit, check_address, holds_key
from ._hosts import host_of
from ._webhook import fix_for

# Which entrance the calls came by: a call (REST 1), a REST 3.0 call, or a bulk request's
# commands (named `commands[i]` in errors).
Entrance = Literal["call", "rest3", "bulk"]


@dataclass(frozen=True)
class Admitted:
    """The portal the calls go to, and for each call, in order, the parameters to forward."""

    portal: Portal
    params: tuple[Mapping[str, Any], ...]


async def admit_calls(
    reads: ReadCache,
    client: Client,
    calls: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    portal_name: str | None = None,
    domain: str | None = None,
    address: str | None = None,
    entrance: Entrance = "call",
) -> Admitted:
    """Admit ``calls`` (method, parameters) of ``client`` from ``address`` to the portal
    named by ``portal_name`` or ``domain``; the first refusal is raised."""
    numbered = entrance == "bulk"

    def where(i: int) -> str:
        return f"commands[{i}]: " if numbered else ""

    for i, (method, _) in enumerate(calls):
        if holds_key(method):
            # `/rest/<key>` (a webhook URL without its user id) makes the key the method:
            # never sent to Bitrix24 with the portal's token, nor echoed back.
            raise InvalidMethod(f"{where(i)}a client key is not a Bitrix24 method name")
        if not valid_method(method):
            raise InvalidMethod(f"{where(i)}{method[:80]!r} is not a Bitrix24 method name")
        if entrance == "rest3" and method.lower() == "batch":
            # REST 3.0's batch: its commands are objects in a shape of its own that the
            # gateway does not read, so it could not say which methods would run.
            raise InvalidBatch(
                "REST 3.0's batch is not passed through (its commands cannot be checked "
                "against the key's methods); send REST 1's batch to /rest/batch"
            )
        if numbered and method.lower() == "batch":
            raise RequestError(
                f"{where(i)}`batch` cannot be a command; for `$result` references "
                "send Bitrix24's own batch to /api/v1/call"
            )
    check_address(client.ips, address)
    portal = await resolve_portal(reads, client, portal_name, domain)
    forwarded = []
    for i, (method, params) in enumerate(calls):
        try:
            forwarded.append(admit(client.methods, method, params))
        except Forbidden as exc:
            if not numbered:
                raise
            # The same refusal (its class is its code), numbered.
            raise type(exc)(f"{where(i)}{exc.message}") from None
    if portal.state != "connected":
        raise NeedsAuthorization(
            portal.name,
            portal.state_reason or "the portal was never connected",
            fix=fix_for(portal),
        )
    return Admitted(portal, tuple(forwarded))


async def resolve_portal(
    reads: ReadCache, client: Client, name: str | None, domain: str | None
) -> Portal:
    """The portal a call names (by name or registered domain), or the client's only one."""
    if name is not None:
        portal = await reads.portal(name)
    elif domain is not None:
        host = host_of(domain)
        portal = await reads.portal_by_domain(host) or await _moved_to(reads, host)
    elif len(client.portals) == 1:
        portal = await reads.portal(client.portals[0])
    else:
        raise RequestError("`portal` is required: this key may use several portals")
    if portal is None or portal.name not in client.portals:
        # One answer for a portal that does not exist and one this key may not use, so
        # that a key cannot learn which other portals the gateway serves.
        raise UnknownPortal(f"no portal {name or domain!r} is registered")
    return portal


async def _moved_to(reads: ReadCache, host: str) -> Portal | None:
    """A portal whose OAuth server named ``host`` as its new address (a moved portal)."""
    for portal in await reads.portals():
        if host and host_of(portal.client_endpoint) == host:
            return portal
    return None
