"""The emulated OAuth server: applications, one-time codes, rotating tokens.

Cloud-style: the portal issues codes at ``/oauth/authorize/``, the (same-process) OAuth
server exchanges them at ``/oauth/token/`` (docs/protocol.md §1). Lifetimes come from the
config and are read from the injectable clock.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from ._clock import Clock
from ._config import CODE_TTL, new_secret
from ._errors import RestError


@dataclass
class App:
    """A local application registered on the portal."""

    client_id: str
    client_secret: str = field(repr=False)
    scope: tuple[str, ...]
    redirect_uri: str | None = None
    application_token: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    installed: bool = True
    numeric_id: int = 1


@dataclass
class Grant:
    """What a token stands for: an app, a user and the granted scope."""

    client_id: str
    user_id: int
    scope: tuple[str, ...]
    expires_at: float


@dataclass
class Counters:
    grants: dict[str, int] = field(
        default_factory=lambda: {"authorization_code": 0, "refresh_token": 0}
    )
    failed_grants: int = 0


class OAuthError(RestError):
    pass


class OAuthServer:
    def __init__(self, clock: Clock, access_ttl: int, refresh_ttl: int) -> None:
        self.clock = clock
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.apps: dict[str, App] = {}
        self.codes: dict[str, Grant] = {}
        self.access: dict[str, Grant] = {}
        self.refresh: dict[str, Grant] = {}
        # A refresh token that was revoked (not merely used) answers with its own error,
        # e.g. PAYMENT_REQUIRED after the trial ended.
        self.revoked: dict[str, OAuthError] = {}
        self.issued: list[str] = []  # every secret handed out, for leak checks
        self.counters = Counters()

    # -- registration ---------------------------------------------------------------

    def register(self, app: App) -> App:
        app.numeric_id = len(self.apps) + 1
        self.apps[app.client_id] = app
        self.issued.extend([app.client_secret, app.application_token])
        return app

    def _issue(self, length: int = 32) -> str:
        value = new_secret(length)
        self.issued.append(value)
        return value

    # -- authorize ------------------------------------------------------------------

    def new_grant(self, app: App, user_id: int) -> Grant:
        return Grant(app.client_id, user_id, app.scope, self.clock.now() + CODE_TTL)

    def new_code(self, app: App, user_id: int) -> str:
        code = self._issue()
        self.codes[code] = self.new_grant(app, user_id)
        return code

    # -- token ----------------------------------------------------------------------

    def _client(self, params: dict[str, Any]) -> App:
        client_id = params.get("client_id")
        client_secret = params.get("client_secret")
        if not isinstance(client_id, str) or not isinstance(client_secret, str):
            raise OAuthError(400, "invalid_request", "client_id and client_secret are required")
        app = self.apps.get(client_id)
        if app is None or not secrets.compare_digest(app.client_secret, client_secret):
            raise OAuthError(401, "invalid_client", "Invalid client credentials")
        if not app.installed:
            raise OAuthError(401, "invalid_client", "Application not installed")
        return app

    def _grant_from(self, store: dict[str, Grant], key: Any, app: App, what: str) -> Grant:
        if not isinstance(key, str) or not key:
            raise OAuthError(400, "invalid_request", f"{what} is required")
        if key in self.revoked:
            raise self.revoked[key]
        grant = store.get(key)
        if grant is None or grant.client_id != app.client_id:
            # Another app's token is refused without spending it.
            raise OAuthError(400, "invalid_grant", f"Invalid {what}")
        del store[key]  # single use: the first valid attempt consumes it
        if grant.expires_at <= self.clock.now():
            raise OAuthError(400, "invalid_grant", f"{what} has expired")
        return grant

    def exchange(self, params: dict[str, Any]) -> Grant:
        """Check a token request and return the grant it earns; raises :class:`OAuthError`."""
        grant_type = params.get("grant_type")
        try:
            if grant_type not in ("authorization_code", "refresh_token"):
                raise OAuthError(400, "unsupported_grant_type", "grant_type is not supported")
            app = self._client(params)
            if grant_type == "authorization_code":
                grant = self._grant_from(self.codes, params.get("code"), app, "code")
            else:
                grant = self._grant_from(
                    self.refresh, params.get("refresh_token"), app, "refresh token"
                )
        except OAuthError:
            self.counters.failed_grants += 1
            raise
        self.counters.grants[str(grant_type)] += 1
        return grant

    def tokens_for(self, grant: Grant) -> tuple[str, str, float]:
        """Issue a fresh access/refresh pair for ``grant``; return them and the access expiry."""
        now = self.clock.now()
        access, refresh = self._issue(), self._issue()
        expires = now + self.access_ttl
        self.access[access] = Grant(grant.client_id, grant.user_id, grant.scope, expires)
        self.refresh[refresh] = Grant(
            grant.client_id, grant.user_id, grant.scope, now + self.refresh_ttl
        )
        return access, refresh, expires

    # -- chaos ----------------------------------------------------------------------

    def expire_access_tokens(self) -> int:
        now = self.clock.now()
        for grant in self.access.values():
            grant.expires_at = min(grant.expires_at, now)
        return len(self.access)

    def revoke_refresh_tokens(self, error: OAuthError, client_id: str | None = None) -> int:
        victims = [k for k, g in self.refresh.items() if client_id in (None, g.client_id)]
        for key in victims:
            del self.refresh[key]
            self.revoked[key] = error
        return len(victims)

    def uninstall(self, app: App) -> None:
        """All API access of ``app`` ends: its tokens stop working and cannot be refreshed."""
        app.installed = False
        for key in [k for k, g in self.access.items() if g.client_id == app.client_id]:
            del self.access[key]
        self.revoke_refresh_tokens(
            OAuthError(401, "invalid_client", "Application not installed"), app.client_id
        )
