"""TokenSet: what a token response (or an install event's auth) says, parsed once."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from b24gate.bitrix import TokenSet
from b24gate.errors import UpstreamInvalid

NOW = 1_780_000_000.0
ACCESS = "s1morf609228iwyjjpvfv6wsvuja4p8u"
REFRESH = "4f9k4jpmg13usmybzuqknt2v9fh0q6rl"

# The documented example (docs/protocol.md §1.3).
RESPONSE: dict[str, Any] = {
    "access_token": ACCESS,
    "expires": 1780319382,
    "expires_in": 3600,
    "scope": "app",
    "domain": "oauth.bitrix.info",
    "server_endpoint": "https://oauth.bitrix.info/rest/",
    "status": "L",
    "client_endpoint": "https://portal.bitrix24.com/rest/",
    "member_id": "a223c6b3710f85df22e9377d6c4f7553",
    "user_id": 67,
    "refresh_token": REFRESH,
}


def test_every_field_of_the_documented_response() -> None:
    tokens = TokenSet.from_response(RESPONSE, NOW)
    assert tokens.access_token == ACCESS
    assert tokens.refresh_token == REFRESH
    assert tokens.expires_at == 1780319382.0  # the absolute time wins over expires_in
    assert tokens.member_id == "a223c6b3710f85df22e9377d6c4f7553"
    assert tokens.client_endpoint == "https://portal.bitrix24.com/rest/"
    assert tokens.server_endpoint == "https://oauth.bitrix.info/rest/"
    assert tokens.domain == "oauth.bitrix.info"
    assert tokens.scope == "app"
    assert tokens.user_id == 67
    assert tokens.status == "L"


def test_repr_hides_both_tokens() -> None:
    tokens = TokenSet.from_response(RESPONSE, NOW)
    for text in (repr(tokens), str(tokens)):
        assert ACCESS not in text
        assert REFRESH not in text
        assert "a223c6b3710f85df22e9377d6c4f7553" in text


def test_without_expires_the_lifetime_counts_from_now() -> None:
    body = {k: v for k, v in RESPONSE.items() if k != "expires"}
    assert TokenSet.from_response({**body, "expires_in": 1800}, NOW).expires_at == NOW + 1800
    # Neither field: Bitrix24's documented hour.
    body.pop("expires_in")
    assert TokenSet.from_response(body, NOW).expires_at == NOW + 3600


def test_numbers_as_strings_as_install_events_send_them() -> None:
    body = {**RESPONSE, "expires": "1780319382", "user_id": "67"}
    tokens = TokenSet.from_response(body, NOW)
    assert tokens.expires_at == 1780319382.0
    assert tokens.user_id == 67


def test_missing_optional_fields_are_none() -> None:
    tokens = TokenSet.from_response({"access_token": ACCESS, "refresh_token": REFRESH}, NOW)
    assert tokens.member_id is None
    assert tokens.client_endpoint is None
    assert tokens.user_id is None


@pytest.mark.parametrize("missing", ["access_token", "refresh_token"])
def test_a_response_without_a_token_is_invalid_and_not_quoted(missing: str) -> None:
    body = {**RESPONSE, missing: ""}
    with pytest.raises(UpstreamInvalid) as caught:
        TokenSet.from_response(body, NOW)
    assert ACCESS not in str(caught.value)
    assert REFRESH not in str(caught.value)
    with pytest.raises(UpstreamInvalid):
        TokenSet.from_response({k: v for k, v in RESPONSE.items() if k != missing}, NOW)


def test_a_token_set_is_immutable() -> None:
    tokens = TokenSet.from_response(RESPONSE, NOW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        tokens.access_token = "other"  # type: ignore[misc]
