"""``b24gate client …``: client API keys. The rules are the core's (:mod:`b24gate.core`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ._base import client_app, usage, with_gateway

if TYPE_CHECKING:
    from ..core import Gateway, IssuedKey
    from ..store import Client


@client_app.command("add")
def client_add(
    name: str,
    portal: Annotated[list[str], typer.Option(help="A portal this key may use (repeatable).")],
    methods: Annotated[
        str, typer.Option(help="Allowed method patterns, e.g. 'crm.*,catalog.*'.")
    ] = "",
    ip: Annotated[list[str] | None, typer.Option(help="Allowed caller CIDR (repeatable).")] = None,
    events: Annotated[
        str,
        typer.Option(
            help="Event patterns this key may read from GET /api/v1/events, e.g. "
            "'ONCRMDEAL*,ONCRMCONTACT*' or '*' (default: none)."
        ),
    ] = "",
    allow_url_key: Annotated[
        bool,
        typer.Option(
            "--allow-url-key",
            help="Also accept the key in a URL: webhook-style (/rest/1/KEY/METHOD) or in the "
            "query string (?auth=KEY), for clients that only take a webhook URL. A key in a "
            "URL lands in access logs: see docs/drop-in.md.",
        ),
    ] = False,
) -> None:
    """Create a client API key; it is printed once and only its hash is stored."""
    from ..core import add_client, new_client

    with usage():
        new = new_client(
            name,
            portal,
            methods=[m for m in methods.split(",") if m.strip()],
            ips=ip or [],
            allow_url_key=allow_url_key,
            events=[e for e in events.split(",") if e.strip()],
        )

    async def add(gw: Gateway) -> IssuedKey:
        return await add_client(gw.store, new)

    issued = with_gateway(add)
    typer.echo(issued.key)
    typer.echo(f"client {name}: keep this key now, it is not shown again", err=True)


@client_app.command("list")
def client_list() -> None:
    """Every client, its portals and whether it is revoked."""
    from ..core import list_clients

    async def listing(gw: Gateway) -> list[Client]:
        return await list_clients(gw.store)

    for c in with_gateway(listing):
        state = "revoked" if c.revoked_at else "active"
        typer.echo(f"{c.name}\t{','.join(c.portals)}\t{','.join(c.methods) or '*'}\t{state}")


@client_app.command("revoke")
def client_revoke(name: str) -> None:
    """Revoke a client key; its next call is refused."""
    from ..core import revoke_client

    async def revoke(gw: Gateway) -> None:
        await revoke_client(gw.store, name)

    with_gateway(revoke)
    typer.echo(f"client {name} revoked", err=True)
