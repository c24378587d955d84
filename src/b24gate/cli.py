"""The ``b24gate`` command.

Results go alone to stdout, everything else to stderr; exit codes: 0 ok, 1 error with a
one-line message, 2 usage error (DESIGN §3).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import ipaddress
import json
import logging
import logging.handlers
import os
import queue
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import typer

from .errors import B24GateError
from .sandbox import SandboxConfig
from .sandbox import run as run_sandbox
from .sandbox._config import (
    DEFAULT_ACCESS_TTL,
    DEFAULT_BURST,
    DEFAULT_CLIENT_ID,
    DEFAULT_RATE,
    DEFAULT_REFRESH_TTL,
    DEFAULT_SCOPE,
    new_secret,
)
from .settings import Settings, load_settings

T = TypeVar("T")
DEFAULT_OAUTH_URL = "https://oauth.bitrix.info"

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def fail(message: str) -> NoReturn:
    typer.echo(f"b24gate: {message}", err=True)
    raise typer.Exit(1)


def _read_secret(path: Path) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    if not value:
        fail(f"{path} is empty")
    return value


def _method_costs(values: list[str]) -> tuple[tuple[str, float], ...]:
    costs = []
    for item in values:
        method, sep, seconds = item.partition("=")
        try:
            cost = float(seconds)
        except ValueError:
            cost = -1.0
        if not sep or not method or cost < 0:
            raise typer.BadParameter(f"{item!r} is not METHOD=SECONDS", param_hint="--method-cost")
        costs.append((method, cost))
    return tuple(costs)


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one.", min=0, max=65535)] = 0,
    rate: Annotated[
        float, typer.Option(help="Leaky-bucket drain, requests/s; 0 = no limit.", min=0)
    ] = DEFAULT_RATE,
    burst: Annotated[int, typer.Option(help="Leaky-bucket size.", min=1)] = DEFAULT_BURST,
    access_ttl: Annotated[
        int, typer.Option(help="Access-token lifetime, s.", min=1)
    ] = DEFAULT_ACCESS_TTL,
    refresh_ttl: Annotated[
        int, typer.Option(help="Refresh-token lifetime, s.", min=1)
    ] = DEFAULT_REFRESH_TTL,
    client_id: Annotated[str, typer.Option(help="The local app's client id.")] = DEFAULT_CLIENT_ID,
    client_secret_file: Annotated[
        Path | None, typer.Option(help="File holding the app's client secret (else generated).")
    ] = None,
    redirect_uri: Annotated[
        str | None, typer.Option(help="The app's registered handler URL.")
    ] = None,
    scope: Annotated[str, typer.Option(help="Scopes the app is granted.")] = ",".join(
        DEFAULT_SCOPE
    ),
    auto_approve: Annotated[bool, typer.Option(help="Skip the consent page.")] = False,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate: serve HTTPS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for --tls-cert.")] = None,
    require_https: Annotated[
        bool,
        typer.Option(help="Answer plain-http REST calls 401 INVALID_REQUEST, as Bitrix24 does."),
    ] = False,
    seed_deals: Annotated[int, typer.Option(help="Create N deals at start.", min=0)] = 0,
    member_id: Annotated[
        str | None, typer.Option(help="The portal's member_id (else random).")
    ] = None,
    method_cost: Annotated[
        list[str] | None,
        typer.Option(help="METHOD=SECONDS of synthetic operating time per call (repeatable)."),
    ] = None,
) -> None:
    """Run the Bitrix24 emulator (portal + OAuth server); print its base URL on stdout."""
    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together", param_hint="--tls-cert")
    if client_secret_file is not None:
        secret = _read_secret(client_secret_file)
    else:
        secret = new_secret(50)
        typer.echo(f"sandbox: client secret {secret}", err=True)
    scopes = tuple(s.strip() for s in scope.split(",") if s.strip())
    config = SandboxConfig(
        host=host,
        port=port,
        rate=rate,
        burst=burst,
        access_ttl=access_ttl,
        refresh_ttl=refresh_ttl,
        client_id=client_id,
        client_secret=secret,
        redirect_uri=redirect_uri,
        scope=scopes,
        auto_approve=auto_approve,
        tls_cert=str(tls_cert) if tls_cert else None,
        tls_key=str(tls_key) if tls_key else None,
        require_https=require_https,
        seed_deals=seed_deals,
        method_costs=_method_costs(method_cost or []),
    )
    if member_id:
        config = dataclasses.replace(config, member_id=member_id)
    try:
        run_sandbox(config)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


portal_app = typer.Typer(no_args_is_help=True, help="Register, connect and inspect portals.")
client_app = typer.Typer(no_args_is_help=True, help="Client API keys.")
db_app = typer.Typer(no_args_is_help=True, help="The database.")
app.add_typer(portal_app, name="portal")
app.add_typer(client_app, name="client")
app.add_typer(db_app, name="db")

_state: dict[str, Path | None] = {"config": None}


@app.callback()
def _root(
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file (or B24GATE_CONFIG).")
    ] = None,
) -> None:
    """b24gate: an OAuth 2.0 gateway between 1C (or any client) and Bitrix24."""
    _state["config"] = config


def settings() -> Settings:
    return load_settings(_state["config"])


def run(work: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """Run one async command; a known error becomes one line on stderr and exit 1."""
    try:
        return asyncio.run(work(settings()))
    except B24GateError as exc:
        fail(exc.message)


async def _with_gateway(cfg: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from .core import Gateway

    gateway = await Gateway.open(cfg)
    try:
        return await work(gateway)
    finally:
        await gateway.close()


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
    from .bitrix import parse_webhook_url

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
    from .store import NewPortal, StoreConflict

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
    from .store import StoreConflict

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
    from .core import new_key
    from .store import StoreConflict

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


@app.command("call")
def call_command(
    portal: str,
    method: str,
    params: Annotated[str, typer.Argument(help="JSON object of parameters.")] = "{}",
) -> None:
    """One call from the shell, through the same core; prints Bitrix24's answer."""
    from .bitrix import valid_method
    from .core import fix_for
    from .errors import NeedsAuthorization

    try:
        parsed = json.loads(params)
    except ValueError:
        raise typer.BadParameter("not JSON", param_hint="JSON") from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="JSON")
    if not valid_method(method):
        raise typer.BadParameter("not a Bitrix24 method name", param_hint="METHOD")

    async def work(cfg: Settings) -> Any:
        async def forward(gw: Any) -> Any:
            record = await gw.store.portal(portal)
            if record is None:
                fail(f"no portal {portal!r}; see `b24gate portal list`")
            if record.state != "connected":
                raise NeedsAuthorization(
                    record.name,
                    record.state_reason or "the portal was never connected",
                    fix=fix_for(record),
                )
            return await gw.dispatcher.forward(record, method, parsed)

        return await _with_gateway(cfg, forward)

    typer.echo(json.dumps(run(work), ensure_ascii=False))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (the gateway also does this at start)."""

    async def work(cfg: Settings) -> None:
        await _with_gateway(cfg, _noop)

    run(work)
    typer.echo("database is up to date", err=True)


async def _noop(gw: Any) -> None:
    return None


class _Handoff(logging.handlers.QueueHandler):
    """Hands records to the writer thread with their message merged, and nothing more: the
    line itself (time stamp and all) is formatted in that thread, off the event loop."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info:
            prepared: logging.LogRecord = super().prepare(record)  # render the traceback now
            return prepared
        record.msg = record.getMessage()
        record.args = None
        return record


def _logging(level: str) -> None:
    """Log lines to stderr from a thread of their own: the event loop never waits on a write."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, handler)
    listener.start()
    atexit.register(listener.stop)
    root = logging.getLogger()
    root.addHandler(_Handoff(records))
    root.setLevel(level.upper())
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # Alembic's "Context impl SQLiteImpl." chatter on every start would precede a start-up
    # error (a foreign master key), which DESIGN §3 wants as one line on stderr.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.", min=0, max=65535)] = 8080,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate (chain): serve HTTPS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for --tls-cert.")] = None,
) -> None:
    """Run the gateway."""
    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together", param_hint="--tls-cert")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise typer.BadParameter(f"{path} is not a file", param_hint="--tls-cert/--tls-key")
    try:
        cfg = settings()
    except B24GateError as exc:
        fail(exc.message)
    _logging(cfg.log_level)
    tls = (str(tls_cert), str(tls_key)) if tls_cert and tls_key else None
    try:
        _event_loop_run(_serve(cfg, host, port, tls))
    except B24GateError as exc:
        fail(exc.message)
    except KeyboardInterrupt:
        pass


def _event_loop_run(work: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(work)
    else:
        uvloop.run(work)


async def _serve(cfg: Settings, host: str, port: int, tls: tuple[str, str] | None) -> None:
    """Open the store first, so a bad key or database is one clear line, not a traceback."""
    import uvicorn

    from .api import create_app
    from .core import Gateway

    gateway = await Gateway.open(cfg)
    try:
        gateway.start_background()
        config = uvicorn.Config(
            create_app(cfg, gateway, close_gateway=True),
            host=host,
            port=port,
            access_log=False,
            log_config=None,
            server_header=False,
            lifespan="on",
            ssl_certfile=tls[0] if tls else None,
            ssl_keyfile=tls[1] if tls else None,
        )
        server = uvicorn.Server(config)
        # uvicorn re-raises SIGTERM once it has shut down, which ends the process before the
        # log writer thread has written the last lines; stop it ourselves and return instead.
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.handle_exit, sig, None)
        await server.serve()
        if not server.started:
            raise B24GateError(f"the gateway could not listen on {host}:{port}")
    finally:
        await gateway.close()


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="The gateway's port.", min=1, max=65535)] = 8080,
) -> None:
    """Run the sandbox and the gateway together, connected; print a curl and a 1C snippet."""
    from ._demo import run_demo

    try:
        cfg = settings()
        if "B24GATE_PUBLIC_URL" not in os.environ:
            cfg = cfg.model_copy(update={"public_url": f"http://127.0.0.1:{port}"})
    except B24GateError as exc:
        fail(exc.message)
    _logging("WARNING")
    try:
        asyncio.run(run_demo(cfg, port))
    except B24GateError as exc:
        fail(exc.message)
    except KeyboardInterrupt:
        pass


def main() -> None:
    sys.exit(app())
