"""The ``b24gate`` command's frame: the Typer apps, settings, running async work, and how an
error becomes a message and an exit code.

Results go alone to stdout, everything else to stderr; exit codes: 0 ok, 1 error with a
one-line message, 2 usage error (docs/design.md §3). The rules themselves live in the
core (:mod:`b24gate.core`); a value it refuses before anything is changed or sent is a
usage error that names the option, any later error is one line and exit 1.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn, TypeVar

import typer

from ..errors import B24GateError, InvalidMethod, InvalidSetting, SettingField, UnknownPortal
from ..settings import Settings, load_settings

if TYPE_CHECKING:
    from ..core import Gateway

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

# The option that gives each value the core checks, for a usage error that points at it.
OPTIONS: Final[dict[SettingField, str]] = {
    "burst": "--burst",
    "client_id": "--client-id",
    "client_secret": "--client-secret-file/--client-secret-env",
    "event_names": "EVENT...",
    "events": "--events",
    "ips": "--ip",
    "methods": "--methods",
    "name": "NAME",
    "oauth_url": "--oauth-url",
    "plan": "--plan",
    "portal": "PORTAL",
    "portals": "--portal",
    "rate": "--rate",
    "token_method": "--token-method",
    "url": "--url",
    "webhook_url": "--webhook-url-file/--webhook-url-env",
}


def fail(message: str) -> NoReturn:
    typer.echo(f"b24gate: {message}", err=True)
    raise typer.Exit(1)


@contextmanager
def usage() -> Iterator[None]:
    """A value the core refuses before anything was changed or sent is a usage error
    (exit 2): a setting, or a call's method name."""
    try:
        yield
    except InvalidSetting as exc:
        raise typer.BadParameter(exc.message, param_hint=OPTIONS[exc.field]) from None
    except InvalidMethod as exc:
        raise typer.BadParameter(exc.message, param_hint="METHOD") from None


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
events_app = typer.Typer(
    no_args_is_help=True, help="Bitrix24's events: subscriptions (docs/events.md)."
)
app.add_typer(portal_app, name="portal")
app.add_typer(client_app, name="client")
app.add_typer(db_app, name="db")
app.add_typer(events_app, name="events")

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


def message(exc: B24GateError) -> str:
    """The one line an error becomes, with what to run next where the shell can help."""
    if isinstance(exc, UnknownPortal):
        return f"{exc.message}; see `b24gate portal list`"
    return exc.message


def run(work: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """Run one async command; a known error becomes one line on stderr and exit 1."""
    try:
        return asyncio.run(work(settings()))
    except B24GateError as exc:
        fail(message(exc))


async def _with_gateway(cfg: Settings, work: Callable[[Gateway], Awaitable[T]]) -> T:
    # Imported here: `b24gate --help` and usage errors need none of the core.
    from ..core import Gateway

    gateway = await Gateway.open(cfg)
    try:
        return await work(gateway)
    finally:
        await gateway.close()


def with_gateway(work: Callable[[Gateway], Awaitable[T]]) -> T:
    """Open the gateway (store, upstream session), run ``work`` with it, close it."""

    async def opened(cfg: Settings) -> T:
        return await _with_gateway(cfg, work)

    return run(opened)


def main() -> None:
    sys.exit(app())
