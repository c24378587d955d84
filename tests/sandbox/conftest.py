"""Fixtures: a sandbox on a random loopback port with a frozen clock, and a client for it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from b24gate.sandbox import Clock, SandboxConfig, SandboxServer

T0 = 1_780_000_000.0
REDIRECT = "http://127.0.0.1:9/callback"

MakeSandbox = Callable[..., Awaitable[SandboxServer]]


@pytest.fixture
def clock() -> Clock:
    return Clock(frozen_at=T0)


@pytest.fixture
async def make_sandbox(clock: Clock) -> AsyncIterator[MakeSandbox]:
    started: list[SandboxServer] = []

    async def make(**overrides: Any) -> SandboxServer:
        config = dataclasses.replace(
            SandboxConfig(redirect_uri=REDIRECT, auto_approve=True, rate=0), **overrides
        )
        server = SandboxServer(config, clock)
        await server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


@pytest.fixture
async def sandbox(make_sandbox: MakeSandbox) -> SandboxServer:
    return await make_sandbox()


@pytest.fixture
async def client(sandbox: SandboxServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.base_url, timeout=10) as http:
        yield http


async def authorize_code(
    http: httpx.AsyncClient, client_id: str = "local.sandbox", state: str = "s1"
) -> dict[str, str]:
    """Follow /oauth/authorize/ (auto-approve) and return the redirect's query."""
    response = await http.get("/oauth/authorize/", params={"client_id": client_id, "state": state})
    assert response.status_code == 302, response.text
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return {k: v[0] for k, v in query.items()}


async def connect(http: httpx.AsyncClient, sandbox: SandboxServer) -> dict[str, Any]:
    """The whole authorization-code flow: returns the token response."""
    code = (await authorize_code(http))["code"]
    response = await http.post(
        "/oauth/token/",
        data={
            "grant_type": "authorization_code",
            "client_id": sandbox.config.client_id,
            "client_secret": sandbox.config.client_secret,
            "code": code,
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def token(client: httpx.AsyncClient, sandbox: SandboxServer) -> str:
    access: str = (await connect(client, sandbox))["access_token"]
    return access


async def rest(http: httpx.AsyncClient, method: str, token: str, **params: Any) -> httpx.Response:
    """A JSON POST as the SDKs send it, ``auth`` in the body."""
    return await http.post(f"/rest/{method}.json", json={**params, "auth": token})
