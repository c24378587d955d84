"""``b24gate client …``: client API keys."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

import typer

from ..settings import Settings
from ._base import _with_gateway, client_app, fail, run


@client_app.command("add")
def client_add(
    name: str,
    portal: Annotated[list[str], typer.Option(help="A portal this key may use (repeatable).")],
    methods: Annotated[
        str, typer.Option(help="Allowed method patterns, e.g. 'crm.*,catalog.*'.")
    ] = "",
    ip: Annotated[list[str] | None, typer.Option(help="Allowed caller CIDR (repeatable).")] = None,
    allow_url_key: Annotated[
        bool,
        typer.Option(
            "--allow-url-key",
            help="Also accept the key in a webhook-style URL (/rest/1/KEY/METHOD) for clients "
            "that only take a webhook URL. A key in a URL lands in access logs: see "
            "docs/drop-in.md.",
        ),
    ] = False,
) -> None:
    """Create a client API key; it is printed once and only its hash is stored."""
    from ..core import new_key
    from ..store import StoreConflict

    for cidr in ip or []:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise typer.BadParameter(
                f"{cidr!r} is not an address or CIDR", param_hint="--ip"
            ) from None
    patterns = [m.strip() for m in methods.split(",") if m.strip()]
    key = new_key()

    async def work(cfg: Settings) -> None:
        async def add(gw: Any) -> None:
            try:
                await gw.store.add_client(
                    name,
                    key.key_id,
                    key.key_hash,
                    list(portal),
                    patterns,
                    list(ip or []),
                    allow_url_key,
                )
            except StoreConflict as exc:
                fail(str(exc))

        await _with_gateway(cfg, add)

    run(work)
    typer.echo(key.key)
    typer.echo(f"client {name}: keep this key now, it is not shown again", err=True)


@client_app.command("list")
def client_list() -> None:
    """Every client, its portals and whether it is revoked."""

    async def work(cfg: Settings) -> list[Any]:
        async def listing(gw: Any) -> list[Any]:
            clients: list[Any] = await gw.store.clients()
            return clients

        return await _with_gateway(cfg, listing)

    for c in run(work):
        state = "revoked" if c.revoked_at else "active"
        typer.echo(f"{c.name}\t{','.join(c.portals)}\t{','.join(c.methods) or '*'}\t{state}")


@client_app.command("revoke")
def client_revoke(name: str) -> None:
    """Revoke a client key; its next call is refused."""

    async def work(cfg: Settings) -> bool:
        async def revoke(gw: Any) -> bool:
            done: bool = await gw.store.revoke_client(name)
            return done

        return await _with_gateway(cfg, revoke)

    if not run(work):
        fail(f"no active client {name!r}")
    typer.echo(f"client {name} revoked", err=True)
