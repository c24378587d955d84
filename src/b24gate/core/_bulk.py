"""Many independent calls from one request, each through the dispatcher, answered in order.

The whole request is admitted before anything is sent (:func:`._admission.admit_calls`,
the checks every call passes, for every command): the method names, the caller's address,
the portal, every command's permission and the portal's state. So a key that may not call
one of the commands gets 403 and nothing runs, rather than half an import. The commands
then run concurrently, a bounded number at a time, each through :meth:`Dispatcher.call
<._dispatcher.Dispatcher.call>`, which lets the portal's scheduler pack them into Bitrix24
batches of up to 50; each gets its own result or error, in the order they came.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..bitrix import BATCH_LIMIT
from ..errors import B24GateError, RequestError
from ..store import Client
from ._dispatcher import Dispatcher

log = logging.getLogger("b24gate.calls")

MAX_COMMANDS = 10_000
# Enough calls in flight to fill a batch while the previous one is on its way.
CONCURRENCY = BATCH_LIMIT


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
    portal = (
        await dispatcher.admit(
            client,
            [(command.method, command.params) for command in commands],
            portal_name=portal_name,
            domain=domain,
            address=address,
            entrance="bulk",
        )
    ).portal

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
