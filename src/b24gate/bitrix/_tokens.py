"""The token set an OAuth server answers (docs/protocol.md §1.3), parsed into a value object."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UpstreamInvalid

# Bitrix24's access tokens live one hour; used only when a response names no lifetime.
DEFAULT_ACCESS_TTL = 3600.0


def _text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int):
        return str(value)
    return None


def _number(value: Any) -> float | None:
    # Event forms (ONAPPINSTALL) carry numbers as strings; token responses as numbers.
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdecimal():
        return int(value)
    return None


@dataclass(frozen=True, slots=True)
class TokenSet:
    """One access/refresh pair and what the OAuth server said about the portal.

    ``expires_at`` is absolute (Unix seconds). ``client_endpoint`` is the portal's REST
    base (it changes when the portal moves domain); ``domain`` is the OAuth server's host,
    not the portal's. ``repr()`` never shows the tokens.
    """

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: float
    member_id: str | None = None
    client_endpoint: str | None = None
    server_endpoint: str | None = None
    domain: str | None = None
    scope: str | None = None
    user_id: int | None = None
    status: str | None = None

    @classmethod
    def from_response(cls, body: Mapping[str, Any], now: float) -> TokenSet:
        """Parse a token response; ``now`` dates it when it carries no absolute ``expires``.

        Raises :class:`UpstreamInvalid` when either token is missing (the message never
        quotes the body: it may hold the other token).
        """
        access = body.get("access_token")
        refresh = body.get("refresh_token")
        if not isinstance(access, str) or not access or not isinstance(refresh, str) or not refresh:
            raise UpstreamInvalid("the token response lacks access_token or refresh_token")
        expires = _number(body.get("expires"))
        if expires is None:
            expires_in = _number(body.get("expires_in"))
            expires = now + (DEFAULT_ACCESS_TTL if expires_in is None else expires_in)
        return cls(
            access_token=access,
            refresh_token=refresh,
            expires_at=expires,
            member_id=_text(body.get("member_id")),
            client_endpoint=_text(body.get("client_endpoint")),
            server_endpoint=_text(body.get("server_endpoint")),
            domain=_text(body.get("domain")),
            scope=_text(body.get("scope")),
            user_id=_integer(body.get("user_id")),
            status=_text(body.get("status")),
        )
