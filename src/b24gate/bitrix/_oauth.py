"""The OAuth server (docs/protocol.md §1.2-1.5, §2.3): exchange a code, refresh a grant, and ask
``app.info`` which application a token belongs to.

The request is a POST form by default, so that the client secret, the code and the refresh
token travel in the body; ``use_get=True`` is the per-portal fallback for a token server
that refuses POST. Redirects are never followed. No secret reaches an exception message,
its traceback or a log line: aiohttp's own errors may quote the URL (and with GET the URL
holds the secrets), so they are never chained as causes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .._json import read_object
from ..errors import GrantRevoked, OAuthError, OAuthUnavailable
from ._tokens import TokenSet

ALLOWED_OAUTH_HOSTS = ("oauth.bitrix.info", "oauth.bitrix24.tech")
DEFAULT_OAUTH_TIMEOUT = aiohttp.ClientTimeout(total=20, connect=5, sock_connect=5)

# Errors after which no retry can succeed: an administrator must authorize again. Compared
# lower-cased, as both official SDKs do. (b24phpsdk: 400 invalid_grant/bad_verification_code,
# 401 invalid_client, 404 portal gone; b24pysdk: PAYMENT_REQUIRED, NOT_INSTALLED, WRONG_CLIENT,
# NO_AUTH_FOUND; the docs: insufficient_scope / invalid_scope.)
REVOKING_ERRORS = frozenset(
    {
        "bad_verification_code",
        "insufficient_scope",
        "invalid_client",
        "invalid_grant",
        "invalid_scope",
        "no_auth_found",
        "not_installed",
        "payment_required",
        "portal_deleted",
        "wrong_client",
    }
)
_MAX_TEXT = 300
_REDACTED = "[redacted]"
_log = logging.getLogger("b24gate.bitrix")


def token_url(oauth_url: str) -> str:
    """The token endpoint of an OAuth server: ``https://oauth.bitrix.info/oauth/token/``."""
    return oauth_url.rstrip("/") + "/oauth/token/"


def app_info_url(oauth_url: str) -> str:
    """The OAuth server's ``app.info``: ``https://oauth.bitrix.info/rest/app.info``."""
    return oauth_url.rstrip("/") + "/rest/app.info"


def server_endpoint_allowed(url: str) -> bool:
    """True when ``url`` (a token response's ``server_endpoint``) is https on the allow-list.

    Only then may its host serve as the token server (docs/design.md §5.3).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and parts.hostname in ALLOWED_OAUTH_HOSTS
        and port in (None, 443)
        and parts.username is None
        and parts.password is None
    )


def _host(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return "the OAuth server"
    if not host:
        return "the OAuth server"
    return f"{host}:{port}" if port else host


class _Redactor:
    """Blanks the secrets of one request out of text the server sent back."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = [s for s in secrets if s]

    def __call__(self, value: Any) -> str:
        text = "" if value is None else str(value)
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        if len(text) > _MAX_TEXT:
            text = text[:_MAX_TEXT] + "…"
        return text


def _checked_body(status: int, raw: bytes, redact: _Redactor) -> dict[str, Any]:
    """The body of a successful token response, or the right :class:`OAuthError`."""
    body = read_object(raw)
    if body is not None and body.get("error") is not None:
        error, description = redact(body["error"]), redact(body.get("error_description"))
        # An explicit revoking code wins over the status: the server said what it meant.
        if error.lower() in REVOKING_ERRORS or status == 404:
            raise GrantRevoked(error, description, status)
        if status >= 500:
            raise OAuthUnavailable(error, description, status)
        raise OAuthError(error, description, status)
    if status == 404:
        raise GrantRevoked("not_found", "HTTP 404: the portal or the application is gone", 404)
    if status >= 500:
        raise OAuthUnavailable("server_error", f"HTTP {status}", status)
    if 300 <= status < 400:
        raise OAuthError("redirect", f"HTTP {status}, a redirect, which is never followed", status)
    if status >= 400 or status < 200:
        raise OAuthError("http_error", f"HTTP {status} without an OAuth error code", status)
    if body is None:
        # A 2xx that is not JSON is a proxy's or a maintenance page (the sandbox's
        # "malformed" fault is "502 Bad Gateway" HTML): transient, as a 5xx is.
        raise OAuthUnavailable("invalid_response", f"HTTP {status}, not a JSON object", status)
    return body


class OAuthClient:
    """Token requests to a Bitrix24 OAuth server over a shared aiohttp session.

    ``clock`` dates a token response that carries no absolute ``expires``.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        timeout: aiohttp.ClientTimeout = DEFAULT_OAUTH_TIMEOUT,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._timeout = timeout
        self._clock = clock

    async def exchange_code(
        self,
        oauth_url: str,
        client_id: str,
        client_secret: str,
        code: str,
        *,
        use_get: bool = False,
    ) -> TokenSet:
        """Trade a one-time authorization ``code`` for a token set."""
        form = {
            "grant_type": "authorization_code",
            "client_id": client_id,
            "client_secret": client_secret,
            "code": code,
        }
        return await self._grant(oauth_url, form, (client_secret, code), use_get=use_get)

    async def refresh(
        self,
        oauth_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        *,
        use_get: bool = False,
    ) -> TokenSet:
        """Trade a refresh token for a new token set (both tokens rotate)."""
        form = {
            "grant_type": "refresh_token",
            "client_id": client_id,
            "client_secret": client_secret,
            "refresh_token": refresh_token,
        }
        return await self._grant(oauth_url, form, (client_secret, refresh_token), use_get=use_get)

    async def app_info(self, oauth_url: str, access_token: str) -> dict[str, Any]:
        """Ask the OAuth server which application ``access_token`` belongs to: the ``result``
        of ``app.info`` (``CODE`` is the client id, ``INSTALLED``, ``STATUS``, …).

        Only the server a caller trusts can vouch for a token, so ``oauth_url`` must be one
        the administrator registered, never one a request named. The token travels in the
        POST body. Raises :class:`OAuthError` when the server refuses the token (its
        ``http_status`` says how), :class:`OAuthUnavailable` when it cannot answer.
        """
        raw, status = await self._post(app_info_url(oauth_url), {"auth": access_token}, False)
        _log.debug("app.info at %s answered HTTP %d", _host(app_info_url(oauth_url)), status)
        body = _checked_body(status, raw, _Redactor((access_token,)))
        result = body.get("result")
        if not isinstance(result, dict):
            raise OAuthUnavailable("invalid_response", f"HTTP {status}, app.info without a result")
        return result

    async def _grant(
        self, oauth_url: str, form: dict[str, str], secrets: Iterable[str], *, use_get: bool
    ) -> TokenSet:
        url = token_url(oauth_url)
        raw, status = await self._post(url, form, use_get)
        _log.debug("OAuth %s grant at %s answered HTTP %d", form["grant_type"], _host(url), status)
        body = _checked_body(status, raw, _Redactor(secrets))
        return TokenSet.from_response(body, self._clock())

    async def _post(self, url: str, form: dict[str, str], use_get: bool) -> tuple[bytes, int]:
        """Send ``form`` (a POST body, or with ``use_get`` a query string); the raw answer."""
        host = _host(url)
        options: dict[str, Any] = {
            "headers": {"Accept": "application/json"},
            "timeout": self._timeout,
            "allow_redirects": False,
            "raise_for_status": False,
        }
        try:
            if use_get:
                request = self._session.get(url, params=form, **options)
            else:
                request = self._session.post(url, data=form, **options)
            async with request as response:
                return await response.read(), response.status
        except aiohttp.InvalidURL:
            raise OAuthError("invalid_url", "the OAuth server URL is not valid") from None
        except TimeoutError:
            raise OAuthUnavailable("timeout", f"no answer from {host} in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            reason = type(exc).__name__
            raise OAuthUnavailable("unreachable", f"cannot reach {host} ({reason})") from None
