"""Running things: ``serve``, ``demo``, ``sandbox``, ``call`` and ``db upgrade``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from .._logs import configure as configure_logs
from ..errors import B24GateError
from ..sandbox import (
    DEFAULT_ACCESS_TTL,
    DEFAULT_BURST,
    DEFAULT_CLIENT_ID,
    DEFAULT_OPERATING_LIMIT,
    DEFAULT_RATE,
    DEFAULT_REFRESH_TTL,
    DEFAULT_REQUEST_TIME_LIMIT,
    DEFAULT_SCOPE,
    SandboxConfig,
    new_secret,
)
from ..sandbox import run as run_sandbox
from ..settings import Settings
from ._base import _read_secret, _with_gateway, app, db_app, fail, run, settings, usage


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
    operating_limit: Annotated[
        float, typer.Option(help="Operating time per method in 10 minutes, s.", min=0)
    ] = DEFAULT_OPERATING_LIMIT,
    latency: Annotated[
        float,
        typer.Option(help="Server time added once per REST request (a batch is one), s.", min=0),
    ] = 0.0,
    latency_per_command: Annotated[
        float, typer.Option(help="Server time added per method run, in a batch or not, s.", min=0)
    ] = 0.0,
    latency_per_page: Annotated[
        float, typer.Option(help="Server time added per page of a *.list method, s.", min=0)
    ] = 0.0,
    request_time_limit: Annotated[
        float,
        typer.Option(help="Cut a REST request off after this many seconds; 0 = never.", min=0),
    ] = DEFAULT_REQUEST_TIME_LIMIT,
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
        operating_limit=operating_limit,
        latency_request=latency,
        latency_command=latency_per_command,
        latency_page=latency_per_page,
        request_time_limit=request_time_limit,
    )
    if member_id:
        config = dataclasses.replace(config, member_id=member_id)
    try:
        run_sandbox(config)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


@app.command("call")
def call_command(
    portal: str,
    method: str,
    params: Annotated[str, typer.Argument(help="JSON object of parameters.")] = "{}",
) -> None:
    """One call from the shell, through the same entrance as a client's: it waits its turn
    in the portal's request budget; prints Bitrix24's answer."""
    from ..core import Gateway, operator_call

    try:
        parsed = json.loads(params)
    except ValueError:
        raise typer.BadParameter("not JSON", param_hint="JSON") from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="JSON")

    async def work(cfg: Settings) -> dict[str, Any]:
        async def call(gw: Gateway) -> dict[str, Any]:
            # The administrator as a client allowed every method of this portal only;
            # admission refuses a malformed method name before anything is sent.
            with usage():
                return await operator_call(gw.dispatcher, portal, method, parsed)

        return await _with_gateway(cfg, call)

    typer.echo(json.dumps(run(work), ensure_ascii=False))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (the gateway also does this at start)."""

    async def work(cfg: Settings) -> None:
        await _with_gateway(cfg, _noop)

    run(work)
    typer.echo("database is up to date", err=True)


async def _noop(gw: object) -> None:
    return None


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
    configure_logs(cfg.log_level, cfg.log_format)
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

    from .._http_server import server_config
    from ..api import create_app
    from ..core import Gateway

    gateway = await Gateway.open(cfg)
    try:
        gateway.start_background()
        config = server_config(
            create_app(cfg, gateway, close_gateway=True),
            host,
            port,
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
    from .._demo import run_demo

    try:
        cfg = settings()
        if "B24GATE_PUBLIC_URL" not in os.environ:
            cfg = cfg.model_copy(update={"public_url": f"http://127.0.0.1:{port}"})
    except B24GateError as exc:
        fail(exc.message)
    configure_logs("WARNING", cfg.log_format)
    try:
        asyncio.run(run_demo(cfg, port))
    except B24GateError as exc:
        fail(exc.message)
    except KeyboardInterrupt:
        pass
