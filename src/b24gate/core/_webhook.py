"""Portals backed by an incoming webhook: where their calls go, and what fixes them.

A webhook needs no token and no refresh: its secret is the code in its URL's path, so the
URL is kept sealed in the store and is never logged, shown or put into an error. When
Bitrix24 refuses it, or the portal moved, only an administrator can help, by registering
a new webhook URL (``b24gate portal set NAME --webhook-url-file FILE``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..bitrix import parse_webhook_url
from ..errors import BitrixError, NeedsAuthorization, PortalMisconfigured, PortalMoved
from ..store import Portal, Store


def webhook_fix(name: str) -> str:
    return (
        "create a new incoming webhook in Bitrix24 and register it with "
        f"`b24gate portal set {name} --webhook-url-file FILE`"
    )


def fix_for(portal: Portal) -> str | None:
    """What an administrator runs to repair ``portal``; None: the default (authorize)."""
    return webhook_fix(portal.name) if portal.kind == "webhook" else None


def webhook_base(portal: Portal) -> str:
    """The webhook's base (``https://host/rest/USER_ID/CODE/``): methods are appended to it."""
    try:
        return parse_webhook_url(portal.webhook_url or "").base
    except ValueError:
        raise PortalMisconfigured(
            f"portal {portal.name!r} has no usable webhook URL; {webhook_fix(portal.name)}"
        ) from None


async def webhook_refused(store: Store, portal: Portal, exc: BitrixError) -> NeedsAuthorization:
    """Bitrix24 refused the webhook (it was deleted, or its user deactivated): no refresh can
    help, so the portal is marked and every call says what to do until it is replaced."""
    reason = f"the webhook was refused: {exc.error or exc.status}"
    await store.mark_portal(portal.name, "needs_authorization", reason)
    return NeedsAuthorization(portal.name, reason, fix=webhook_fix(portal.name))


def webhook_moved(portal: Portal, moved: PortalMoved) -> PortalMoved:
    """The portal redirected to another host. The redirect is not followed (it would carry
    the webhook's secret there) and there is no OAuth server to ask where the portal lives,
    so the answer names only the new host (never the path, which holds the secret)."""
    try:
        parts = urlsplit(moved.location)
        host = parts.hostname or "another host"
        where = f"{host}:{parts.port}" if parts.port else host
        origin = f"{parts.scheme}://{where}"
    except ValueError:
        where, origin = "another host", ""
    return PortalMoved(
        f"portal {portal.name!r} moved to {where}; its webhook URL names the old address: "
        f"{webhook_fix(portal.name)} with the new address",
        location=origin,
    )
