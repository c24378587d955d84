"""The scheduler against the sandbox, on virtual time.

:class:`VirtualTimeLoop` is an asyncio event loop whose clock jumps to the next timer
whenever nothing is ready to run, so a load that takes 16 s at Bitrix24's rate runs in a
second or two and its timing is exact. The sandbox runs in the same loop, on a real
loopback port, and its injected clock (:class:`LoopClock`) reads the same virtual time,
so its leaky bucket drains exactly as the gateway's limiter expects: a request either fits
in the bucket or the sandbox refuses it, with no scheduling noise from the machine.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from b24gate.bitrix import RestClient
from b24gate.core import Limiter, LocalLimiter, Scheduler
from b24gate.sandbox import Clock, SandboxConfig, SandboxServer
from b24gate.store import Portal

T = TypeVar("T")

# Real seconds to wait for loopback I/O before concluding that only timers are left.
IO_GRACE = 0.01
# Real seconds without I/O, when only I/O can move the test on, before it is declared stuck.
STALL = 10.0
EPOCH = 1_800_000_000.0  # the sandbox's wall clock at virtual time 0
SCOPE = ("crm", "user")


class _JumpingSelector(selectors.DefaultSelector):
    """Waits for I/O as usual; when none comes and the loop would sleep until its next
    timer, moves the virtual clock to that timer instead."""

    def __init__(self, io_grace: float = IO_GRACE) -> None:
        super().__init__()
        self.now = 0.0
        self.awaiting_io = 0  # requests sent and not yet answered: time must not jump
        self.io_grace = io_grace

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            return super().select(0)
        ready = super().select(self.io_grace)
        if ready:
            return ready
        if timeout is None or self.awaiting_io:  # only I/O can move things on
            ready = super().select(STALL)
            if not ready:
                raise RuntimeError(f"virtual time: nothing happened for {STALL:g} real seconds")
            return ready
        self.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, io_grace: float = IO_GRACE) -> None:
        """``io_grace``: 0 for a test without loopback I/O, whose clock then jumps at once."""
        self._jumping = _JumpingSelector(io_grace)
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now

    @contextmanager
    def real_io(self) -> Iterator[None]:
        """While a request is on its way, the clock stands still however long it takes."""
        self._jumping.awaiting_io += 1
        try:
            yield
        finally:
            self._jumping.awaiting_io -= 1


def run_virtual(main: Callable[[], Awaitable[T]], *, io_grace: float = IO_GRACE) -> T:
    """Run ``main()`` to completion on a fresh :class:`VirtualTimeLoop`."""
    loop = VirtualTimeLoop(io_grace)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class LoopClock(Clock):
    """The sandbox's clock on the running loop's (virtual) time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop

    def now(self) -> float:
        return EPOCH + self._loop.time()


def a_portal(pid: int = 1, rate: float = 2, burst: int = 10) -> Portal:
    return Portal(
        id=pid,
        name=f"p{pid}",
        url="https://x.bitrix24.ru",
        domain=f"x{pid}.bitrix24.ru",
        client_id="local.1",
        client_secret="s",
        oauth_url="https://oauth.bitrix.info",
        scope="",
        token_method="POST",
        member_id=f"{pid:032x}",
        client_endpoint=None,
        granted_scope=None,
        state="connected",
        state_reason=None,
        created_at=0.0,
        updated_at=0.0,
        rate=rate,
        burst=burst,
    )


@dataclass
class Sent:
    """One request the scheduler sent: when (virtual seconds), and how many calls."""

    at: float
    calls: int


@dataclass
class Lane:
    scheduler: Scheduler
    sandbox: SandboxServer
    portal: Portal
    sent: list[Sent] = field(default_factory=list)

    async def call(self, client: str, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return await self.scheduler.submit(self.portal, client, method, params)

    @property
    def rejected(self) -> int:
        return self.sandbox.portal.counters.rejected_503


@asynccontextmanager
async def sandbox(rate: float, burst: int) -> AsyncIterator[SandboxServer]:
    """A sandbox whose bucket drains ``rate``/s from ``burst``, on the loop's time: virtual
    on a :class:`VirtualTimeLoop`, real otherwise."""
    loop = asyncio.get_running_loop()
    clock = LoopClock(loop) if isinstance(loop, VirtualTimeLoop) else Clock()
    server = SandboxServer(SandboxConfig(rate=rate, burst=burst, scope=SCOPE), clock)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def lane(
    rate: float,
    burst: int,
    latency: float = 0.0,
    *,
    upstream: SandboxServer | None = None,
    limiter: Limiter | None = None,
    **queue: Any,
) -> AsyncIterator[Lane]:
    """A scheduler for one portal, forwarding over HTTP to an incoming webhook of
    ``upstream`` (a new :func:`sandbox` by default), booking from ``limiter`` (a local one
    by default). Each answer takes ``latency`` seconds to come back (Bitrix24 running a
    batch, the network)."""
    loop = asyncio.get_running_loop()
    async with AsyncExitStack() as stack:
        server = (
            upstream
            if upstream is not None
            else await stack.enter_async_context(sandbox(rate, burst))
        )
        hook = server.portal.add_webhook(1, frozenset(SCOPE))
        base = f"{server.base_url}/rest/1/{hook.code}/"
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        stack.push_async_callback(session.close)
        rest = RestClient(session)
        sent: list[Sent] = []

        class Webhook:
            """The scheduler's upstream: the sandbox's incoming webhook, each request noted."""

            async def send(
                self, _: Portal, method: str, params: Mapping[str, Any]
            ) -> dict[str, Any]:
                sent.append(Sent(loop.time(), len(params["cmd"]) if method == "batch" else 1))
                with loop.real_io() if isinstance(loop, VirtualTimeLoop) else nullcontext():
                    answer = await rest.call(base, method, params, auth=None, write=True)
                await asyncio.sleep(latency)
                return answer

        scheduler = Scheduler(limiter or LocalLimiter(), Webhook(), **queue)
        stack.push_async_callback(scheduler.close)
        yield Lane(scheduler, server, a_portal(rate=rate, burst=burst), sent)
