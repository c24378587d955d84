"""The ``b24gate`` command's frame: the Typer apps, settings, and running async work.

Results go alone to stdout, everything else to stderr; exit codes: 0 ok, 1 error with a
one-line message, 2 usage error (DESIGN §3).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from ..errors import B24GateError
from ..settings import Settings, load_settings

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
    from ..core import Gateway

    gateway = await Gateway.open(cfg)
    try:
        return await work(gateway)
    finally:
        await gateway.close()


def main() -> None:
    sys.exit(app())
