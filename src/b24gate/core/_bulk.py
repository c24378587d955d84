"""Many independent calls from one request, each through the dispatcher, answered in order.

The whole request is admitted before anything is sent (:func:`._admission.admit_calls`,
the checks every call passes, for every command): the method names, the caller's address,
the portal, every command's permission and the portal's state. So a key that may not call
one of the commands gets 403 and nothing runs, rather than half an import. The commands
then run concurrently, each through :meth:`Dispatcher.call <._dispatcher.Dispatcher.call>`,
which lets the portal's scheduler pack them into Bitrix24 batches of up to 50; each gets
its own result or error, in the order they came.

How many are handed to the scheduler at once (:func:`window`) decides the speed against a
slow portal: a real one takes a second or more per ``batch``, and the bucket's pace is
reached only with that many requests on their way. So the window is what the portal's
bucket takes at once plus what it drains during :data:`IN_FLIGHT`, in full requests:
the scheduler, not the window, keeps the portal's bucket from overfilling.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..bitrix import BATCH_LIMIT
from ..errors import B24GateError, RequestError
from ..store import Client, Portal
from ._dispatcher import Dispatcher

log = logging.getLogger("b24gate.calls")

MAX_COMMANDS = 10_000
# The longest a request may take at Bitrix24 with the bucket's pace still reached.
IN_FLIGHT = 10.0


def window(portal: Portal) -> int:
    """The commands of one bulk request handed to the scheduler at a time: full requests
    for the whole bucket plus what it drains in :data:`IN_FLIGHT`. Small enough that the
    queue's wait stays far under the scheduler's longest (60 s at the default pace)."""
    if portal.rate <= 0:
        return MAX_COMMANDS
    return BATCH_LIMIT * (portal.burst + math.ceil(portal.rate * IN_FLIGHT))


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

    await asyncio.gather(*(worker() for _ in range(min(window(portal), len(commands)))))
    return BulkResult(portal.name, outcomes, upstream_ms)
