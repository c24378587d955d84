"""Fixtures: the sandbox's (a portal on a loopback port, frozen clock, httpx client for the
control API), one aiohttp session for the clients under test, and a tiny server for
answers the sandbox never gives."""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web

from b24gate.bitrix import OAuthClient, RestClient
from b24gate.sandbox import SandboxServer
from tests.sandbox.conftest import client, clock, make_sandbox, sandbox  # noqa: F401

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TinyServer = Callable[[Handler], Awaitable[str]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
def oauth(session: aiohttp.ClientSession) -> OAuthClient:
    return OAuthClient(session)


@pytest.fixture
def rest_client(session: aiohttp.ClientSession) -> RestClient:
    return RestClient(session)


@pytest.fixture
async def tiny_server() -> AsyncIterator[TinyServer]:
    """Start a one-handler HTTP server on a loopback port; answers its base URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def control(http: httpx.AsyncClient, path: str, body: Any = None) -> dict[str, Any]:
    """POST to the sandbox's control API (``/_sandbox/<path>``)."""
    response = await http.post(f"/_sandbox/{path}", json=body or {})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def counters(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/_sandbox/counters")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def issued_secrets(http: httpx.AsyncClient, server: SandboxServer) -> list[str]:
    """Every secret the sandbox handed out, its client secret included."""
    response = await http.get("/_sandbox/secrets")
    found: list[str] = response.json()["secrets"]
    return [*found, server.config.client_secret]


def assert_no_secret(exc: BaseException, secrets: Iterable[str]) -> None:
    """Neither str(), repr() nor the traceback a log would print holds any secret."""
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    for secret in secrets:
        for text in texts:
            assert secret not in text, f"a secret leaked into {type(exc).__name__}"
