"""Hostile use of the idempotency key: the gateway's parameter smuggled to the portal under
a name PHP reads the same, and a stored answer fetched without a valid client key."""

from __future__ import annotations

import asyncio

import pytest

from tests.api.test_idempotency import forwarded

from .conftest import Stack

KEY = "smuggle-0001"


@pytest.mark.parametrize(
    "name",
    [
        "idempotency_key",
        "%69dempotency%5Fkey",
        "idempotency.key",
        "idempotency+key",
        "+idempotency_key",
        "idempotency%5Bkey",
    ],
    ids=["plain", "percent-encoded", "dot", "space", "leading-space", "unclosed-bracket"],
)
async def test_no_spelling_of_the_parameter_reaches_the_portal(
    connected: tuple[Stack, str], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """PHP reads each of these names as `idempotency_key`: each is the gateway's key, taken
    out of the query, and the portal never sees it."""
    stack, client_key = connected
    seen = forwarded(stack, monkeypatch)
    form = {"fields[TITLE]": "Smuggled?", "auth": client_key}
    async with asyncio.timeout(30):
        first = await stack.http.post(f"/rest/crm.deal.add?{name}={KEY}", data=form)
        assert first.status_code == 200, first.text
        # The same key as a header: the same key, so the same request is a replay.
        again = await stack.http.post(
            "/rest/crm.deal.add", data=form, headers={"Idempotency-Key": KEY}
        )
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.content == first.content
    assert seen == [{"fields": {"TITLE": "Smuggled?"}}]


async def test_an_array_parameter_is_refused_not_forwarded(connected: tuple[Stack, str]) -> None:
    stack, client_key = connected
    async with asyncio.timeout(30):
        before = (await stack.counters())["rest_calls"]
        response = await stack.http.post(
            f"/rest/crm.deal.add?idempotency_key[x]={KEY}",
            data={"fields[TITLE]": "x", "auth": client_key},
        )
        assert response.status_code == 400
        assert response.json()["error"] == "INVALID_REQUEST"
        assert (await stack.counters())["rest_calls"] == before


async def test_a_stored_answer_needs_a_valid_client_key(connected: tuple[Stack, str]) -> None:
    """The key is checked before the store is: a revoked key, or none, replays nothing."""
    stack, client_key = connected
    body = {"method": "crm.deal.add", "params": {"fields": {"TITLE": "Private"}}}
    async with asyncio.timeout(30):
        first = await stack.call(client_key, body, {"Idempotency-Key": KEY})
        assert first.status_code == 200, first.text
        anonymous = await stack.call(None, body, {"Idempotency-Key": KEY})
        assert anonymous.status_code == 401
        assert await stack.gateway.store.revoke_client("erp")
        revoked = await stack.call(client_key, body, {"Idempotency-Key": KEY})
        assert revoked.status_code == 401
        assert "Idempotent-Replayed" not in revoked.headers
