"""Naming a portal by host: ``company.bitrix24.ru``, ``https://company.bitrix24.ru/…``."""

from __future__ import annotations

from urllib.parse import urlsplit


def host_of(value: str | None) -> str:
    """The lower-case ``host[:port]`` of a URL or a bare domain; "" for nothing usable
    (a malformed value is never an error here: it simply names no registered portal)."""
    if not value:
        return ""
    try:
        return (urlsplit(value if "//" in value else f"//{value}").netloc or value).lower()
    except ValueError:
        return ""
