"""``b24gate portal …``: register, change, connect and inspect portals. The rules (https or
loopback, names, plans, budgets) are the core's (:mod:`b24gate.core`); here options are
parsed and results printed."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..bitrix import DEFAULT_OAUTH_URL, PLANS
from ..errors import RequestError
from ._base import _read_secret, fail, portal_app, usage, with_gateway

if TYPE_CHECKING:
    from ..core import Gateway, PortalStatus, WebhookAddress


def _read_client_secret(file: Path | None, env: str | None) -> str:
    if (file is None) == (env is None):
        raise typer.BadParameter("give exactly one of --client-secret-file and --client-secret-env")
    if file is not None:
        return _read_secret(file)
    value = os.environ.get(env or "", "").strip()
    if not value:
        fail(f"the environment variable {env} is empty or unset")
    return value


def _read_webhook_url(file: Path | None, env: str | None) -> WebhookAddress:
    """The webhook from --webhook-url-file or --webhook-url-env, checked by the core.

    The URL's path holds the webhook's secret: no message quotes it.
    """
    from ..core import webhook_address

    if (file is None) == (env is None):
        raise typer.BadParameter("give exactly one of --webhook-url-file and --webhook-url-env")
    if file is not None:
        value = _read_secret(file)
    else:
        value = os.environ.get(env or "", "").strip()
        if not value:
            fail(f"the environment variable {env} is empty or unset")
    with usage():
        return webhook_address(value)


def _when(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else None


PlanOption = Annotated[
    str | None,
    typer.Option(
        help="Bitrix24's plan: "
        + " or ".join(f"{n} ({p.rate:g}/s, bucket {p.burst})" for n, p in PLANS.items())
        + "."
    ),
]
RateOption = Annotated[
    float | None, typer.Option(help="Requests/s Bitrix24 drains for this portal; 0 = no limit.")
]
BurstOption = Annotated[int | None, typer.Option(help="The size of the portal's request bucket.")]
ConnectByInstallOption = Annotated[
    bool | None,
    typer.Option(
        "--connect-by-install/--no-connect-by-install",
        help="Let the app's install event connect the portal while it was never connected "
        "(off: only `portal authorize` connects it).",
    ),
]


@portal_app.command("add")
def portal_add(
    name: Annotated[str, typer.Argument(help="A short name clients will use, e.g. `main`.")],
    url: Annotated[
        str | None, typer.Option(help="The portal, e.g. https://company.bitrix24.ru")
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(help="The local or marketplace app's client id.")
    ] = None,
    client_secret_file: Annotated[
        Path | None, typer.Option(help="File holding the client secret.")
    ] = None,
    client_secret_env: Annotated[
        str | None, typer.Option(help="Variable holding the client secret.")
    ] = None,
    webhook_url_file: Annotated[
        Path | None,
        typer.Option(help="File holding an incoming webhook's URL (instead of an OAuth app)."),
    ] = None,
    webhook_url_env: Annotated[
        str | None, typer.Option(help="Variable holding an incoming webhook's URL.")
    ] = None,
    scope: Annotated[str, typer.Option(help="The scope you expect the app card to grant.")] = "",
    oauth_url: Annotated[
        str | None, typer.Option(help=f"The OAuth server [default: {DEFAULT_OAUTH_URL}]")
    ] = None,
    oauth_method: Annotated[
        str | None,
        typer.Option("--token-method", help="POST (default) or GET for token requests."),
    ] = None,
    plan: PlanOption = None,
    rate: RateOption = None,
    burst: BurstOption = None,
    connect_by_install: ConnectByInstallOption = None,
) -> None:
    """Register a portal: an OAuth app (then `b24gate portal authorize NAME`, or with
    --connect-by-install install the app with the handler `<public url>/bitrix/install`),
    or an incoming webhook."""
    from ..core import add_portal, oauth_portal, portal_name, request_budget, webhook_portal

    with usage():
        portal_name(name)
        limits = request_budget(plan, rate, burst)
    webhook = webhook_url_file is not None or webhook_url_env is not None
    if webhook:
        oauth_only = {
            "--url": url,
            "--client-id": client_id,
            "--client-secret-file": client_secret_file,
            "--client-secret-env": client_secret_env,
            "--oauth-url": oauth_url,
            "--token-method": oauth_method,
            "--connect-by-install": connect_by_install,
        }
        given = [flag for flag, value in oauth_only.items() if value is not None]
        if given:
            raise typer.BadParameter(
                f"a webhook portal takes no {', '.join(given)}: the webhook URL names the "
                "portal and is its only credential",
                param_hint="--webhook-url-file/--webhook-url-env",
            )
        hook = _read_webhook_url(webhook_url_file, webhook_url_env)
        with usage():
            new = webhook_portal(name, hook, scope=scope, budget=limits)
    else:
        if url is None:
            raise typer.BadParameter(
                "give --url (with --client-id and a client secret), or --webhook-url-file / "
                "--webhook-url-env",
                param_hint="--url",
            )
        secret = _read_client_secret(client_secret_file, client_secret_env)
        with usage():
            new = oauth_portal(
                name,
                url,
                client_id or "",
                secret,
                oauth_url=oauth_url,
                scope=scope,
                token_method=oauth_method,
                budget=limits,
                connect_by_install=bool(connect_by_install),
            )

    async def add(gw: Gateway) -> None:
        await add_portal(gw.store, new)

    with_gateway(add)
    if webhook:
        typer.echo(
            f"portal {name} registered: it calls the incoming webhook at {new.domain}; "
            f"try it with: b24gate call {name} profile",
            err=True,
        )
        return
    typer.echo(
        f"portal {name} registered; connect it with: b24gate portal authorize {name}"
        + (" (or by installing the app)" if connect_by_install else ""),
        err=True,
    )


@portal_app.command("set")
def portal_set(
    name: str,
    webhook_url_file: Annotated[
        Path | None, typer.Option(help="File holding the new incoming webhook's URL.")
    ] = None,
    webhook_url_env: Annotated[
        str | None, typer.Option(help="Variable holding the new incoming webhook's URL.")
    ] = None,
    plan: PlanOption = None,
    rate: RateOption = None,
    burst: BurstOption = None,
    connect_by_install: ConnectByInstallOption = None,
) -> None:
    """Change a portal: its request budget, whether the app's install event may connect it,
    or a webhook portal's incoming webhook (it was deleted, or the portal moved)."""
    from ..core import portal_change, request_budget, set_portal

    with usage():
        limits = request_budget(plan, rate, burst)
    replace_hook = webhook_url_file is not None or webhook_url_env is not None
    hook = _read_webhook_url(webhook_url_file, webhook_url_env) if replace_hook else None
    try:
        portal_change(budget=limits, webhook=hook, connect_by_install=connect_by_install)
    except RequestError as exc:
        raise typer.BadParameter(
            exc.message,
            param_hint="--plan, --rate/--burst, --connect-by-install, "
            "--webhook-url-file/--webhook-url-env",
        ) from None

    async def change(gw: Gateway) -> None:
        await set_portal(
            gw.store, name, budget=limits, webhook=hook, connect_by_install=connect_by_install
        )

    with_gateway(change)
    if hook is not None:
        typer.echo(
            f"portal {name}: it now calls the incoming webhook at {hook.origin.domain}", err=True
        )
    if limits:
        typer.echo(f"portal {name}: request budget {limits}", err=True)
    if connect_by_install is not None:
        allowed = "may connect it" if connect_by_install else "may not connect it"
        typer.echo(f"portal {name}: the app's install event {allowed}", err=True)


@portal_app.command("authorize")
def portal_authorize(
    name: str,
    force: Annotated[
        bool, typer.Option(help="Allow connecting to another Bitrix24 (member_id).")
    ] = False,
) -> None:
    """Print a one-time URL (valid 15 minutes) that an administrator opens to grant access."""
    from ..core import portal_status

    async def ticket(gw: Gateway) -> str:
        status = await portal_status(gw.store, name)
        return await gw.connector.ticket_url(status.portal, force=force)

    typer.echo(with_gateway(ticket))
    typer.echo(
        "open it in a browser signed in to the portal as an administrator (valid 15 minutes)",
        err=True,
    )


def _status(status: PortalStatus) -> dict[str, Any]:
    portal, grant = status.portal, status.grant
    return {
        "name": portal.name,
        "kind": portal.kind,
        "domain": portal.domain,
        "member_id": portal.member_id,
        "state": portal.state,
        "reason": portal.state_reason,
        "access_expires_at": _when(grant.access_expires_at) if grant else None,
        "refresh_obtained_at": _when(grant.refresh_obtained_at) if grant else None,
        "requests": f"{portal.rate:g}/s, bucket {portal.burst}" if portal.rate else "no limit",
        "connect_by_install": portal.connect_by_install if portal.kind == "oauth" else None,
    }


@portal_app.command("status")
def portal_status(
    name: str, as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False
) -> None:
    """The portal's token state."""
    from ..core import fix_for
    from ..core import portal_status as status_of

    async def status(gw: Gateway) -> PortalStatus:
        return await status_of(gw.store, name)

    found = with_gateway(status)
    info = _status(found)
    if as_json:
        # A stable set of keys that scripts read (docs/design.md §3).
        hidden = ("reason", "kind", "requests", "connect_by_install")
        typer.echo(json.dumps({k: v for k, v in info.items() if k not in hidden}))
        return
    lines = [f"{k}: {v}" for k, v in info.items() if v is not None]
    if info["state"] == "needs_authorization":
        # What the calls' 409 tells the administrator to run; by default, authorize again.
        lines.append(f"fix: {fix_for(found.portal) or f'b24gate portal authorize {name}'}")
    typer.echo("\n".join(lines))


@portal_app.command("list")
def portal_list() -> None:
    """Every portal and its state."""
    from ..core import list_portals

    async def listing(gw: Gateway) -> list[PortalStatus]:
        return await list_portals(gw.store)

    for info in map(_status, with_gateway(listing)):
        typer.echo(f"{info['name']}\t{info['domain']}\t{info['state']}")
