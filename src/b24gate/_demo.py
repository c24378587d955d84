"""``b24gate demo``: the sandbox and the gateway together, connected, with a client key.

Everything a newcomer needs to see b24gate work on one machine: the portal is connected
through the real OAuth flow (the gateway's ticket, the sandbox's authorize page, the
gateway's callback), then a ready ``curl`` and a 1C snippet are printed, and the admin
page's address with the token to sign in (one made for this run unless
``B24GATE_ADMIN_TOKEN`` is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sys
import time
from urllib.parse import urlsplit

import aiohttp
import uvicorn
from pydantic import SecretStr

from ._http_server import server_config
from .api import create_app
from .core import Gateway, add_client, add_portal, new_client, oauth_portal
from .errors import B24GateError
from .sandbox import SandboxConfig, SandboxServer, new_secret
from .settings import Settings

PORTAL = "demo"


def _snippets(public_url: str, key: str) -> str:
    host, port = urlsplit(public_url).hostname, urlsplit(public_url).port or 80
    return f"""\
# Try it:
curl -s {public_url}/api/v1/call \\
  -H 'Authorization: Bearer {key}' \\
  -H 'Content-Type: application/json' \\
  -d '{{"method": "crm.deal.list", "params": {{"select": ["ID", "TITLE"]}}}}'

// 1C:Enterprise (see docs/1c.md for the full module):
Соединение = Новый HTTPСоединение("{host}", {port});
Запрос = Новый HTTPЗапрос("/api/v1/call");
Запрос.Заголовки.Вставить("Authorization", "Bearer {key}");
Запрос.Заголовки.Вставить("Content-Type", "application/json; charset=utf-8");
Запрос.УстановитьТелоИзСтроки("{{""method"": ""crm.deal.list""}}", КодировкаТекста.UTF8);
Ответ = Соединение.ОтправитьДляОбработки(Запрос);
Сообщить(Ответ.ПолучитьТелоКакСтроку());
"""


async def _register(gateway: Gateway, sandbox: SandboxServer) -> None:
    store = gateway.store
    url = sandbox.base_url
    # The portal as an administrator registers it, under the same rules.
    new = oauth_portal(
        PORTAL,
        url,
        sandbox.config.client_id,
        sandbox.config.client_secret,
        oauth_url=url,
        scope=",".join(sandbox.config.scope),
    )
    if await store.portal(PORTAL) is None:
        await add_portal(store, new)
    else:
        # A new sandbox each run: a new address, secret and member_id. No administrator's
        # command changes those of a portal, so the checked values are written as they are.
        await store.update_portal(
            PORTAL,
            url=new.url,
            domain=new.domain,
            client_id=new.client_id,
            client_secret=new.client_secret,
            oauth_url=new.oauth_url,
            member_id=None,
            client_endpoint=None,
        )
        await store.mark_portal(PORTAL, "not_connected", None)


async def _connect(gateway: Gateway) -> None:
    portal = await gateway.store.portal(PORTAL)
    assert portal is not None
    url = await gateway.connector.ticket_url(portal, force=True)
    async with aiohttp.ClientSession() as browser, browser.get(url) as page:
        text = await page.text()
        if page.status != 200 or "Portal connected" not in text:
            raise B24GateError(f"the demo portal did not connect (HTTP {page.status})")


def _admin_lines(public_url: str, token: str | None) -> str:
    """Where the admin page is, and how to sign in: the token made for this run is printed
    (it dies with the demo); one the administrator configured is not."""
    how = (
        f"sign in with the admin token {token}"
        if token is not None
        else "sign in with your B24GATE_ADMIN_TOKEN"
    )
    return f"# Admin page: {public_url}/admin ({how})\n"


async def run_demo(settings: Settings, port: int) -> None:
    made_token = None
    if settings.admin_token is None:
        # The demo's admin page needs a token: one for this run only.
        made_token = secrets.token_urlsafe(24)
        settings = settings.model_copy(update={"admin_token": SecretStr(made_token)})
    sandbox = SandboxServer(
        SandboxConfig(
            client_secret=new_secret(50),
            redirect_uri=f"{settings.public_url}/oauth/callback",
            auto_approve=True,
            seed_deals=25,
        )
    )
    await sandbox.start()
    gateway = await Gateway.open(settings)
    server = uvicorn.Server(server_config(create_app(settings, gateway), "127.0.0.1", port))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                raise B24GateError(f"the gateway could not listen on 127.0.0.1:{port}")
            await asyncio.sleep(0.02)
        gateway.start_background()
        await _register(gateway, sandbox)
        await _connect(gateway)
        issued = await add_client(gateway.store, new_client(f"demo-{int(time.time())}", [PORTAL]))
        # Handle the signals before announcing readiness: a script that reads the snippet
        # and then stops the demo must get a clean stop, not the default SIGTERM death.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        print(
            f"sandbox portal {sandbox.base_url}, gateway {settings.public_url}: connected.",
            file=sys.stderr,
        )
        print(_snippets(settings.public_url, issued.key), flush=True)
        print(_admin_lines(settings.public_url, made_token), flush=True)
        print("Ctrl-C stops the demo.", file=sys.stderr, flush=True)
        _done, _ = await asyncio.wait(
            [asyncio.create_task(stop.wait()), serving], return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await serving
        await gateway.close()
        await sandbox.stop()
