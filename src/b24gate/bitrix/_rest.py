"""The REST client: one call to a portal, sent as Bitrix24's SDKs send it, answer classified.

A call is a JSON POST to ``<rest base><method>`` with ``auth`` in the body, never in the
URL; redirects are never followed (a token must not travel to another host). Each way a
call can fail maps to one class of :mod:`b24gate.errors`, so that retry policy keys off the
class: whether anything reached Bitrix24 (``sent``) and whether the call was a write
decide between "safe to retry" and "outcome unknown". aiohttp's own errors may quote the
URL (a webhook's secret is in its path), so they are never chained as causes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NoReturn

import aiohttp
import orjson
from yarl import URL

from .._json import read_object
from ..errors import (
    BitrixError,
    InvalidMethod,
    OutcomeUnknown,
    PortalMoved,
    PortalUnavailable,
    RequestError,
    UpstreamInvalid,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from ._batch import with_command_errors
from ._errors import classify
from ._names import valid_method

DEFAULT_REST_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=5, sock_connect=5)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADERS = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json"}
_log = logging.getLogger("b24gate.bitrix")


def _host(url: URL) -> str:
    host = url.raw_host or "the portal"
    return f"{host}:{url.port}" if url.port and not url.is_default_port() else host


def _bitrix_error(method: str, status: int, body: dict[str, Any], auth: str | None) -> BitrixError:
    raw_error = body["error"]
    if isinstance(raw_error, Mapping):  # REST 3.0: {"error": {"code", "message"}}
        error, description = str(raw_error.get("code") or ""), str(raw_error.get("message") or "")
    else:
        error, description = str(raw_error), str(body.get("error_description") or "")
    if auth:
        # Bitrix24 does not echo the token, but its text must never carry it if it did.
        error = error.replace(auth, "[redacted]")
        description = description.replace(auth, "[redacted]")
    exc = classify(status, error, description, body)
    # BitrixError's message is Bitrix24's words; the method goes into tracebacks and logs.
    exc.add_note(f"while calling {method}")
    return exc


def _redirect(method: str, status: int, location: str | None, request_url: URL) -> NoReturn:
    """A 3xx: another host means the portal moved; its own host, a licence page
    (docs/protocol.md §6, §7)."""
    try:
        target = request_url.join(URL(location or ""))
    except ValueError:
        target = URL()
    if not location or target.scheme not in ("http", "https") or not target.raw_host:
        raise UpstreamInvalid(f"{method}: HTTP {status} without a usable Location")
    if target.raw_host.lower() != (request_url.raw_host or "").lower():
        raise PortalMoved(
            f"{method}: HTTP {status}, the portal moved to {_host(target)}", location=str(target)
        )
    raise PortalUnavailable(
        f"{method}: HTTP {status} to a page of the portal itself "
        "(an on-premise licence or maintenance page)"
    )


class RestClient:
    """Calls to Bitrix24 REST over a shared aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        timeout: aiohttp.ClientTimeout = DEFAULT_REST_TIMEOUT,
    ) -> None:
        self._session = session
        self._timeout = timeout

    async def call(
        self,
        rest_base: str,
        method: str,
        params: Mapping[str, Any],
        *,
        auth: str | None,
        write: bool,
        v3: bool = False,
    ) -> dict[str, Any]:
        """Call ``method`` at ``rest_base`` (``https://portal/rest/``) and return the whole
        answer (``result``, ``total``, ``next``, ``time``); ``v3``: at REST 3.0's
        ``rest_base + "api/"``.

        ``auth`` is the access token (``None`` for an incoming webhook, whose base carries
        its secret). ``write`` says whether a lost answer may hide a done call.
        """
        if not valid_method(method):
            raise InvalidMethod("the method name is not allowed")
        payload = dict(params)
        if auth is not None:
            payload["auth"] = auth
        try:
            data = orjson.dumps(payload)
        except (TypeError, ValueError):
            raise RequestError(f"{method}: the parameters are not JSON") from None
        try:
            url = URL(rest_base if rest_base.endswith("/") else rest_base + "/")
            url = (url / "api" / method) if v3 else (url / method)
        except (TypeError, ValueError):
            raise UpstreamUnreachable(f"{method}: the REST URL is not valid", sent=False) from None
        host = _host(url)
        try:
            async with self._session.post(
                url,
                data=data,
                headers=_HEADERS,
                timeout=self._timeout,
                allow_redirects=False,
                raise_for_status=False,
            ) as response:
                status = response.status
                location = response.headers.get("Location")
                # A redirect's body is some HTML page; leave it unread.
                raw = b"" if status in _REDIRECTS else await response.read()
        except aiohttp.ConnectionTimeoutError:
            # Raised while waiting for a connection: the request never left.
            raise UpstreamUnreachable(
                f"{method}: no connection to {host} in time", sent=False
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnreachable(
                f"{method}: cannot connect to {host} ({type(exc).__name__})", sent=False
            ) from None
        except aiohttp.InvalidURL:
            raise UpstreamUnreachable(f"{method}: the REST URL is not valid", sent=False) from None
        except TimeoutError:
            if write:
                raise OutcomeUnknown(
                    f"{method}: no answer from {host} in time; the write may have been done"
                ) from None
            raise UpstreamTimeout(f"{method}: no answer from {host} in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            reason = type(exc).__name__
            if write:
                raise OutcomeUnknown(
                    f"{method}: the connection to {host} broke ({reason}); "
                    "the write may have been done"
                ) from None
            raise UpstreamUnreachable(
                f"{method}: the connection to {host} broke ({reason})", sent=True
            ) from None
        _log.debug("REST %s at %s answered HTTP %d", method, host, status)
        if status in _REDIRECTS:
            _redirect(method, status, location, url)
        body = read_object(raw)
        if body is None:
            raise UpstreamInvalid(f"{method}: HTTP {status} with a body that is not a JSON object")
        if body.get("error") is not None:
            raise _bitrix_error(method, status, body, auth)
        if status >= 400:
            raise UpstreamInvalid(f"{method}: HTTP {status} without an error code")
        if auth:
            body = _scrub_command_errors(body, auth)
        return body


def _scrub_command_errors(body: dict[str, Any], auth: str) -> dict[str, Any]:
    """A batch's per-command errors are Bitrix24's words as well: like a call's own error
    (:func:`_bitrix_error`), they must never carry the token if Bitrix24 echoed it, in a
    map or a list of errors, in any field."""

    def scrub(error: Any) -> Any:
        if not isinstance(error, Mapping):
            return error
        return {
            name: value.replace(auth, "[redacted]") if isinstance(value, str) else value
            for name, value in error.items()
        }

    return with_command_errors(body, scrub)
