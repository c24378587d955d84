"""Incoming webhook URLs (docs/protocol.md §2.1, §3.1): ``https://PORTAL/rest/USER_ID/CODE/``.

The code in the path is the webhook's only credential, so a parsed URL keeps the whole of
it out of ``repr()``, and no message here ever quotes the URL it was given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# Bitrix24's webhook codes are lowercase letters and digits; "_" and "-" are accepted too,
# never "." (no "..") nor "/" (the method must stay the last path segment).
_PATH = re.compile(r"/rest/(?P<user>[0-9]+)/(?P<code>[A-Za-z0-9_-]+)/?")
SHAPE = "https://PORTAL/rest/USER_ID/CODE/"


@dataclass(frozen=True)
class WebhookUrl:
    """An incoming webhook: ``base`` is where methods are appended (``base + "profile"``)."""

    origin: str  # scheme://host[:port], as given (the caller checks https or loopback)
    user_id: int
    base: str = field(repr=False)  # origin/rest/USER_ID/CODE/: holds the secret


def parse_webhook_url(value: str) -> WebhookUrl:
    """Check that ``value`` is an incoming webhook's base URL and split it.

    Raises :class:`ValueError` with a message that does not quote ``value``.
    """
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"the webhook URL is not a URL; it looks like {SHAPE}") from None
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"the webhook URL must be an http(s) URL like {SHAPE}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the webhook URL must not carry a user name or password")
    if parts.query or parts.fragment:
        raise ValueError(f"the webhook URL must have no query or fragment; it looks like {SHAPE}")
    match = _PATH.fullmatch(parts.path)
    if match is None:
        raise ValueError(
            f"the webhook URL's path must be /rest/USER_ID/CODE/ (without a method): {SHAPE}"
        )
    netloc = f"[{host}]" if ":" in host else host
    origin = f"{parts.scheme}://{netloc}" + (f":{port}" if port is not None else "")
    return WebhookUrl(
        origin=origin,
        user_id=int(match["user"]),
        base=f"{origin}/rest/{match['user']}/{match['code']}/",
    )
