"""Attack: a client forges its address with ``X-Forwarded-For`` to pass a key's IP rule.

The key below may only be used from 203.0.113.0/24; every request comes from 127.0.0.1.
"""

from __future__ import annotations

import httpx

from .conftest import MakeStack, Stack

ALLOWED = "203.0.113.9"


async def _ip_limited(make_stack: MakeStack, **settings: object) -> tuple[Stack, str]:
    stack = await make_stack(**settings)
    await stack.add_portal()
    await stack.connect()
    return stack, await stack.add_client(ips=("203.0.113.0/24",))


async def _three_surfaces(
    stack: Stack, key: str, headers: list[tuple[str, str]]
) -> list[httpx.Response]:
    auth = [("Authorization", f"Bearer {key}"), *headers]
    return [
        await stack.http.post("/api/v1/call", json={"method": "profile"}, headers=auth),
        await stack.http.post(
            "/api/v1/batch", json={"commands": [{"method": "profile"}]}, headers=auth
        ),
        await stack.http.post("/rest/profile", headers=auth),
    ]


async def test_without_trusted_proxies_the_header_is_ignored(make_stack: MakeStack) -> None:
    # uvicorn by default believes X-Forwarded-For from 127.0.0.1; the gateway must not.
    stack, key = await _ip_limited(make_stack)
    before = (await stack.counters())["rest_calls"]
    for response in await _three_surfaces(stack, key, [("X-Forwarded-For", ALLOWED)]):
        assert response.status_code == 403, response.text
    assert (await stack.counters())["rest_calls"] == before  # nothing reached the portal


async def test_a_forged_line_before_the_proxys_line_does_not_win(make_stack: MakeStack) -> None:
    # The client sends its own X-Forwarded-For line; the trusted proxy appends another line
    # with the address it really saw. Both lines are one list (RFC 9110 §5.3).
    stack, key = await _ip_limited(make_stack, trusted_proxies=["127.0.0.1/32"])
    forged = [("X-Forwarded-For", ALLOWED), ("X-Forwarded-For", "198.51.100.1")]
    for response in await _three_surfaces(stack, key, forged):
        assert response.status_code == 403, response.text
    # The same proxy reporting an allowed client lets it in, on every surface.
    honest = [("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", ALLOWED)]
    for response in await _three_surfaces(stack, key, honest):
        assert response.status_code == 200, response.text
