"""``b24gate doctor``: the deployment's audit (core's :func:`~b24gate.core.diagnose`),
printed for a person or as JSON for monitoring; exit 1 when a finding is high."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ._base import app, run

if TYPE_CHECKING:
    from ..core import Finding, Severity


@app.command()
def doctor(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object on stdout, for monitoring.")
    ] = False,
    tls_cert: Annotated[
        list[Path] | None,
        typer.Option(help="A PEM certificate `serve --tls-cert` is given: check its expiry."),
    ] = None,
    check_url: Annotated[
        bool,
        typer.Option(
            "--check-url", help="Also connect to the public URL's host and check its certificate."
        ),
    ] = False,
) -> None:
    """Audit the deployment: file modes, the master key, the admin token, the public URL,
    trusted proxies, portals' grants, client keys, TLS certificates, the database and
    Redis. Each finding has a severity and the command that fixes it (docs/doctor.md).
    Exit 1 when a finding is high."""
    from ..core import counts, diagnose, exit_code

    findings = run(lambda cfg: diagnose(cfg, tls_certs=tls_cert or (), check_url=check_url))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "findings": [f.as_dict() for f in findings],
                    "counts": counts(findings),
                    "ok": exit_code(findings) == 0,
                },
                ensure_ascii=False,
            )
        )
    else:
        typer.echo(_text(findings, counts(findings)))
    raise typer.Exit(exit_code(findings))


def _text(findings: list[Finding], tally: dict[Severity, int]) -> str:
    lines = []
    for f in findings:
        lines += [
            f"{f.severity.upper():<7} {f.code}: {f.title}",
            f"        {f.detail}",
            f"        fix: {f.fix}",
        ]
    summary = ", ".join(f"{n} {severity}" for severity, n in tally.items())
    lines.append(f"{len(findings)} findings: {summary}" if findings else "no findings")
    return "\n".join(lines)
