"""One request to a portal: by its incoming webhook or with its OAuth token, retried safely.

Retries happen only where they cannot duplicate a write (docs/design.md §5.6): a
connection refused before anything was sent, a 503 ``QUERY_LIMIT_EXCEEDED`` (Bitrix24 did
not execute the call), and a refused token after one refresh. A timeout after sending is
never retried for a write: the client gets ``upstream_outcome_unknown``. A portal that
redirects elsewhere is looked up again through its OAuth server, never followed
(docs/design.md §5.2).

What reaches this module was admitted already (:mod:`._admission`) and, when the portal
has a request budget, waited its turn (:mod:`._scheduler`, which sends through
:meth:`Forwarder.send`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import stamina

from ..bitrix import RestClient, is_read, with_auth_connector
from ..errors import (
    CredentialsRejected,
    OperationTimeLimit,
    PortalMoved,
    QueryLimitExceeded,
    RateLimited,
    TokenRejected,
    UpstreamUnreachable,
)
from ..store import Portal, Store
from ._operating import OperatingBudget
from ._tokens import TokenManager
from ._webhook import webhook_base, webhook_moved, webhook_refused

log = logging.getLogger("b24gate.calls")


@dataclass(frozen=True)
class RetryPolicy:
    # Bitrix24 asks clients to back off at least 0.5 s after QUERY_LIMIT_EXCEEDED.
    limit_attempts: int = 6
    limit_wait: float = 0.5
    limit_wait_max: float = 4.0


def rest_base(portal: Portal) -> str:
    """The portal's REST base: the OAuth server's ``client_endpoint`` for a moved portal."""
    if portal.client_endpoint:
        return (
            portal.client_endpoint
            if portal.client_endpoint.endswith("/")
            else portal.client_endpoint + "/"
        )
    return portal.url.rstrip("/") + "/rest/"


class Forwarder:
    """Sends a call to its portal and hands back Bitrix24's answer, recording the operating
    time it reports in the gateway's :class:`~._operating.OperatingBudget`."""

    def __init__(
        self,
        store: Store,
        tokens: TokenManager,
        rest: RestClient,
        operating: OperatingBudget,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._rest = rest
        self._operating = operating
        self._retry = retry
        # Books a slot of the portal's request budget for a request the scheduler did not
        # book: the resend after a token refresh (the gateway sets it to Scheduler.book).
        self.book: Callable[[Portal], Awaitable[None]] | None = None

    async def forward(
        self, portal: Portal, method: str, params: Mapping[str, Any], *, v3: bool = False
    ) -> dict[str, Any]:
        """One call that goes alone, outside the scheduler's lanes. QUERY_LIMIT_EXCEEDED is
        retried here, with back-off; still refused, the client gets 429."""
        try:
            return await self._request(portal, method, params, scheduled=False, v3=v3)
        except QueryLimitExceeded:
            # Still refused after backing off: another application is draining the bucket.
            raise RateLimited(
                "Bitrix24's request limit is exhausted; retry later", self._retry.limit_wait_max
            ) from None

    async def send(self, portal: Portal, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One request from the scheduler (a call, or calls packed as a ``batch``). The
        scheduler itself handles QUERY_LIMIT_EXCEEDED (pause, slow down, send again), so it
        comes back as it is."""
        return await self._request(portal, method, params, scheduled=True, v3=False)

    async def _request(
        self, portal: Portal, method: str, params: Mapping[str, Any], *, scheduled: bool, v3: bool
    ) -> dict[str, Any]:
        if portal.auth_connector and not v3:
            # Offline event subscriptions: what the gateway writes stays out of its queue.
            params = with_auth_connector(method, params, portal.auth_connector)
        try:
            return await self._attempts(portal, method, params, scheduled, v3)
        except PortalMoved as moved:
            portal = await self._follow_move(portal, moved)
            return await self._attempts(portal, method, params, scheduled, v3)

    async def _attempts(
        self,
        portal: Portal,
        method: str,
        params: Mapping[str, Any],
        scheduled: bool,
        v3: bool,
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

            async def with_grant() -> dict[str, Any]:
                return await self._rest.call(
                    rest_base(portal), method, params, auth=grant.access_token, write=write, v3=v3
                )

            async def once() -> dict[str, Any]:
                nonlocal grant, refreshed
                try:
                    return await with_grant()
                except TokenRejected:
                    if refreshed:
                        raise
                    refreshed = True
                    grant = await self._tokens.refresh(
                        portal, grant.access_token, reason="token refused"
                    )
                    if self.book is not None:
                        await self.book(portal)  # the refused request took a slot too
                    return await with_grant()

        try:
            try:
                # The common case pays nothing for the retry machinery.
                body = await once()
            except Exception as exc:
                if not retryable(exc):
                    raise
                body = await self._retrying(once, retryable)
        except OperationTimeLimit as exc:
            raise self._operating.blocked(portal, method, exc) from None
        self._operating.record(portal, method, body)
        return body

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

    async def _follow_move(self, portal: Portal, moved: PortalMoved) -> Portal:
        """The portal redirected to another host. The redirect itself is never followed with a
        token attached: the OAuth server is asked where the portal lives now (its
        ``client_endpoint``, for the same ``member_id``), and the call is retried there once.
        """
        if portal.kind == "webhook":
            raise moved  # no OAuth server to ask: _attempts has said what to do
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
