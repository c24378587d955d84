"""One call from a client to a portal: resolve, authorise, get a token, forward, retry safely.

Retries happen only where they cannot duplicate a write: a connection refused before
anything was sent, a 503 ``QUERY_LIMIT_EXCEEDED`` (Bitrix24 did not execute the call),
and a refused token after one refresh. A timeout after sending is never retried for a
write: the client gets ``upstream_outcome_unknown``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import stamina

from ..bitrix import INVALID_BATCH, RestClient, is_read, parse_batch, valid_method
from ..bitrix._batch import as_map, command_error
from ..errors import (
    CredentialsRejected,
    NeedsAuthorization,
    OperationTimeLimit,
    PortalMoved,
    QueryLimitExceeded,
    RateLimited,
    RequestError,
    TokenRejected,
    UnknownPortal,
    UpstreamUnreachable,
)
from ..store import Client, Portal, ReadCache, Store
from ._access import admit, check_address
from ._hosts import host_of
from ._limiter import Limiter, LocalLimiter
from ._scheduler import Plan, Scheduler, budget_key
from ._tokens import TokenManager
from ._webhook import fix_for, webhook_base, webhook_moved, webhook_refused

log = logging.getLogger("b24gate.calls")


# Bitrix24 blocks a method whose operating time passes 480 s in 10 minutes; near that, wait.
OPERATING_LIMIT = 480.0
OPERATING_MARGIN = 20.0
# How long a block lasts when Bitrix24 does not say (`operating_reset_at` is missing).
OPERATING_WAIT = 60.0


@dataclass(frozen=True)
class QueuePolicy:
    """The per-portal queue: the longest wait before 429, how many calls may wait."""

    max_wait: float = 60.0
    limit: int = 10_000
    not_batched: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RetryPolicy:
    # Bitrix24 asks clients to back off at least 0.5 s after QUERY_LIMIT_EXCEEDED.
    limit_attempts: int = 6
    limit_wait: float = 0.5
    limit_wait_max: float = 4.0


@dataclass
class CallResult:
    body: dict[str, Any]
    portal: str
    upstream_ms: float


def rest_base(portal: Portal) -> str:
    """The portal's REST base: the OAuth server's ``client_endpoint`` for a moved portal."""
    if portal.client_endpoint:
        return (
            portal.client_endpoint
            if portal.client_endpoint.endswith("/")
            else portal.client_endpoint + "/"
        )
    return portal.url.rstrip("/") + "/rest/"


class Dispatcher:
    def __init__(
        self,
        store: Store,
        tokens: TokenManager,
        rest: RestClient,
        retry: RetryPolicy = RetryPolicy(),
        clock: Callable[[], float] = time.time,
        reads: ReadCache | None = None,
        limiter: Limiter | None = None,
        queue: QueuePolicy = QueuePolicy(),
    ) -> None:
        self._store = store
        # Portals are read through the cache the HTTP surface refreshes once per call.
        self._reads: ReadCache = reads or ReadCache(store)
        self._tokens = tokens
        self._rest = rest
        self._retry = retry
        self._clock = clock
        # Each method's operating time and when its budget next frees up, from `time` blocks.
        self._reset_at: dict[tuple[int, str], float] = {}
        self._operating: dict[tuple[int, str], float] = {}
        self._queue = queue
        self._limiter: Limiter = limiter or LocalLimiter()
        self._scheduler = Scheduler(
            self._limiter,
            self._scheduled,
            lambda portal: Plan(portal.rate, portal.burst),
            max_wait=queue.max_wait,
            queue_limit=queue.limit,
            not_batched=queue.not_batched,
            blocked=self._operating_block,
        )

    async def resolve(self, client: Client, name: str | None, domain: str | None) -> Portal:
        """The portal a call names (by name or registered domain), or the client's only one."""
        if name is not None:
            portal = await self._reads.portal(name)
        elif domain is not None:
            host = host_of(domain)
            portal = await self._reads.portal_by_domain(host) or await self._moved_to(host)
        elif len(client.portals) == 1:
            portal = await self._reads.portal(client.portals[0])
        else:
            raise RequestError("`portal` is required: this key may use several portals")
        if portal is None or portal.name not in client.portals:
            # One answer for a portal that does not exist and one this key may not use, so
            # that a key cannot learn which other portals the gateway serves.
            raise UnknownPortal(f"no portal {name or domain!r} is registered")
        return portal

    async def _moved_to(self, host: str) -> Portal | None:
        """A portal whose OAuth server named ``host`` as its new address (a moved portal)."""
        for portal in await self._reads.portals():
            if host and host_of(portal.client_endpoint) == host:
                return portal
        return None

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
    ) -> CallResult:
        """One call as ``client``. ``v3``: a REST 3.0 method (``/rest/api/…``), which goes
        alone after booking its slot of the portal's budget.

        What is forwarded is what was checked: a ``batch`` goes on rebuilt from the commands
        its key was checked against (:func:`._access.admit`). REST 3.0's own batch is
        refused: its commands are objects in a shape of its own that the gateway does not
        read, so it could not say which methods would run.
        """
        if not valid_method(method):
            raise RequestError(
                f"{method[:80]!r} is not a Bitrix24 method name", code="invalid_method"
            )
        if v3 and method.lower() == "batch":
            raise RequestError(
                "REST 3.0's batch is not passed through (its commands cannot be checked "
                "against the key's methods); send REST 1's batch to /rest/batch",
                code=INVALID_BATCH,
            )
        check_address(client.ips, address)
        portal = await self.resolve(client, portal_name, domain)
        params = admit(client.methods, method, params)
        if portal.state != "connected":
            raise NeedsAuthorization(
                portal.name,
                portal.state_reason or "the portal was never connected",
                fix=fix_for(portal),
            )
        await self._hold_for_operating_time(portal, method)
        started = time.perf_counter()
        if v3:
            await self._book_slot(portal)
            body = await self.forward(portal, method, params, v3=True)
        elif portal.rate > 0:
            try:
                body = await self._scheduler.submit(portal, client.name, method, params)
            except OperationTimeLimit as exc:  # its command, inside a batch, was blocked
                raise self._blocked(portal, method, exc) from None
            # A call packed into a batch brings its own command's `time` block.
            self._remember_reset(portal, method, body)
        else:
            body = await self.forward(portal, method, params)
        if method.lower() == "batch":
            self._remember_commands(portal, params, body)
        return CallResult(body, portal.name, (time.perf_counter() - started) * 1000)

    async def _book_slot(self, portal: Portal) -> None:
        if portal.rate <= 0:
            return
        wait = await self._limiter.reserve(
            budget_key(portal), portal.rate, portal.burst, self._queue.max_wait
        )
        if wait is None:
            raise RateLimited(f"portal {portal.name!r} is busy", self._queue.max_wait)
        if wait:
            await asyncio.sleep(wait)

    async def close(self) -> None:
        await self._scheduler.close()
        await self._limiter.close()

    def _operating_block(self, portal: Portal, method: str) -> RateLimited | None:
        """The 429 for ``method`` while it is at or near Bitrix24's operating-time budget
        (``retry_after``: until part of it frees up); None when it may run now."""
        key = (portal.id, method.lower())
        if self._operating.get(key, 0.0) < OPERATING_LIMIT - OPERATING_MARGIN:
            return None
        wait = self._reset_at.get(key, 0.0) - self._clock()
        if wait <= 0:
            self._operating.pop(key, None)
            return None
        return RateLimited(
            f"{method} is near Bitrix24's operating-time limit", wait, operation_time=True
        )

    async def _hold_for_operating_time(self, portal: Portal, method: str) -> None:
        """A method near Bitrix24's operating-time budget waits until part of it frees up,
        rather than being blocked (OPERATION_TIME_LIMIT) for every application."""
        blocked = self._operating_block(portal, method)
        if blocked is None:
            return
        if blocked.retry_after > self._queue.max_wait:
            raise blocked
        await asyncio.sleep(blocked.retry_after)

    async def _scheduled(
        self, portal: Portal, method: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self.forward(portal, method, params, scheduled=True)

    async def _forward(
        self,
        portal: Portal,
        method: str,
        params: Mapping[str, Any],
        scheduled: bool = False,
        v3: bool = False,
    ) -> dict[str, Any]:
        write = not is_read(method, params)
        retryable = _unsent if scheduled else _retryable
        once: Callable[[], Awaitable[dict[str, Any]]]
        if portal.kind == "webhook":
            # An incoming webhook: its own URL, no token, never a refresh.
            base = webhook_base(portal)

            async def once() -> dict[str, Any]:
                try:
                    return await self._rest.call(
                        base, method, params, auth=None, write=write, v3=v3
                    )
                except (CredentialsRejected, TokenRejected) as exc:
                    raise await webhook_refused(self._store, portal, exc) from None
                except PortalMoved as moved:
                    raise webhook_moved(portal, moved) from None

        else:
            grant = await self._tokens.current(portal)
            refreshed = False

            async def once() -> dict[str, Any]:
                nonlocal grant, refreshed
                try:
                    return await self._rest.call(
                        rest_base(portal),
                        method,
                        params,
                        auth=grant.access_token,
                        write=write,
                        v3=v3,
                    )
                except TokenRejected:
                    if refreshed:
                        raise
                    refreshed = True
                    grant = await self._tokens.refresh(
                        portal, grant.access_token, reason="token refused"
                    )
                    return await self._rest.call(
                        rest_base(portal),
                        method,
                        params,
                        auth=grant.access_token,
                        write=write,
                        v3=v3,
                    )

        try:
            try:
                # The common case pays nothing for the retry machinery.
                body = await once()
            except Exception as exc:
                if not retryable(exc):
                    raise
                body = await self._retrying(once, retryable)
        except OperationTimeLimit as exc:
            raise self._blocked(portal, method, exc) from None
        self._remember_reset(portal, method, body)
        return body

    def _blocked(self, portal: Portal, method: str, exc: OperationTimeLimit) -> RateLimited:
        """Bitrix24 blocked ``method`` for its operating time: the client's 429, and until
        the block lifts further calls to the method wait here (or get 429) rather than
        reaching Bitrix24."""
        key = (portal.id, method.lower())
        now = self._clock()
        reset_at = exc.reset_at or self._reset_at.get(key)
        if reset_at is None or reset_at <= now:
            reset_at = now + OPERATING_WAIT  # Bitrix24 did not say (a command of a batch)
        self._reset_at[key] = reset_at
        self._operating[key] = OPERATING_LIMIT
        return RateLimited(
            f"Bitrix24 blocked {method} for its operating time",
            max(1.0, reset_at - now),
            operation_time=True,
        )

    async def _retrying(
        self,
        once: Callable[[], Awaitable[dict[str, Any]]],
        retryable: Callable[[Exception], bool],
    ) -> dict[str, Any]:
        """The attempts after a first one failed in a way worth retrying, with back-off."""
        retry = self._retry
        if not stamina.is_testing():
            await asyncio.sleep(retry.limit_wait)
        async for attempt in stamina.retry_context(
            on=retryable,
            attempts=retry.limit_attempts - 1,
            wait_initial=retry.limit_wait,
            wait_max=retry.limit_wait_max,
        ):
            with attempt:
                return await once()
        raise AssertionError("unreachable: stamina re-raises the last error")

    def _remember_reset(self, portal: Portal, method: str, body: Mapping[str, Any]) -> None:
        timing = body.get("time")
        if not isinstance(timing, Mapping):
            return
        key = (portal.id, method.lower())
        operating = timing.get("operating")
        if (
            isinstance(operating, int | float)
            and self._operating.get(key, 0.0) > operating
            and self._reset_at.get(key, 0.0) > self._clock()
        ):
            # Answers of concurrent requests come back in any order: until the budget
            # frees up, the higher figure is the later one.
            return
        reset_at = timing.get("operating_reset_at")
        if isinstance(reset_at, int | float):
            self._reset_at[key] = float(reset_at)
        if isinstance(operating, int | float):
            self._operating[key] = float(operating)

    def _remember_commands(
        self, portal: Portal, params: Mapping[str, Any], body: Mapping[str, Any]
    ) -> None:
        """A ``batch`` sent as such (an export's pages, a client's own): each command's
        operating time counts for its method, and a command blocked for it blocks it."""
        try:
            commands = parse_batch(params).commands
        except RequestError:  # never for a batch that was admitted
            return
        outer = as_map(body.get("result"))
        times, errors = as_map(outer.get("result_time")), as_map(outer.get("result_error"))
        for command in commands:
            timing = times.get(command.key)
            if isinstance(timing, Mapping):
                self._remember_reset(portal, command.method, {"time": timing})
            error = command_error(errors[command.key]) if command.key in errors else None
            if isinstance(error, OperationTimeLimit):
                self._blocked(portal, command.method, error)

    async def forward(
        self,
        portal: Portal,
        method: str,
        params: Mapping[str, Any],
        *,
        scheduled: bool = False,
        v3: bool = False,
    ) -> dict[str, Any]:
        """One request to the portal. ``scheduled``: the scheduler sent it and itself handles
        QUERY_LIMIT_EXCEEDED (pause, slow down, send again); otherwise it is retried here."""
        try:
            try:
                return await self._forward(portal, method, params, scheduled, v3)
            except PortalMoved as moved:
                portal = await self._follow_move(portal, moved)
                return await self._forward(portal, method, params, scheduled, v3)
        except QueryLimitExceeded:
            if scheduled:
                raise
            # Still refused after backing off: another application is draining the bucket.
            raise RateLimited(
                "Bitrix24's request limit is exhausted; retry later", self._retry.limit_wait_max
            ) from None

    async def _follow_move(self, portal: Portal, moved: PortalMoved) -> Portal:
        """The portal redirected to another host. The redirect itself is never followed with a
        token attached: the OAuth server is asked where the portal lives now (its
        ``client_endpoint``, for the same ``member_id``), and the call is retried there once.
        """
        if portal.kind == "webhook":
            raise moved  # no OAuth server to ask: _forward has said what to do
        old_base = rest_base(portal)
        grant = await self._tokens.current(portal)
        await self._tokens.refresh(portal, grant.access_token, reason="portal moved")
        fresh = await self._store.portal(portal.name)
        if fresh is None or rest_base(fresh) == old_base:
            raise moved
        log.warning(
            "portal=%s moved from %s to %s",
            portal.name,
            urlsplit(old_base).netloc,
            urlsplit(rest_base(fresh)).netloc,
        )
        return fresh


def _unsent(exc: Exception) -> bool:
    """A request that never reached Bitrix24: always safe to send again."""
    return isinstance(exc, UpstreamUnreachable) and not exc.sent


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, QueryLimitExceeded):
        return True
    return isinstance(exc, UpstreamUnreachable) and not exc.sent
