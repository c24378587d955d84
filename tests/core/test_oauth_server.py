"""Which OAuth server a refresh goes to (docs/design.md §5.3)."""

from __future__ import annotations

import dataclasses

import pytest

from b24gate.core import oauth_server
from b24gate.store import Grant, Portal

from ._lanes import a_portal


def portal(oauth_url: str = "https://oauth.bitrix.info") -> Portal:
    return dataclasses.replace(a_portal(), oauth_url=oauth_url, member_id=None)


def grant(server_endpoint: str | None) -> Grant:
    return Grant(
        access_token="a",
        refresh_token="r",
        access_expires_at=0.0,
        refresh_obtained_at=0.0,
        server_endpoint=server_endpoint,
    )


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("https://oauth.bitrix24.tech/rest/", "https://oauth.bitrix24.tech"),
        ("https://oauth.bitrix.info/rest/", "https://oauth.bitrix.info"),
        (None, "https://oauth.bitrix.info"),
        ("https://evil.example/rest/", "https://oauth.bitrix.info"),
        ("http://oauth.bitrix24.tech/rest/", "https://oauth.bitrix.info"),
        ("https://oauth.bitrix24.tech.evil.example/rest/", "https://oauth.bitrix.info"),
        ("https://oauth.bitrix24.tech:8443/rest/", "https://oauth.bitrix.info"),
        ("https://user@oauth.bitrix24.tech/rest/", "https://oauth.bitrix.info"),
    ],
)
def test_server_endpoint_counts_only_on_the_allow_list(endpoint: str | None, expected: str) -> None:
    assert oauth_server(portal(), grant(endpoint)) == expected


def test_a_configured_server_is_used_for_the_sandbox() -> None:
    sandbox = "http://127.0.0.1:8123"
    assert oauth_server(portal(sandbox), grant("http://127.0.0.1:8123/rest/")) == sandbox
