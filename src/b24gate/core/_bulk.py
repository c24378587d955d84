"""Many independent calls from one request, each through the dispatcher, answered in order.

What concerns the whole request is checked before anything is sent: the method names, the
caller's address, the portal, every command's permission and the portal's state. So a
key that may not call one of the commands gets 403 and nothing runs, rather than half an
import. The commands then run concurrently, a bounded number at a time, which lets the
portal's scheduler pack them into Bitrix24 batches of 50; each gets its own result or
error, in the order they came.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..bitrix import valid_method
from ..errors import B24GateError, Forbidden, NeedsAuthorization, RequestError
from ..store import Client
from ._access import admit, check_address
from ._dispatcher import Dispatcher
from ._webhook import fix_for

log = logging.getLogger("b24gate.calls")

MAX_COMMANDS = 10_000
# Enough calls in flight to fill a batch of 50 while the previous one is on its way.
CONCURRENCY = 50


@dataclass(frozen=True)
class Command:
    method: str
    params: Mapping[str, Any]


@dataclass
class BulkResult:
    portal: str
    # Per command, in order: Bitrix24's answer, or the error that ended the command.
    outcomes: list[dict[str, Any] | B24GateError]
    upstream_ms: float


async def run_commands(
    dispatcher: Dispatcher,
    client: Client,
    commands: Sequence[Command],
    *,
    portal_name: str | None = None,
    domain: str | None = None,
    address: str | None = None,
    concurrency: int = CONCURRENCY,
) -> BulkResult:
    if not commands:
        raise RequestError("`commands` must not be empty")
    if len(commands) > MAX_COMMANDS:
        raise RequestError(f"at most {MAX_COMMANDS} commands a request, not {len(commands)}")
    for i, command in enumerate(commands):
        if not valid_method(command.method):
            raise RequestError(
                f"commands[{i}]: {command.method[:80]!r} is not a Bitrix24 method name",
                code="invalid_method",
            )
        if command.method.lower() == "batch":
            raise RequestError(
                f"commands[{i}]: `batch` cannot be a command; for `$result` references "
                "send Bitrix24's own batch to /api/v1/call"
            )
    check_address(client.ips, address)
    portal = await dispatcher.resolve(client, portal_name, domain)
    for i, command in enumerate(commands):
        try:
            admit(client.methods, command.method, command.params)
        except Forbidden as exc:
            raise Forbidden(f"commands[{i}]: {exc.message}", code=exc.code) from None
    if portal.state != "connected":
        raise NeedsAuthorization(
            portal.name,
            portal.state_reason or "the portal was never connected",
            fix=fix_for(portal),
        )

    outcomes: list[dict[str, Any] | B24GateError] = [B24GateError("not run") for _ in commands]
    upstream_ms = 0.0
    pending = iter(enumerate(commands))

    async def worker() -> None:
        nonlocal upstream_ms
        for i, command in pending:  # shared: each command is taken by one worker
            try:
                done = await dispatcher.call(
                    client, command.method, command.params, portal_name=portal.name, address=address
                )
            except B24GateError as exc:
                outcomes[i] = exc
            except Exception:  # one command's bug must not lose the others' results
                log.exception("unexpected error in a bulk command (method=%s)", command.method)
                outcomes[i] = B24GateError("internal error; see the gateway's log")
            else:
                outcomes[i] = done.body
                upstream_ms += done.upstream_ms

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(commands)))))
    return BulkResult(portal.name, outcomes, upstream_ms)
