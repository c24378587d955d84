"""The one entrance for a call to a portal: admit it, hold it for Bitrix24's operating time,
wait its turn in the portal's budget, forward it.

Every path comes through :meth:`Dispatcher.call`: ``/api/v1/call``, the Bitrix24-shaped
``/rest/`` surface, each command of ``/api/v1/batch`` (:mod:`._bulk`), each request of an
``/api/v1/list`` export (:mod:`._export`) and the shell's ``b24gate call``
(:func:`._admin.operator_call`). The jobs themselves live in their own modules:

- admission, portal resolution included: :mod:`._admission`;
- Bitrix24's operating-time budget: :mod:`._operating`;
- the portal's request budget, calls packed into batches: :mod:`._scheduler`;
- webhook or OAuth, token refresh, safe retries, domain moves: :mod:`._forward`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import OperationTimeLimit, RateLimited
from ..store import Client, ReadCache
from ._activity import CALL_PORTAL
from ._admission import Admitted, Entrance, admit_calls
from ._forward import Forwarder
from ._operating import OperatingBudget
from ._scheduler import Scheduler, SendHook


@dataclass
class CallResult:
    body: dict[str, Any]
    portal: str
    upstream_ms: float
    # For a `batch`: the 429 of each command Bitrix24 blocked for its operating time, by key.
    blocked: Mapping[str, RateLimited] = field(default_factory=dict)


class Dispatcher:
    def __init__(
        self,
        reads: ReadCache,
        forwarder: Forwarder,
        scheduler: Scheduler,
        operating: OperatingBudget,
    ) -> None:
        # Portals are read through the cache the HTTP surface refreshes once per call.
        self._reads = reads
        self._forwarder = forwarder
        self._scheduler = scheduler
        self._operating = operating

    @property
    def operating(self) -> OperatingBudget:
        """Bitrix24's operating-time budget as this process follows it (the admin page)."""
        return self._operating

    async def admit(
        self,
        client: Client,
        calls: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        portal_name: str | None = None,
        domain: str | None = None,
        address: str | None = None,
        entrance: Entrance = "call",
    ) -> Admitted:
        """:func:`~._admission.admit_calls` against the portals this dispatcher reads: for a
        request that must be admitted as a whole before any of its calls runs."""
        return await admit_calls(
            self._reads,
            client,
            calls,
            portal_name=portal_name,
            domain=domain,
            address=address,
            entrance=entrance,
        )

    async def call(
        self,
        client: Client,
        method: str,
        params: Mapping[str, Any],
        *,
        portal_name: str | None = None,
        domain: str | None = None,
        address: str | None = None,
        v3: bool = False,
        on_send: SendHook | None = None,
        queue: str | None = None,
    ) -> CallResult:
        """One call as ``client``. ``v3``: a REST 3.0 method (``/rest/api/…``), which goes
        alone after booking its slot of the portal's budget. ``on_send``: awaited right
        before the request carrying the call leaves; when it fails, nothing is sent.
        ``queue``: the scheduler's queue the call waits in (the client's name by default;
        a job's commands wait in a queue of their own, served in turn with the client's
        interactive calls rather than ahead of them).

        What is forwarded is what was checked: a ``batch`` goes on rebuilt from the commands
        its key was checked against. REST 3.0's own batch is refused (:mod:`._admission`).
        """
        CALL_PORTAL.set(portal_name or domain)
        admitted = await self.admit(
            client,
            [(method, params)],
            portal_name=portal_name,
            domain=domain,
            address=address,
            entrance="rest3" if v3 else "call",
        )
        portal, params = admitted.portal, admitted.params[0]
        CALL_PORTAL.set(portal.name)
        await self._operating.hold(portal, method)
        started = time.perf_counter()
        if v3:
            await self._scheduler.book(portal)
            if on_send is not None:
                await on_send()
            body = await self._forwarder.forward(portal, method, params, v3=True)
        elif portal.rate > 0:
            try:
                body = await self._scheduler.submit(
                    portal, queue or client.name, method, params, on_send=on_send
                )
            except OperationTimeLimit as exc:  # its command, inside a batch, was blocked
                raise self._operating.blocked(portal, method, exc) from None
            # The forwarder recorded the request's `time` block for the method it was billed
            # to: the call's own, or `batch` for calls packed together (docs/protocol.md §5.2).
        else:
            if on_send is not None:
                await on_send()
            body = await self._forwarder.forward(portal, method, params)
        blocked: Mapping[str, RateLimited] = {}
        if method.lower() == "batch":
            blocked = self._operating.blocked_commands(portal, params, body)
        return CallResult(body, portal.name, (time.perf_counter() - started) * 1000, blocked)
