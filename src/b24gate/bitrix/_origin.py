"""A portal's address: ``https://host[:port]``, where its OAuth server is by default, and
the rule every address a portal is registered with follows (its URL, its OAuth server's,
its incoming webhook's).

Bitrix24 serves REST over https only (over plain http it answers 401 ``INVALID_REQUEST``),
and a token sent over plain http can be read on the way. Plain http is allowed only on
loopback, where the sandbox runs. An address is an origin: no path, query, fragment or
user name, so that nothing can ride along with the tokens sent there.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final, NamedTuple
from urllib.parse import urlsplit

from ..errors import InvalidSetting
from ._webhook import parse_webhook_url

# A host name's labels: letters (any script: Bitrix24 has .рф portals), digits and "-".
_HOST_NAME = re.compile(r"[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)*\.?")

# Bitrix24's central OAuth server: cloud portals and on-premise ones alike use it.
DEFAULT_OAUTH_URL: Final = "https://oauth.bitrix.info"


class Origin(NamedTuple):
    """``base`` is ``scheme://host[:port]`` (the default port left out); ``domain`` is the
    host and any port without the scheme, as portals are registered by it."""

    base: str
    domain: str


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def portal_origin(value: str) -> Origin:
    """The origin ``value`` names: https, or http on loopback only; nothing after the host.

    Raises :class:`ValueError` with a message fit to show the administrator. The message
    does not quote ``value``: a webhook URL's origin is checked here too, and the rest of
    that URL is its secret.
    """
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:  # a port that is not a number, or brackets that do not close
        raise ValueError("not a URL: give scheme://host[:port]") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError("not an http(s) URL: give https://host[:port]")
    if not _valid_host(host):
        raise ValueError("not a host name or an IP address: give https://host[:port]")
    if parts.scheme == "http" and not is_loopback(host):
        raise ValueError("must be https:// (http is allowed only on loopback)")
    if (
        parts.username is not None
        or parts.password is not None
        or parts.query
        or parts.fragment
        or parts.path.strip("/")
        or "?" in value
        or "#" in value
    ):
        raise ValueError(
            "give only scheme://host[:port], without a path, query, fragment or user name"
        )
    default_port = 443 if parts.scheme == "https" else 80
    shown_host = f"[{host}]" if ":" in host else host
    domain = shown_host if port in (None, default_port) else f"{shown_host}:{port}"
    return Origin(f"{parts.scheme}://{domain}", domain)


@dataclass(frozen=True)
class WebhookAddress:
    """A checked incoming webhook: ``url`` (its base, the secret in the path) and the
    portal's ``origin`` it names."""

    url: str = field(repr=False)
    origin: Origin


# The rules for the addresses a portal is registered with. The administration (core) and
# the store both check through these, so a portal added any way follows the same rule and
# gets the same message: a token never goes to plain http off loopback, nor to an address
# with a path or a user name along.


def portal_address(url: str) -> Origin:
    """The portal's origin: https, or http on loopback only (the sandbox); else
    :class:`~b24gate.errors.InvalidSetting` (``url``)."""
    try:
        return portal_origin(url)
    except ValueError as exc:
        raise InvalidSetting("url", f"the portal's URL: {exc}") from None


def oauth_address(url: str | None) -> str:
    """The OAuth server's origin, Bitrix24's central one by default; the same rule
    (``oauth_url``)."""
    try:
        return portal_origin(url or DEFAULT_OAUTH_URL).base
    except ValueError as exc:
        raise InvalidSetting("oauth_url", f"the OAuth server's URL: {exc}") from None


def webhook_address(value: str) -> WebhookAddress:
    """An incoming webhook's URL, ``https://PORTAL/rest/USER_ID/CODE/``, its portal's origin
    under the same rule (``webhook_url``). No message quotes it: its path is the webhook's
    only credential."""
    try:
        hook = parse_webhook_url(value)
    except ValueError as exc:
        raise InvalidSetting("webhook_url", str(exc)) from None
    try:
        origin = portal_origin(hook.origin)
    except ValueError as exc:
        raise InvalidSetting("webhook_url", f"the webhook URL: {exc}") from None
    return WebhookAddress(origin.base + hook.base.removeprefix(hook.origin), origin)


def _valid_host(host: str) -> bool:
    if ":" in host:  # only an IPv6 address has colons in it
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return _HOST_NAME.fullmatch(host) is not None
