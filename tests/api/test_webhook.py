"""Portals backed by an incoming webhook: calls go to the webhook, never a token or a
refresh; its secret stays in the gateway; a refused or moved webhook says what to do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from b24gate.bitrix import parse_webhook_url
from b24gate.core import ConnectError
from b24gate.store import NewPortal

from .conftest import Stack


async def add_webhook_portal(stack: Stack, name: str = "hook", url: str | None = None) -> str:
    """Create an incoming webhook in the sandbox and register it; its code (the secret)."""
    if url is None:
        url = (await stack.control.post("/_sandbox/webhooks", json={})).json()["url"]
    assert url is not None
    hook = parse_webhook_url(url)
    await stack.gateway.store.add_portal(
        NewPortal(
            name=name,
            url=hook.origin,
            domain=stack.sandbox.portal.domain,
            kind="webhook",
            webhook_url=hook.base,
        )
    )
    return hook.base.rstrip("/").rsplit("/", 1)[1]


async def received(stack: Stack) -> list[str]:
    urls: list[str] = (await stack.control.get("/_sandbox/received")).json()["urls"]
    return urls


async def test_calls_go_to_the_webhook_and_its_secret_never_leaks(
    stack: Stack, logs: pytest.LogCaptureFixture
) -> None:
    code = await add_webhook_portal(stack)
    key = await stack.add_client(portals=("hook",))
    answers = [
        await stack.call(key, {"method": "profile"}),
        await stack.call(key, {"method": "crm.deal.add", "params": {"fields": {"TITLE": "w"}}}),
        await stack.call(key, {"method": "crm.deal.get", "params": {"id": 98765}}),
        await stack.call(key, {"domain": stack.sandbox.portal.domain, "method": "batch",
                               "params": {"cmd": {"a": "crm.deal.list", "b": "profile"}}}),
        await stack.call(key, {"method": "no.such.method"}),
    ]  # fmt: skip
    assert [a.status_code for a in answers] == [200, 200, 400, 200, 404]
    assert answers[0].json()["data"]["result"]["ID"] == "1"
    assert answers[3].json()["data"]["result"]["result"]["b"]["ID"] == "1"

    urls = await received(stack)
    assert urls[-5:] == [
        f"/rest/1/{code}/profile",
        f"/rest/1/{code}/crm.deal.add",
        f"/rest/1/{code}/crm.deal.get",
        f"/rest/1/{code}/batch",
        f"/rest/1/{code}/no.such.method",
    ]
    counters = await stack.counters()
    assert counters["grants"] == {"authorization_code": 0, "refresh_token": 0}
    assert counters["secret_in_query"] == 0

    portal = await stack.gateway.store.portal("hook")
    assert portal is not None
    assert code not in repr(portal)
    with pytest.raises(ConnectError, match="needs no authorization"):
        await stack.gateway.connector.ticket_url(portal)
    assert await stack.gateway.tokens.keep_alive() == 0

    secrets = (await stack.control.get("/_sandbox/secrets")).json()["secrets"]
    assert code in secrets
    text = "\n".join(
        r.getMessage() for r in logs.records if not r.name.startswith(("httpx", "httpcore"))
    )
    assert "portal=hook" in text  # the gateway did log its calls
    db_bytes = b"".join(
        p.read_bytes()
        for p in sorted(Path(stack.settings.data_dir).glob("b24gate.db*"))  # noqa: ASYNC240
    )
    assert db_bytes
    for secret in [*secrets, key]:
        assert secret not in text
        assert secret.encode() not in db_bytes
        for answer in answers:
            assert secret not in answer.text


async def test_a_refused_webhook_needs_a_new_one_and_no_refresh(
    stack: Stack, logs: pytest.LogCaptureFixture
) -> None:
    real = (await stack.control.post("/_sandbox/webhooks", json={})).json()["url"]
    deleted = real.rstrip("/").rsplit("/", 1)[0] + "/0123456789abcdef/"
    await add_webhook_portal(stack, url=deleted)
    key = await stack.add_client(portals=("hook",))

    refused = await stack.call(key, {"method": "profile"})
    assert refused.status_code == 409
    body = refused.json()
    assert body["code"] == "needs_authorization"
    assert "the webhook was refused: INVALID_CREDENTIALS" in body["error"]
    assert "b24gate portal set hook --webhook-url-file" in body["error"]
    assert "portal authorize" not in body["error"]
    portal = await stack.gateway.store.portal("hook")
    assert portal is not None
    assert portal.state == "needs_authorization"

    calls = (await stack.counters())["rest_calls"]
    again = await stack.call(key, {"method": "profile"})
    assert again.status_code == 409
    assert "portal set hook" in again.json()["error"]
    assert (await stack.counters())["rest_calls"] == calls  # the dead webhook is not hit again
    assert (await stack.counters())["grants"]["refresh_token"] == 0

    # What `b24gate portal set hook --webhook-url-file F` does.
    await stack.gateway.store.update_portal(
        "hook",
        webhook_url=parse_webhook_url(real).base,
        state="connected",
        state_reason=None,
    )
    fixed = await stack.call(key, {"method": "profile"})
    assert fixed.status_code == 200, fixed.text
    text = "\n".join(r.getMessage() for r in logs.records if r.name.startswith("b24gate"))
    for secret in ("0123456789abcdef", real.rstrip("/").rsplit("/", 1)[1]):
        assert secret not in text
        assert secret not in refused.text + again.text


async def test_a_moved_webhook_portal_is_not_followed(stack: Stack) -> None:
    code = await add_webhook_portal(stack)
    key = await stack.add_client(portals=("hook",))
    moved = (await stack.control.post("/_sandbox/move")).json()
    await stack.control.post("/_sandbox/counters/reset")

    response = await stack.call(
        key, {"method": "crm.deal.add", "params": {"fields": {"TITLE": "m"}}}
    )
    assert response.status_code == 502
    body: dict[str, Any] = response.json()
    assert body["code"] == "portal_moved"
    assert f"moved to {moved['domain']}" in body["error"]
    assert "b24gate portal set hook" in body["error"]
    assert code not in json.dumps(body)
    counters = await stack.counters()
    assert counters["executed"] == 0  # the redirect was not followed with the secret
    assert counters["grants"] == {"authorization_code": 0, "refresh_token": 0}
    assert sum(code in url for url in await received(stack)) == 1


async def test_a_busy_portal_is_retried_for_a_webhook_too(stack: Stack) -> None:
    await add_webhook_portal(stack)
    key = await stack.add_client(portals=("hook",))
    await stack.control.post("/_sandbox/faults", json={"kind": "503", "count": 2})
    response = await stack.call(key, {"method": "profile"})
    assert response.status_code == 200, response.text
    assert (await stack.counters())["rejected_503"] == 2
