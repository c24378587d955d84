"""``b24gate portal …``: register, change, connect and inspect portals."""

from __future__ import annotations

import ipaddress
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from ..settings import Settings
from ._base import DEFAULT_OAUTH_URL, _read_secret, _with_gateway, fail, portal_app, run


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalise_url(value: str, what: str) -> tuple[str, str]:
    """``(base URL, domain)``: https only, except loopback (the sandbox); no path, query or user."""
    parts = urlsplit(value.strip())
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise typer.BadParameter(f"{value!r} is not an http(s) URL", param_hint=what)
    if parts.scheme == "http" and not _is_loopback(host):
        raise typer.BadParameter(
            "must be https:// (http is allowed only on loopback)", param_hint=what
        )
    if parts.username or parts.password or parts.query or parts.fragment or parts.path.strip("/"):
        raise typer.BadParameter("give only scheme://host[:port], without a path", param_hint=what)
    default_port = 443 if parts.scheme == "https" else 80
    shown_host = f"[{host}]" if ":" in host else host
    domain = shown_host if parts.port in (None, default_port) else f"{shown_host}:{parts.port}"
    return f"{parts.scheme}://{domain}", domain


def _read_client_secret(file: Path | None, env: str | None) -> str:
    if (file is None) == (env is None):
        raise typer.BadParameter("give exactly one of --client-secret-file and --client-secret-env")
    if file is not None:
        return _read_secret(file)
    value = os.environ.get(env or "", "").strip()
    if not value:
        fail(f"the environment variable {env} is empty or unset")
    return value


def _read_webhook_url(file: Path | None, env: str | None) -> tuple[str, str, str]:
    """``(webhook base URL, portal URL, domain)`` from --webhook-url-file or --webhook-url-env.

    The URL's path holds the webhook's secret: no message here quotes it.
    """
    from ..bitrix import parse_webhook_url

    if (file is None) == (env is None):
        raise typer.BadParameter("give exactly one of --webhook-url-file and --webhook-url-env")
    hint = "--webhook-url-file" if file is not None else "--webhook-url-env"
    if file is not None:
        value = _read_secret(file)
    else:
        value = os.environ.get(env or "", "").strip()
        if not value:
            fail(f"the environment variable {env} is empty or unset")
    try:
        hook = parse_webhook_url(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=hint) from None
    base, domain = normalise_url(hook.origin, hint)  # https, or http on loopback only
    return base + hook.base.removeprefix(hook.origin), base, domain


def _when(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else None


PLANS = {"standard": (2.0, 50), "enterprise": (5.0, 250)}
PlanOption = Annotated[
    str | None,
    typer.Option(help="Bitrix24's plan: standard (2/s, bucket 50) or enterprise (5/s, 250)."),
]
RateOption = Annotated[
    float | None, typer.Option(help="Requests/s Bitrix24 drains for this portal; 0 = no limit.")
]
BurstOption = Annotated[int | None, typer.Option(help="The size of the portal's request bucket.")]


def budget(plan: str | None, rate: float | None, burst: int | None) -> dict[str, Any]:
    """The portal's request budget from --plan or explicit --rate/--burst (or nothing)."""
    if plan is not None and (rate is not None or burst is not None):
        raise typer.BadParameter("give --plan or --rate/--burst, not both", param_hint="--plan")
    if plan is not None:
        if plan.lower() not in PLANS:
            raise typer.BadParameter("standard or enterprise", param_hint="--plan")
        rate, burst = PLANS[plan.lower()]
    if rate is not None and not 0 <= rate <= 1000:
        raise typer.BadParameter("between 0 (no limit) and 1000", param_hint="--rate")
    if burst is not None and not 1 <= burst <= 100_000:
        raise typer.BadParameter("between 1 and 100000", param_hint="--burst")
    return {k: v for k, v in (("rate", rate), ("burst", burst)) if v is not None}


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
) -> None:
    """Register a portal: an OAuth app (then `b24gate portal authorize NAME`, or install the
    app with the handler `<public url>/bitrix/install`), or an incoming webhook."""
    from ..store import NewPortal, StoreConflict

    if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
        raise typer.BadParameter("letters, digits, - and _ only (at most 64)", param_hint="NAME")
    limits = budget(plan, rate, burst)
    webhook = webhook_url_file is not None or webhook_url_env is not None
    if webhook:
        oauth_only = {
            "--url": url,
            "--client-id": client_id,
            "--client-secret-file": client_secret_file,
            "--client-secret-env": client_secret_env,
            "--oauth-url": oauth_url,
            "--token-method": oauth_method,
        }
        given = [flag for flag, value in oauth_only.items() if value is not None]
        if given:
            raise typer.BadParameter(
                f"a webhook portal takes no {', '.join(given)}: the webhook URL names the "
                "portal and is its only credential",
                param_hint="--webhook-url-file/--webhook-url-env",
            )
        hook_url, base, domain = _read_webhook_url(webhook_url_file, webhook_url_env)
        new = NewPortal(
            name=name,
            url=base,
            domain=domain,
            scope=scope.replace(" ", ""),
            kind="webhook",
            webhook_url=hook_url,
            **limits,
        )
    else:
        if url is None:
            raise typer.BadParameter(
                "give --url (with --client-id and a client secret), or --webhook-url-file / "
                "--webhook-url-env",
                param_hint="--url",
            )
        if not client_id:
            raise typer.BadParameter("an OAuth portal needs its app's client id")
        base, domain = normalise_url(url, "--url")
        oauth_base, _ = normalise_url(oauth_url or DEFAULT_OAUTH_URL, "--oauth-url")
        token_method = (oauth_method or "POST").upper()
        if token_method not in ("POST", "GET"):
            raise typer.BadParameter("POST or GET", param_hint="--token-method")
        secret = _read_client_secret(client_secret_file, client_secret_env)
        new = NewPortal(
            name=name,
            url=base,
            domain=domain,
            client_id=client_id,
            client_secret=secret,
            oauth_url=oauth_base,
            scope=scope.replace(" ", ""),
            token_method=token_method,
            **limits,
        )

    async def work(cfg: Settings) -> None:
        async def add(gw: Any) -> None:
            try:
                await gw.store.add_portal(new)
            except StoreConflict as exc:
                fail(str(exc))

        await _with_gateway(cfg, add)

    run(work)
    if webhook:
        typer.echo(
            f"portal {name} registered: it calls the incoming webhook at {new.domain}; "
            f"try it with: b24gate call {name} profile",
            err=True,
        )
        return
    typer.echo(
        f"portal {name} registered; connect it with: b24gate portal authorize {name}", err=True
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
) -> None:
    """Change a portal: its request budget, or a webhook portal's incoming webhook (it was
    deleted, or the portal moved)."""
    from ..store import StoreConflict

    limits = budget(plan, rate, burst)
    replace_hook = webhook_url_file is not None or webhook_url_env is not None
    if not replace_hook and not limits:
        raise typer.BadParameter("nothing to change: give --plan, --rate/--burst or a webhook URL")
    hook = _read_webhook_url(webhook_url_file, webhook_url_env) if replace_hook else None

    async def work(cfg: Settings) -> None:
        async def change(gw: Any) -> None:
            portal = await gw.store.portal(name)
            if portal is None:
                fail(f"no portal {name!r}; see `b24gate portal list`")
            changes: dict[str, Any] = dict(limits)
            if hook is not None:
                if portal.kind != "webhook":
                    fail(
                        f"portal {name!r} uses an OAuth app, not a webhook; register a webhook "
                        "portal with `b24gate portal add NAME --webhook-url-file FILE`"
                    )
                hook_url, base, domain = hook
                changes.update(
                    url=base,
                    domain=domain,
                    webhook_url=hook_url,
                    client_endpoint=None,
                    state="connected",
                    state_reason=None,
                )
            try:
                await gw.store.update_portal(name, **changes)
            except (StoreConflict, ValueError) as exc:
                fail(str(exc))

        await _with_gateway(cfg, change)

    run(work)
    if hook is not None:
        typer.echo(f"portal {name}: it now calls the incoming webhook at {hook[2]}", err=True)
    if limits:
        typer.echo(f"portal {name}: request budget {limits}", err=True)


@portal_app.command("authorize")
def portal_authorize(
    name: str,
    force: Annotated[
        bool, typer.Option(help="Allow connecting to another Bitrix24 (member_id).")
    ] = False,
) -> None:
    """Print a one-time URL (valid 15 minutes) that an administrator opens to grant access."""

    async def work(cfg: Settings) -> str:
        async def ticket(gw: Any) -> str:
            portal = await gw.store.portal(name)
            if portal is None:
                fail(f"no portal {name!r}; see `b24gate portal list`")
            url: str = await gw.connector.ticket_url(portal, force=force)
            return url

        return await _with_gateway(cfg, ticket)

    typer.echo(run(work))
    typer.echo(
        "open it in a browser signed in to the portal as an administrator (valid 15 minutes)",
        err=True,
    )


def _status(portal: Any, grant: Any) -> dict[str, Any]:
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
    }


@portal_app.command("status")
def portal_status(
    name: str, as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False
) -> None:
    """The portal's token state."""

    async def work(cfg: Settings) -> dict[str, Any]:
        async def status(gw: Any) -> dict[str, Any]:
            portal = await gw.store.portal(name)
            if portal is None:
                fail(f"no portal {name!r}; see `b24gate portal list`")
            return _status(portal, await gw.store.grant(portal))

        return await _with_gateway(cfg, status)

    info = run(work)
    if as_json:
        # DESIGN §3's fields, exactly.
        # Exactly DESIGN §3's keys.
        hidden = ("reason", "kind", "requests")
        typer.echo(json.dumps({k: v for k, v in info.items() if k not in hidden}))
        return
    lines = [f"{k}: {v}" for k, v in info.items() if v is not None]
    if info["state"] == "needs_authorization":
        if info["kind"] == "webhook":
            lines.append(f"fix: b24gate portal set {name} --webhook-url-file FILE")
        else:
            lines.append(f"fix: b24gate portal authorize {name}")
    typer.echo("\n".join(lines))


@portal_app.command("list")
def portal_list() -> None:
    """Every portal and its state."""

    async def work(cfg: Settings) -> list[dict[str, Any]]:
        async def listing(gw: Any) -> list[dict[str, Any]]:
            return [_status(p, await gw.store.grant(p)) for p in await gw.store.portals()]

        return await _with_gateway(cfg, listing)

    for info in run(work):
        typer.echo(f"{info['name']}\t{info['domain']}\t{info['state']}")
