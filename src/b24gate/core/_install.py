"""The application's install and uninstall events: a reinstall refreshes a connected
portal's grant, uninstalling the app disconnects the portal.

``ONAPPINSTALL`` (and the "uses only API" installation callback, which carries the same
``auth`` block) brings an access and a refresh token. Anyone can post one, and a
marketplace app has one client id on every portal, whose central OAuth server vouches for
the tokens of all of them. So nothing the request says about itself is trusted:

- its domain only picks which registered portals to consider;
- its ``member_id`` is required and must be the portal's; a portal that has none yet
  (never connected) takes an event only if the administrator allowed it
  (``portal add/set --connect-by-install``), else only ``portal authorize`` connects it;
- the token is shown to ``app.info`` at the portal's registered OAuth server, which names
  the application, and then at the portal's own REST base (its registered URL, or where
  its OAuth server said it moved; never an address the event names), which accepts only
  its own portal's tokens: another portal's token, vouched for by the shared OAuth server,
  is refused there.

``ONAPPUNINSTALL`` carries no usable token; its ``application_token``, compared with the
one kept from the install, is its only proof (docs/protocol.md §2.4, §2.5). An administrator's
authorization forgets that token (:mod:`._connect`), so that a planted one cannot later
disconnect the portal.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from ..bitrix import OAuthClient, RestClient
from ..errors import (
    BitrixError,
    EventRefused,
    EventUnverifiable,
    OAuthError,
    OAuthUnavailable,
    OperationTimeLimit,
    QueryLimitExceeded,
    RequestError,
    UnknownEvent,
    UpstreamError,
)
from ..store import Grant, Portal, Store
from ._forward import rest_base
from ._hosts import host_of
from ._tokens import TokenManager, acceptable_endpoint

log = logging.getLogger("b24gate.install")

UNINSTALLED = "the application was uninstalled"
_MEMBER_ID = re.compile(r"[A-Za-z0-9]{1,64}")
_DEFAULT_TTL = 3600.0


def _shown(value: Any) -> str:
    """A value the request sent, safe for a log line: quoted and cut short."""
    return repr(str(value)[:80])


def _known_hosts(portal: Portal) -> set[str]:
    hosts = {portal.domain}
    if portal.client_endpoint:
        hosts.add(host_of(portal.client_endpoint))
    return hosts


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value else None
    except ValueError:
        return None
    return number if number is not None and number > 0 else None


def auth_block(fields: Mapping[str, Any]) -> dict[str, str]:
    """The event's ``auth`` fields as strings (a form sends strings, JSON may send numbers)."""
    auth = fields.get("auth")
    if not isinstance(auth, Mapping):
        raise RequestError("not an application event: the `auth` block is missing")
    return {
        str(key): str(value)
        for key, value in auth.items()
        if isinstance(value, str | int | float) and not isinstance(value, bool)
    }


class Installer:
    """Verifies and applies the app's install and uninstall events."""

    def __init__(
        self,
        store: Store,
        oauth: OAuthClient,
        tokens: TokenManager,
        rest: RestClient,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._oauth = oauth
        self._tokens = tokens
        self._rest = rest
        self._clock = clock

    async def handle(self, fields: Mapping[str, Any]) -> str:
        """Apply one event (the request's fields, PHP brackets already nested); the name of
        the portal it changed. Raises :class:`EventRefused`, :class:`EventUnverifiable` or
        :class:`RequestError`, having changed nothing."""
        event = fields.get("event")
        # The installation callback of a "uses only API" app may come without `event`.
        name = event.upper() if isinstance(event, str) and event else "ONAPPINSTALL"
        auth = auth_block(fields)
        if name == "ONAPPINSTALL":
            return await self.install(auth)
        if name == "ONAPPUNINSTALL":
            return await self.uninstall(auth)
        raise UnknownEvent(f"the event {name[:40]!r} is not handled here")

    # -- install ---------------------------------------------------------------------------

    async def install(self, auth: Mapping[str, str]) -> str:
        access, refresh = auth.get("access_token", ""), auth.get("refresh_token", "")
        if not access or not refresh:
            raise RequestError("an install event carries an access and a refresh token")
        domain = host_of(auth.get("domain"))
        member_id = auth.get("member_id", "")
        if not member_id:
            _refuse(f"an install event for {_shown(domain)} without a member_id")
        if not _MEMBER_ID.fullmatch(member_id):
            _refuse(f"the member_id {_shown(member_id)} is malformed")
        # The claimed domain only narrows which registered portals, and so which trusted
        # OAuth servers and REST bases, are asked; the decision is theirs.
        candidates = [
            p
            for p in await self._store.portals()
            if p.kind == "oauth" and domain in _known_hosts(p)
        ]
        if not candidates:
            _refuse(f"no OAuth portal is registered for the domain {_shown(domain)}")
        # Decided before anything is asked upstream, so that a forger costs no request.
        reasons = {p.name: _inadmissible(p, member_id) for p in candidates}
        admissible = [p for p in candidates if reasons[p.name] is None]
        if not admissible:
            first = candidates[0]
            _refuse(reasons[first.name] or "", first)
        server, info = await self._app_info(admissible, access)
        code = info.get("CODE")
        portal = next(
            (p for p in admissible if p.client_id == code and p.oauth_url == server), None
        )
        if portal is None:
            _refuse(
                f"the token belongs to the application {_shown(code)}, which is not the client "
                f"id of the portal registered for {_shown(domain)}"
            )
        await self._verify_at_portal(portal, access)
        now = self._clock()
        expires = _number(auth.get("expires"))
        if expires is None:
            expires = now + (_number(auth.get("expires_in")) or _DEFAULT_TTL)
        user_id = auth.get("user_id", "")
        scope = auth.get("scope") or None
        application_token = auth.get("application_token") or None
        await self._tokens.replace(
            portal,
            Grant(
                access_token=access,
                refresh_token=refresh,
                access_expires_at=expires,
                refresh_obtained_at=now,
                user_id=int(user_id) if user_id.isdigit() else None,
                # The event's server_endpoint is never stored: the grant is refreshed at the
                # portal's registered OAuth server until a token response says otherwise.
                server_endpoint=None,
            ),
            member_id=member_id if not portal.member_id else None,
            client_endpoint=self._client_endpoint(portal, auth.get("client_endpoint")),
            granted_scope=scope if scope is None or len(scope) <= 512 else None,
            application_token=application_token if application_token else None,
        )
        log.info(
            "portal=%s connected by the application's install event (member_id %s)",
            portal.name,
            member_id,
        )
        return portal.name

    async def _verify_at_portal(self, portal: Portal, access: str) -> None:
        """Show the token to ``app.info`` at the portal's own REST base. The shared OAuth
        server vouches for a token of any portal the app is installed on; the portal accepts
        only its own, and names the application the token was issued to."""
        try:
            answer = await self._rest.call(
                rest_base(portal), "app.info", {}, auth=access, write=False
            )
        except (UpstreamError, QueryLimitExceeded, OperationTimeLimit) as exc:
            log.warning(
                "portal=%s install event not verified: the portal did not answer app.info (%s)",
                portal.name,
                exc.code,
            )
            raise EventUnverifiable() from None
        except BitrixError as exc:
            _refuse(
                f"the portal's own REST refused the event's token ({_shown(exc.error)})", portal
            )
        result = answer.get("result")
        code = result.get("CODE") if isinstance(result, Mapping) else None
        if code != portal.client_id:
            _refuse(
                f"the portal's own app.info names the application {_shown(code)}, not the "
                "portal's client id",
                portal,
            )

    async def _app_info(self, candidates: list[Portal], access: str) -> tuple[str, dict[str, Any]]:
        """Ask the candidates' OAuth servers in turn; the first that knows the token answers."""
        servers = list(dict.fromkeys(p.oauth_url for p in candidates))
        unavailable = False
        for server in servers:
            try:
                return server, await self._oauth.app_info(server, access)
            except OAuthUnavailable as exc:
                unavailable = True
                log.warning("install event: app.info could not be asked (%s)", exc.error)
            except OAuthError as exc:
                log.info("install event: app.info refused the token (%s)", exc.error)
        if unavailable:
            log.warning("install event not verified: the OAuth server did not answer")
            raise EventUnverifiable()
        _refuse("the OAuth server does not know the event's access token")

    @staticmethod
    def _client_endpoint(portal: Portal, claimed: str | None) -> str | None:
        """The event's ``client_endpoint``, only when it is https (http only for a portal on
        loopback, the sandbox) on the portal's registered host: the REST base decides where
        tokens are sent, app.info does not vouch for it, so an event may not move a portal.
        A portal that really moved is found through its OAuth server on the next refresh
        (docs/design.md §5.2)."""
        endpoint = acceptable_endpoint(claimed, portal)
        if endpoint is None or len(endpoint) > 512 or host_of(endpoint) != portal.domain:
            if claimed:
                log.info("portal=%s: the event's client_endpoint was not taken", portal.name)
            return None
        return endpoint

    # -- uninstall -------------------------------------------------------------------------

    async def uninstall(self, auth: Mapping[str, str]) -> str:
        token = auth.get("application_token", "")
        member_id = auth.get("member_id", "")
        domain = host_of(auth.get("domain"))
        if not token:
            _refuse("an uninstall event without an application_token")
        candidates = [
            p
            for p in await self._store.portals()
            if p.kind == "oauth"
            and ((member_id and p.member_id == member_id) or (domain and domain in _known_hosts(p)))
            # An event that names another Bitrix24 than the portal's is not this portal's.
            and not (member_id and p.member_id and p.member_id != member_id)
        ]
        # Every candidate is compared, in constant time, whatever the first one gave.
        matched = [
            p
            for p in candidates
            if hmac.compare_digest((p.application_token or "").encode(), token.encode())
            and p.application_token
        ]
        if not matched:
            _refuse(
                f"no portal for member_id {_shown(member_id)} / domain {_shown(domain)} "
                "holds the event's application_token"
            )
        for portal in matched:
            await self._tokens.erase(portal, UNINSTALLED)
            log.warning("portal=%s disconnected: %s", portal.name, UNINSTALLED)
        return matched[0].name


def _inadmissible(portal: Portal, member_id: str) -> str | None:
    """Why an install event naming ``member_id`` may not change ``portal``; None if it may.

    app.info does not name a portal's member_id, so the event's must agree with the one the
    portal was connected with: another one is another Bitrix24, which takes an administrator
    (`portal authorize --force`), never an event. A portal never connected has none to
    compare; only the administrator's opt-in lets an event connect it.
    """
    if portal.member_id:
        if member_id != portal.member_id:
            return (
                f"the event names member_id {_shown(member_id)}, not the portal's "
                f"{portal.member_id}"
            )
        return None
    if not portal.connect_by_install:
        return (
            "the portal was never connected and install events may not connect it: run "
            f"`b24gate portal authorize {portal.name}`, or allow it with "
            f"`b24gate portal set {portal.name} --connect-by-install`"
        )
    return None


def _refuse(reason: str, portal: Portal | None = None) -> NoReturn:
    where = f"portal={portal.name} " if portal else ""
    log.warning("%sapplication event refused: %s", where, reason)
    raise EventRefused()
