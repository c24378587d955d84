"""``b24gate key …``: the master key: its id, a new key, rotation (docs/security.md,
"Rotating the master key"). Key ids are printed, never key material."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import B24GateError
from ._base import app, fail, run, settings

if TYPE_CHECKING:
    from ..core import KeyRotation
    from ..settings import Settings

key_app = typer.Typer(no_args_is_help=True, help="The master key that seals secrets at rest.")
app.add_typer(key_app, name="key")

AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable.")]


def _print(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(info))
    else:
        typer.echo("\n".join(f"{k}: {v}" for k, v in info.items() if v is not None))


@key_app.command("rotate")
def key_rotate(
    new_key_file: Annotated[
        Path | None,
        typer.Option(
            help="The new key (base64, mode 0600), from `b24gate key generate`. Required "
            "when B24GATE_MASTER_KEY or B24GATE_MASTER_KEY_FILE is set; without either the "
            "new key is generated."
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Seal every secret of the store again with a new master key, in one transaction.

    Stop every `b24gate serve` first: a running process holds the old key.
    """
    from ..core import key_from_settings, rotate_master_key

    async def rotate(cfg: Settings) -> KeyRotation:
        return await rotate_master_key(cfg, new_key_file)

    done = run(rotate)
    _print(
        {
            "old_key_id": done.old_key_id,
            "new_key_id": done.new_key_id,
            "values": done.values,
            "key_file": str(done.key_file),
            "old_key_file": str(done.old_key_file) if done.old_key_file else None,
            "resumed": done.resumed,
        },
        as_json,
    )
    if done.resumed:
        typer.echo("finished a rotation that was interrupted after the store was sealed", err=True)
    if key_from_settings(settings()):
        typer.echo(
            f"the store is sealed with the key in {done.key_file}: point "
            "B24GATE_MASTER_KEY_FILE at it (or set B24GATE_MASTER_KEY to its content) "
            "before starting the gateway again",
            err=True,
        )
    else:
        typer.echo(
            f"the old key is kept in {done.old_key_file}: keep it with its backups", err=True
        )


@key_app.command("generate")
def key_generate(
    out: Annotated[Path, typer.Option(help="The file to create (mode 0600; never overwritten).")],
) -> None:
    """Write a fresh random master key (base64) to a new file; print its id."""
    from ..core import new_key_file

    try:
        typer.echo(new_key_file(out))
    except B24GateError as exc:
        fail(exc.message)


@key_app.command("id")
def key_id(as_json: AsJson = False) -> None:
    """The current master key's id and, for a key file, its age."""
    from ..core import current_key_info

    try:
        info = current_key_info(settings())
    except B24GateError as exc:
        fail(exc.message)
    age = None if info.age_seconds is None else round(info.age_seconds / 86400, 1)
    _print({"key_id": info.key_id, "source": info.source, "age_days": age}, as_json)
