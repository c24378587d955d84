"""The token manager: fresh access tokens per portal, one refresh at a time everywhere.

Refresh is lazy: when the access token is within ``refresh_skew`` of expiry, or when
Bitrix24 refused it. Inside the per-portal lock (an asyncio lock in this process, then the
store's cross-process lock) the stored grant is read again: if its access token is no
longer the one we saw, someone else refreshed and we use theirs. Tokens are compared, not
clocks, because Bitrix24 can expire a token early. The new refresh token is committed
before anyone uses the new access token. Every grant write (a refresh, an install event,
the connect callback, an uninstall) goes through the same locks, so none overwrites
another half-way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import stamina

from ..bitrix import OAuthClient, TokenSet, is_loopback, server_endpoint_allowed
from ..errors import GrantRevoked, NeedsAuthorization, OAuthUnavailable
from ..store import Grant, Portal, ReadCache, Store
from ._hosts import host_of

log = logging.getLogger("b24gate.tokens")

# The store's cross-process lock outlives the longest refresh (attempts x OAuth timeout).
LOCK_WAIT = 90.0
LEASE = 120.0


def oauth_server(portal: Portal, grant: Grant) -> str:
    """Where this grant is refreshed: the host of its ``server_endpoint`` when that is one of
    Bitrix24's central OAuth servers (the right region is whatever it says), else the
    portal's configured OAuth server. No other host ever gets a refresh token
    (docs/design.md §5.3).
    """
    endpoint = grant.server_endpoint
    if endpoint and server_endpoint_allowed(endpoint):
        return f"https://{urlsplit(endpoint).hostname}"
    return portal.oauth_url


def acceptable_endpoint(url: str | None, portal: Portal) -> str | None:
    """A ``client_endpoint`` the gateway may send ``portal``'s tokens to: https; plain http
    only to loopback, and only for a portal itself registered as http on loopback (the
    sandbox). A cloud portal's token never travels unencrypted, whoever names the address.
    """
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in the host
        parts = None
    if parts is not None and parts.scheme == "https" and parts.hostname:
        return url
    if _loopback_http(url) and _loopback_http(portal.url):
        return url
    log.warning(
        "portal=%s: ignoring a client_endpoint that is not https (http only for a portal "
        "registered on loopback)",
        portal.name,
    )
    return None


def _loopback_http(url: str) -> bool:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return False
    return parts.scheme == "http" and is_loopback(host)


def _note_new_host(before: Portal, endpoint: str | None) -> None:
    """Say in the log when a grant names a REST host other than the one calls went to: the
    portal moved, or something tries to send its tokens elsewhere. No secret is named."""
    if not endpoint:
        return
    old, new = host_of(before.client_endpoint or before.url), host_of(endpoint)
    if new != old:
        log.warning("portal=%s: its REST host changes from %s to %s", before.name, old, new)


def grant_of(tokens: TokenSet, obtained_at: float) -> Grant:
    """What the store keeps of a token response."""
    return Grant(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        access_expires_at=tokens.expires_at,
        refresh_obtained_at=obtained_at,
        user_id=tokens.user_id,
        server_endpoint=tokens.server_endpoint,
    )


def uses_get(portal: Portal) -> bool:
    """Whether token requests to this portal's OAuth server go by GET (a per-portal fallback)."""
    method: str = portal.token_method
    return method.upper() == "GET"


@dataclass(frozen=True)
class TokenPolicy:
    refresh_skew: float = 60.0
    keepalive_age: float = 14 * 24 * 3600.0
    attempts: int = 3


class TokenManager:
    def __init__(
        self,
        store: Store,
        oauth: OAuthClient,
        policy: TokenPolicy = TokenPolicy(),
        clock: Callable[[], float] = time.time,
        reads: ReadCache | None = None,
    ) -> None:
        self._store = store
        # The hot path's grant comes from the cache; every refresh decision re-reads the store.
        self._reads: ReadCache = reads or ReadCache(store)
        self._oauth = oauth
        self._policy = policy
        self._clock = clock
        self._locks: dict[int, asyncio.Lock] = {}

    def _lock(self, portal_id: int) -> asyncio.Lock:
        lock = self._locks.get(portal_id)
        if lock is None:
            lock = self._locks[portal_id] = asyncio.Lock()
        return lock

    def fresh(self, grant: Grant) -> bool:
        return grant.access_expires_at - self._policy.refresh_skew > self._clock()

    async def current(self, portal: Portal) -> Grant:
        """The stored grant, refreshed first if it is near expiry."""
        grant = await self._reads.grant(portal)
        if grant is None:
            raise NeedsAuthorization(
                portal.name, portal.state_reason or "the portal was never connected"
            )
        if self.fresh(grant):
            return grant
        return await self.refresh(portal, grant.access_token, reason="near expiry")

    async def refresh(self, portal: Portal, seen_token: str, *, reason: str) -> Grant:
        """Replace ``seen_token``, unless someone already has; return the grant to use."""
        async with self._lock(portal.id):
            grant = await self._store.grant(portal)
            if grant is None:
                raise NeedsAuthorization(
                    portal.name, portal.state_reason or "the portal is not connected"
                )
            if grant.access_token != seen_token:
                return grant
            async with self._store.refresh_lock(portal.id, wait=LOCK_WAIT, lease=LEASE):
                grant = await self._store.grant(portal)
                if grant is None:
                    raise NeedsAuthorization(portal.name, "the portal is not connected")
                if grant.access_token != seen_token:
                    return grant
                fresh_portal = await self._store.portal(portal.name) or portal
                return await self._refresh_locked(fresh_portal, grant, reason)

    async def replace(
        self,
        portal: Portal,
        grant: Grant,
        *,
        member_id: str | None,
        client_endpoint: str | None,
        granted_scope: str | None,
        application_token: str | None = None,
        forget_application_token: bool = False,
    ) -> Grant:
        """Store a grant that arrived without a refresh (the app's install event, the connect
        callback), under the same locks as a refresh, so that a refresh in flight can neither
        overwrite it nor mark the portal unauthorized after it was saved.

        ``forget_application_token``: an administrator authorized the portal, so no token of
        an earlier install event may later disconnect it.
        """
        async with (
            self._lock(portal.id),
            self._store.refresh_lock(portal.id, wait=LOCK_WAIT, lease=LEASE),
        ):
            _note_new_host(await self._store.portal(portal.name) or portal, client_endpoint)
            return await self._store.save_grant(
                portal,
                grant,
                member_id=member_id,
                client_endpoint=client_endpoint,
                granted_scope=granted_scope,
                application_token=application_token,
                forget_application_token=forget_application_token,
            )

    async def erase(self, portal: Portal, reason: str) -> None:
        """Forget the portal's grant and its install's application token (the app was
        uninstalled): the portal becomes ``not_connected``. Under the refresh locks, so that
        a refresh in flight cannot bring the grant back or overwrite the state."""
        async with (
            self._lock(portal.id),
            self._store.refresh_lock(portal.id, wait=LOCK_WAIT, lease=LEASE),
        ):
            await self._store.mark_portal(
                portal.name, "not_connected", reason, forget_application_token=True
            )

    async def _refresh_locked(self, portal: Portal, grant: Grant, reason: str) -> Grant:
        started = time.perf_counter()
        try:
            tokens = await self._exchange(portal, grant)
        except GrantRevoked as exc:
            why = f"{exc.error}: {exc.description}" if exc.description else exc.error
            await self._store.mark_portal(portal.name, "needs_authorization", why)
            log.warning(
                "portal=%s refresh refused (%s); the portal needs authorization",
                portal.name,
                exc.error,
            )
            raise NeedsAuthorization(portal.name, why) from None
        if portal.member_id and tokens.member_id and tokens.member_id != portal.member_id:
            why = "the OAuth server answered for another portal (member_id changed)"
            await self._store.mark_portal(portal.name, "needs_authorization", why)
            raise NeedsAuthorization(portal.name, why)
        endpoint = acceptable_endpoint(tokens.client_endpoint, portal)
        _note_new_host(portal, endpoint)
        saved = await self._store.save_grant(
            portal, grant_of(tokens, self._clock()), client_endpoint=endpoint
        )
        log.info(
            "portal=%s refreshed (%s) in %.0f ms",
            portal.name,
            reason,
            (time.perf_counter() - started) * 1000,
        )
        return saved

    async def _exchange(self, portal: Portal, grant: Grant) -> TokenSet:
        async for attempt in stamina.retry_context(
            on=OAuthUnavailable, attempts=self._policy.attempts, wait_initial=0.5, wait_max=5.0
        ):
            with attempt:
                return await self._oauth.refresh(
                    oauth_server(portal, grant),
                    portal.client_id,
                    portal.client_secret,
                    grant.refresh_token,
                    use_get=uses_get(portal),
                )
        raise AssertionError("unreachable: stamina re-raises the last error")

    async def keep_alive(self) -> int:
        """Refresh once every connected portal whose refresh token is older than the policy's age.

        A refresh token unused for long dies (180 days in the docs, less in older on-premise
        material), so a seasonal integration would otherwise lose its grant.
        """
        done = 0
        for portal in await self._store.portals():
            if portal.state != "connected" or portal.kind != "oauth":  # webhooks never expire
                continue
            grant = await self._store.grant(portal)
            if (
                grant is None
                or self._clock() - grant.refresh_obtained_at < self._policy.keepalive_age
            ):
                continue
            try:
                await self.refresh(portal, grant.access_token, reason="keep-alive")
                done += 1
            except (NeedsAuthorization, OAuthUnavailable) as exc:
                log.warning("portal=%s keep-alive refresh failed: %s", portal.name, exc.code)
        return done
