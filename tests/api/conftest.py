"""A gateway (in this event loop, on a real port) in front of a sandbox, both on loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import stamina
import trustme
import uvicorn

from b24gate.api import create_app
from b24gate.core import Gateway, new_key
from b24gate.sandbox import Clock, SandboxConfig, SandboxServer
from b24gate.settings import Settings, load_settings
from b24gate.store import NewPortal
from b24gate.testing import free_port, server_config

CLIENT_SECRET = "sandbox-client-secret-for-tests-0123456789"


@dataclass
class Stack:
    sandbox: SandboxServer
    gateway: Gateway
    settings: Settings
    base_url: str
    http: httpx.AsyncClient  # to the gateway
    control: httpx.AsyncClient  # to the sandbox
    verify: ssl.SSLContext | bool = True  # what trusts the gateway's certificate

    async def counters(self) -> dict[str, Any]:
        body: dict[str, Any] = (await self.control.get("/_sandbox/counters")).json()
        return body

    async def add_portal(self, name: str = "demo", **changes: Any) -> None:
        values = {
            "name": name,
            "url": self.sandbox.base_url,
            "domain": self.sandbox.portal.domain,
            "client_id": self.sandbox.config.client_id,
            "client_secret": CLIENT_SECRET,
            "oauth_url": self.sandbox.base_url,
            "scope": "crm,catalog,user",
            "token_method": "POST",
            **changes,
        }
        await self.gateway.store.add_portal(NewPortal(**values))

    async def connect(self, name: str = "demo", *, force: bool = False) -> httpx.Response:
        """The administrator's part: open the ticket URL and follow every redirect."""
        portal = await self.gateway.store.portal(name)
        assert portal is not None
        url = await self.gateway.connector.ticket_url(portal, force=force)
        async with httpx.AsyncClient(
            follow_redirects=True, timeout=10, verify=self.verify
        ) as browser:
            return await browser.get(url)

    async def add_client(
        self,
        name: str = "erp",
        portals: tuple[str, ...] = ("demo",),
        methods: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> str:
        key = new_key()
        await self.gateway.store.add_client(
            name, key.key_id, key.key_hash, list(portals), list(methods), list(ips), False
        )
        return key.key

    async def call(
        self, key: str | None, body: Any, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        sent = {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
        if isinstance(body, bytes):
            return await self.http.post("/api/v1/call", content=body, headers=sent)
        return await self.http.post("/api/v1/call", json=body, headers=sent)


@dataclass(frozen=True)
class Tls:
    """A certificate for 127.0.0.1 and the CA that signed it (made by trustme)."""

    cert: Path
    key: Path
    ca: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    paths = Tls(tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem")
    leaf.cert_chain_pems[0].write_to_path(str(paths.cert))
    for pem in leaf.cert_chain_pems[1:]:
        pem.write_to_path(str(paths.cert), append=True)
    leaf.private_key_pem.write_to_path(str(paths.key))
    ca.cert_pem.write_to_path(str(paths.ca))
    return paths


async def serve_gateway(
    settings: Settings, gateway: Gateway, port: int, tls: Tls | None = None
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    app = create_app(settings, gateway)
    server = uvicorn.Server(
        server_config(
            app,
            "127.0.0.1",
            port,
            ssl_certfile=str(tls.cert) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task


def gateway_settings(data_dir: Path, port: int, scheme: str = "http", **overrides: Any) -> Settings:
    return load_settings(data_dir=data_dir, public_url=f"{scheme}://127.0.0.1:{port}", **overrides)


MakeStack = Callable[..., Awaitable[Stack]]


@pytest.fixture(autouse=True)
def _no_retry_waits() -> Any:
    # stamina's test mode: retries keep their count but do not sleep.
    stamina.set_testing(True, attempts=3)
    yield
    stamina.set_testing(False)


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[MakeStack]:
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def make(
        sandbox_config: dict[str, Any] | None = None,
        tls: Tls | None = None,
        **settings_overrides: Any,
    ) -> Stack:
        """``tls``: the gateway serves HTTPS with that certificate."""
        port = free_port()
        scheme = "https" if tls else "http"
        base_url = f"{scheme}://127.0.0.1:{port}"
        redirect = f"{base_url}/oauth/callback"
        config = SandboxConfig(
            **{
                "client_secret": CLIENT_SECRET,
                "redirect_uri": redirect,
                "auto_approve": True,
                "rate": 0,
                **(sandbox_config or {}),
            }
        )
        sandbox = SandboxServer(config, Clock())
        await sandbox.start()
        cleanups.append(sandbox.stop)
        settings = gateway_settings(tmp_path / f"gw{port}", port, scheme, **settings_overrides)
        gateway = await Gateway.open(settings)
        cleanups.append(gateway.close)
        server, task = await serve_gateway(settings, gateway, port, tls)

        async def stop_server() -> None:
            server.should_exit = True
            await task

        cleanups.append(stop_server)
        verify: ssl.SSLContext | bool = tls.context() if tls else True
        http = httpx.AsyncClient(base_url=base_url, timeout=30, verify=verify)
        control = httpx.AsyncClient(base_url=sandbox.base_url, timeout=30)
        cleanups.extend([http.aclose, control.aclose])
        return Stack(sandbox, gateway, settings, base_url, http, control, verify)

    yield make
    for cleanup in reversed(cleanups):
        await cleanup()


@pytest.fixture
async def stack(make_stack: MakeStack) -> Stack:
    return await make_stack()


@pytest.fixture
async def connected(stack: Stack) -> tuple[Stack, str]:
    """A connected portal `demo` and a client key allowed to use it."""
    await stack.add_portal()
    page = await stack.connect()
    assert page.status_code == 200, page.text
    return stack, await stack.add_client()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
