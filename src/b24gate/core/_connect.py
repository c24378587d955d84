"""Connecting a portal: one-time admin tickets, the OAuth ``state``, and the callback.

``portal authorize`` makes a ticket URL; ``/oauth/start`` trades the ticket for a one-time
``state`` and sends the browser to the portal's authorize page; ``/oauth/callback`` checks
the state, that ``domain`` / ``member_id`` belong to the portal being connected, exchanges
the code (it lives 30 s) and stores the tokens under the portal's refresh lock. An
administrator's authorization also forgets the ``application_token`` of any earlier install
event, so that no such token can later disconnect the portal.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from ..bitrix import OAuthClient
from ..errors import (
    AccessDenied,
    CodeRefused,
    DomainMismatch,
    InvalidCallback,
    InvalidState,
    InvalidTicket,
    MemberMismatch,
    NotOAuth,
    OAuthError,
    UnknownPortal,
)
from ..store import Portal, Store
from ._hosts import host_of
from ._tokens import TokenManager, acceptable_endpoint, grant_of, uses_get

log = logging.getLogger("b24gate.connect")

TICKET_TTL = 15 * 60.0
STATE_TTL = 10 * 60.0


@dataclass(frozen=True)
class Connected:
    portal: str
    domain: str
    member_id: str
    scope: str
    warnings: tuple[str, ...]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Connector:
    def __init__(
        self,
        store: Store,
        oauth: OAuthClient,
        tokens: TokenManager,
        public_url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._oauth = oauth
        self._tokens = tokens
        self._public_url = public_url.rstrip("/")
        self._clock = clock

    @property
    def redirect_uri(self) -> str:
        return f"{self._public_url}/oauth/callback"

    async def ticket_url(self, portal: Portal, *, force: bool = False) -> str:
        if portal.kind != "oauth":
            raise NotOAuth(
                f"portal {portal.name!r} calls an incoming webhook and needs no authorization; "
                f"to replace the webhook run `b24gate portal set {portal.name} "
                "--webhook-url-file FILE`"
            )
        ticket = secrets.token_urlsafe(32)
        await self._store.add_ticket(_digest(ticket), portal.id, self._clock() + TICKET_TTL, force)
        return f"{self._public_url}/oauth/start?{urlencode({'ticket': ticket})}"

    async def start(self, ticket: str) -> str:
        """Trade a ticket for the portal's authorize URL, carrying a fresh one-time state."""
        used = await self._store.use_ticket(_digest(ticket), self._clock())
        if used is None:
            raise InvalidTicket(
                "this link is unknown, used or expired: run `b24gate portal authorize` again"
            )
        portal_id, force = used
        portal = await self._portal_by_id(portal_id)
        state = secrets.token_urlsafe(32)
        await self._store.add_state(_digest(state), portal.id, self._clock() + STATE_TTL, force)
        query = urlencode(
            {"client_id": portal.client_id, "state": state, "redirect_uri": self.redirect_uri}
        )
        return f"{portal.url.rstrip('/')}/oauth/authorize/?{query}"

    async def _portal_by_id(self, portal_id: int) -> Portal:
        for portal in await self._store.portals():
            if portal.id == portal_id:
                return portal
        raise UnknownPortal("the portal of this link no longer exists")

    async def callback(self, query: Mapping[str, str]) -> Connected:
        if query.get("error"):
            raise AccessDenied(f"Bitrix24 did not grant access: {query.get('error')}")
        code, state = query.get("code"), query.get("state")
        if not code or not state:
            raise InvalidCallback("the callback lacks `code` or `state`")
        used = await self._store.use_state(_digest(state), self._clock())
        if used is None:
            raise InvalidState(
                "unknown, used or expired state: start again from `b24gate portal authorize`"
            )
        portal_id, force = used
        portal = await self._portal_by_id(portal_id)
        domain = host_of(query.get("domain", ""))
        known = {portal.domain} | (
            {host_of(portal.client_endpoint)} if portal.client_endpoint else set()
        )
        if domain not in known:
            raise DomainMismatch(
                f"the grant came from {domain or 'an unnamed portal'}, not from {portal.domain}"
            )
        member_id = query.get("member_id", "")
        if portal.member_id and member_id != portal.member_id and not force:
            raise MemberMismatch(
                f"this is another Bitrix24 (member_id {member_id}) than the one {portal.name!r} "
                "was connected to; if that is intended run "
                f"`b24gate portal authorize {portal.name} --force`"
            )
        try:
            tokens = await self._oauth.exchange_code(
                portal.oauth_url,
                portal.client_id,
                portal.client_secret,
                code,
                use_get=uses_get(portal),
            )
        except OAuthError as exc:
            raise CodeRefused(f"the OAuth server refused the code: {exc.error}") from None
        if tokens.member_id and member_id and tokens.member_id != member_id:
            raise MemberMismatch("the OAuth server answered for another portal")
        granted = query.get("scope", "")
        await self._tokens.replace(
            portal,
            grant_of(tokens, self._clock()),
            member_id=tokens.member_id or member_id,
            client_endpoint=acceptable_endpoint(tokens.client_endpoint, portal),
            granted_scope=granted,
            forget_application_token=True,
        )
        expected = {s for s in portal.scope.split(",") if s}
        missing = sorted(expected - {s for s in granted.split(",") if s})
        warnings = (f"the app card does not grant {', '.join(missing)}",) if missing else ()
        log.info("portal=%s connected (member_id %s)", portal.name, tokens.member_id or member_id)
        return Connected(portal.name, domain, tokens.member_id or member_id, granted, warnings)
