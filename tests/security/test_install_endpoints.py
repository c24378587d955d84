"""Attack: a ``client_endpoint`` (from a token response or an install event) that would
send a portal's token somewhere it should not go: over plain http for a cloud portal, or
to a new host without anyone noticing.
"""

from __future__ import annotations

import dataclasses

import pytest

from b24gate.core import acceptable_endpoint
from b24gate.store import Portal

from .conftest import Stack

CLOUD = Portal(
    id=1,
    name="cloud",
    url="https://company.bitrix24.ru",
    domain="company.bitrix24.ru",
    client_id="app.1",
    client_secret="s",
    oauth_url="https://oauth.bitrix.info",
    scope="",
    token_method="POST",
    member_id="0" * 32,
    client_endpoint=None,
    granted_scope=None,
    state="connected",
    state_reason=None,
    created_at=0.0,
    updated_at=0.0,
)
SANDBOX = dataclasses.replace(CLOUD, url="http://127.0.0.1:8001", domain="127.0.0.1:8001")


@pytest.mark.parametrize(
    ("portal", "endpoint", "taken"),
    [
        (CLOUD, "https://company.bitrix24.ru/rest/", True),
        (CLOUD, "https://moved.bitrix24.ru/rest/", True),
        (CLOUD, "http://127.0.0.1:8001/rest/", False),
        (CLOUD, "http://localhost/rest/", False),
        (CLOUD, "http://[::1]:80/rest/", False),
        (CLOUD, "http://company.bitrix24.ru/rest/", False),
        (CLOUD, "https://[::1/rest/", False),
        (SANDBOX, "http://127.0.0.1:8001/rest/", True),
        (SANDBOX, "http://localhost:8001/rest/", True),
        (SANDBOX, "http://10.0.0.1/rest/", False),
    ],
)
def test_plain_http_only_for_a_portal_itself_on_loopback(
    portal: Portal, endpoint: str, taken: bool
) -> None:
    assert acceptable_endpoint(endpoint, portal) == (endpoint if taken else None)


async def test_a_cloud_portals_token_never_goes_to_a_plain_http_endpoint(
    connected: tuple[Stack, str], logs: pytest.LogCaptureFixture
) -> None:
    """The portal is registered as https; its OAuth server's answer names a plain http REST
    base on loopback. The gateway keeps the https base: the token is never sent in clear."""
    stack, key = connected
    https_url = stack.sandbox.base_url.replace("http://", "https://")
    portal = await stack.gateway.store.update_portal("demo", url=https_url, client_endpoint=None)
    grant = await stack.gateway.store.grant(portal)
    assert grant is not None
    # The access token is due, so the next call refreshes it first.
    await stack.gateway.store.save_grant(portal, dataclasses.replace(grant, access_expires_at=0))
    await stack.control.post("/_sandbox/counters/reset")
    answer = await stack.call(key, {"method": "profile"})
    assert answer.status_code == 502  # https to a plain-http server: no call was made
    counters = await stack.counters()
    assert counters["grants"]["refresh_token"] == 1
    assert counters["rest_calls"] == 0  # the refreshed token never reached the http REST
    after = await stack.gateway.store.portal("demo")
    assert after is not None
    assert after.client_endpoint is None
    assert any(
        "ignoring a client_endpoint that is not https" in r.getMessage() for r in logs.records
    )


async def test_a_new_rest_host_from_a_refresh_is_logged(
    connected: tuple[Stack, str], logs: pytest.LogCaptureFixture
) -> None:
    stack, key = connected
    old = stack.sandbox.portal.domain
    new = (await stack.control.post("/_sandbox/move")).json()["domain"]
    await stack.control.post("/_sandbox/expire-access-tokens")
    logs.clear()
    assert (await stack.call(key, {"method": "profile"})).status_code == 200
    lines = [r.getMessage() for r in logs.records if r.levelname == "WARNING"]
    assert f"portal=demo: its REST host changes from {old} to {new}" in lines
    secrets = (await stack.control.get("/_sandbox/secrets")).json()["secrets"]
    for line in lines:
        for secret in secrets:
            assert secret not in line
