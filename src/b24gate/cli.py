"""The ``b24gate`` command.

Results go alone to stdout, everything else to stderr; exit codes: 0 ok, 1 error with a
one-line message, 2 usage error (DESIGN §3).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import typer

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

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def fail(message: str) -> None:
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


@app.callback()
def _root() -> None:
    """b24gate: an OAuth 2.0 gateway between 1C (or any client) and Bitrix24."""


def main() -> None:
    sys.exit(app())
