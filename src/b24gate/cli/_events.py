"""``b24gate events …``: a portal's event subscriptions. The rules are the core's
(:mod:`b24gate.core`, docs/events.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ._base import events_app, usage, with_gateway

if TYPE_CHECKING:
    from ..core import Gateway
    from ..store import Subscription


@events_app.command("subscribe")
def events_subscribe(
    portal: str,
    event: Annotated[list[str], typer.Argument(help="Event names, e.g. ONCRMDEALUPDATE.")],
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Drain Bitrix24's offline queue instead of being its handler: for a "
            "gateway Bitrix24 cannot reach, and writes through the gateway do not come back.",
        ),
    ] = False,
) -> None:
    """Subscribe PORTAL to events: Bitrix24 posts them to the gateway's public URL
    (online), or the gateway drains the portal's offline queue (--offline)."""
    from ..core import event_names

    with usage():
        names = event_names(event)
    mode = "offline" if offline else "online"

    async def subscribe(gw: Gateway) -> None:
        await gw.events.subscribe(portal, names, mode)

    with_gateway(subscribe)
    typer.echo(f"portal {portal}: subscribed ({mode}) to {', '.join(names)}", err=True)


@events_app.command("unsubscribe")
def events_unsubscribe(
    portal: str,
    event: Annotated[list[str], typer.Argument(help="Event names.")],
) -> None:
    """Unbind events at the portal and stop keeping them (the log keeps what it has)."""
    from ..core import event_names

    with usage():
        names = event_names(event)

    async def unsubscribe(gw: Gateway) -> list[Subscription]:
        return await gw.events.unsubscribe(portal, names)

    removed = with_gateway(unsubscribe)
    gone = ", ".join(s.event for s in removed) or "nothing (none of them was subscribed)"
    typer.echo(f"portal {portal}: unsubscribed from {gone}", err=True)


@events_app.command("list")
def events_list() -> None:
    """Every subscription: portal, event, mode."""

    async def listing(gw: Gateway) -> list[tuple[str, Subscription]]:
        names = {p.id: p.name for p in await gw.store.portals()}
        return [(names.get(s.portal_id, "-"), s) for s in await gw.store.events.subscriptions()]

    for name, sub in with_gateway(listing):
        typer.echo(f"{name}\t{sub.event}\t{sub.mode}")


@events_app.command("push")
def events_push(
    client: str,
    portal: str,
    url: str,
    allow_http: Annotated[
        bool,
        typer.Option(
            "--allow-http",
            help="Accept a plain-http URL (a service inside your network); the events "
            "travel unencrypted, signed all the same.",
        ),
    ] = False,
) -> None:
    """Push CLIENT's events of PORTAL to URL (a 1C HTTP service), signed; the signing
    secret is printed once. The key's cursor is shared with GET /api/v1/events."""
    from ..core import push_url

    with usage():
        target = push_url(url, allow_http=allow_http)

    async def configure(gw: Gateway) -> str:
        return await gw.pusher.configure(client, portal, target, allow_http=allow_http)

    typer.echo(with_gateway(configure))
    typer.echo(
        f"client {client}: events of {portal} go to {target}; keep this signing secret now, "
        "it is not shown again",
        err=True,
    )


@events_app.command("unpush")
def events_unpush(client: str, portal: str) -> None:
    """Stop pushing CLIENT's events of PORTAL (the key can still read them)."""

    async def remove(gw: Gateway) -> bool:
        return await gw.pusher.remove(client, portal)

    done = with_gateway(remove)
    typer.echo(f"client {client}: {'no longer pushed' if done else 'was not pushed'}", err=True)
