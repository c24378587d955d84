"""The real Bitrix24 clients, unchanged but for their URL, through the gateway (issue 5).

`fast_bitrix24` and `b24pysdk` create 200 deals with their batch helpers and read them back
with their list helpers, through the gateway; the same clients reading the sandbox directly
(with an incoming webhook) must see the same records. Both are synchronous here (b24pysdk
is built on `requests`; fast_bitrix24's `Bitrix` runs its own event loop), so they run in a
thread while the gateway and the sandbox keep serving in this test's loop.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
from aiohttp import web
from b24pysdk import BitrixApp, BitrixToken, BitrixWebhook, Client
from b24pysdk.errors import BitrixAPIAccessDenied
from fast_bitrix24 import Bitrix

from b24gate.core import new_key
from b24gate.testing import free_port

from .conftest import MakeStack, Stack, Tls

DEALS = 200
FIELDS = ["ID", "TITLE", "OPPORTUNITY", "CURRENCY_ID"]
# fast_bitrix24 keeps to Bitrix24's 2 requests/s unless told; the sandbox's limits are off.
FAST = {"verbose": False, "request_pool_size": 1000, "requests_per_second": 1000.0}

Row = dict[str, Any]


def deal(i: int, client: str) -> Row:
    return {"TITLE": f"Сделка {client} №{i}", "OPPORTUNITY": f"{i}.50", "CURRENCY_ID": "RUB"}


def by_id(rows: Any) -> list[Row]:
    assert isinstance(rows, list | tuple)
    return sorted((dict(r) for r in rows), key=lambda r: int(r["ID"]))


async def ready(stack: Stack) -> str:
    await stack.add_portal()
    assert (await stack.connect()).status_code == 200
    return await stack.add_client()


async def webhook(stack: Stack) -> tuple[str, str]:
    """An incoming webhook of the sandbox: ``(its URL, "user id/code")``."""
    url: str = (await stack.control.post("/_sandbox/webhooks", json={})).json()["url"]
    path = urlsplit(url).path.removeprefix("/rest/").strip("/")
    return url, path


async def run(work: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(work)


async def test_fast_bitrix24_through_the_gateway(make_stack: MakeStack) -> None:
    stack = await make_stack()
    key = await ready(stack)

    async def token() -> str:
        return key

    gate = Bitrix(f"{stack.base_url}/rest/", token_func=token, **FAST)
    items = [{"fields": deal(i, "fast_bitrix24")} for i in range(DEALS)]
    ids = await run(lambda: gate.call("crm.deal.add", items))
    assert len(ids) == DEALS
    assert len(set(ids)) == DEALS

    through = by_id(await run(lambda: gate.get_all("crm.deal.list", {"select": FIELDS})))
    hook_url, _ = await webhook(stack)
    direct = Bitrix(hook_url, **FAST)
    straight = by_id(await run(lambda: direct.get_all("crm.deal.list", {"select": FIELDS})))
    assert len(through) == DEALS
    assert through == straight
    assert [int(r["ID"]) for r in through] == sorted(ids)
    # fast_bitrix24 sends its batches concurrently: IDs need not follow the list's order.
    assert sorted(r["TITLE"] for r in through) == sorted(
        f"Сделка fast_bitrix24 №{i}" for i in range(DEALS)
    )

    # A client that only takes a webhook URL: the key in the path, once allowed.
    hook_key = new_key()
    await stack.gateway.store.add_client(
        "hook", hook_key.key_id, hook_key.key_hash, ["demo"], [], [], allow_url_key=True
    )
    as_webhook = Bitrix(f"{stack.base_url}/rest/1/{hook_key.key}/", **FAST)
    assert by_id(await run(lambda: as_webhook.get_all("crm.deal.list", {"select": FIELDS}))) == (
        straight
    )
    counters = await stack.counters()
    assert counters["secret_in_query"] == 0
    urls = (await stack.control.get("/_sandbox/received")).json()["urls"]
    assert not any(key in u or hook_key.key in u for u in urls)


async def test_fast_bitrix24_stops_on_gateway_refusals(make_stack: MakeStack) -> None:
    stack = await make_stack()
    await ready(stack)
    crm_only = await stack.add_client("crm", methods=("crm.*",))
    calls = 0

    async def token() -> str:
        # fast_bitrix24 asks token_func again after every 401 and retries without end;
        # a token_func for a fixed client key gives up on the second ask (docs/drop-in.md).
        nonlocal calls
        calls += 1
        if calls > 1:
            raise PermissionError("the gateway refused the client key")
        return crm_only

    gate = Bitrix(f"{stack.base_url}/rest/", token_func=token, **FAST)
    with pytest.raises(aiohttp.ClientResponseError) as denied:
        await run(lambda: gate.call("user.current", raw=True))
    assert denied.value.status == 403  # ACCESS_DENIED: raised at once, not retried
    await stack.gateway.store.revoke_client("crm")
    with pytest.raises(PermissionError):
        await run(lambda: gate.get_all("crm.deal.list"))
    assert calls == 2


async def https_door(stack: Stack, tls: Tls) -> str:
    """The same running sandbox, also on HTTPS (b24pysdk speaks nothing else): its host:port.

    One aiohttp runner serves one app on several sites, so both doors share the portal.
    """
    runner = stack.sandbox._runner
    assert runner is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    return f"127.0.0.1:{port}"


async def test_b24pysdk_through_the_gateway_over_https(
    make_stack: MakeStack, tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = await make_stack(tls=tls)
    key = await ready(stack)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca))  # `requests` trusts the test's CA
    gateway_host = urlsplit(stack.base_url).netloc

    # OAuth mode: the domain is the gateway, the client key stands for the access token.
    # The app is never used: the gateway never answers expired_token, so no refresh.
    app = BitrixApp(client_id="local.unused", client_secret="unused")
    client = Client(BitrixToken(domain=gateway_host, auth_token=key, bitrix_app=app))

    def create() -> Any:
        adds = [client.crm.deal.add(fields=deal(i, "b24pysdk")) for i in range(DEALS)]
        return client.call_batches(adds).result

    created = await run(create)
    assert not created.result_error
    ids = list(created.result.values())
    assert len(set(ids)) == DEALS

    def read(of: Any) -> list[Row]:
        return by_id(of.crm.deal.list(select=FIELDS).as_list().result)

    through = await run(lambda: read(client))
    _, code = await webhook(stack)
    direct = Client(BitrixWebhook(domain=await https_door(stack, tls), webhook_token=code))
    straight = await run(lambda: read(direct))
    assert len(through) == DEALS
    assert through == straight
    assert [int(r["ID"]) for r in through] == sorted(ids)
    titles = {int(r["ID"]): r["TITLE"] for r in through}
    assert [titles[int(i)] for i in ids] == [f"Сделка b24pysdk №{i}" for i in range(DEALS)]

    # The same SDK in webhook mode, the client key in the path (allowed for this client).
    hook_key = new_key()
    await stack.gateway.store.add_client(
        "hook", hook_key.key_id, hook_key.key_hash, ["demo"], [], [], allow_url_key=True
    )
    as_webhook = Client(BitrixWebhook(domain=gateway_host, webhook_token=f"1/{hook_key.key}"))
    assert await run(lambda: read(as_webhook)) == straight

    # A gateway refusal arrives as the SDK's own exception for Bitrix24's code.
    crm_only = await stack.add_client("crm", methods=("crm.*",))
    limited = Client(BitrixToken(domain=gateway_host, auth_token=crm_only, bitrix_app=app))
    with pytest.raises(BitrixAPIAccessDenied):
        await run(lambda: limited.user.current().result)
    urls = (await stack.control.get("/_sandbox/received")).json()["urls"]
    assert not any(k in u for u in urls for k in (key, hook_key.key, crm_only))
    assert (await stack.counters())["secret_in_query"] == 0


async def test_a_form_encoded_call_as_a_1c_exchange_module_sends(make_stack: MakeStack) -> None:
    stack = await make_stack()
    key = await ready(stack)
    # What `HTTPСоединение` + `HTTPЗапрос.УстановитьТелоИзСтроки(...)` sends: one form line,
    # Cyrillic percent-encoded as UTF-8, the key as `auth` where the OAuth token stood.
    form = "&".join(
        f"{name}={quote(value, safe='')}"
        for name, value in (
            ("auth", key),
            ("fields[TITLE]", "Заказ покупателя № 000123 от 01.02.2025"),
            ("fields[OPPORTUNITY]", "15000.00"),
            ("fields[CURRENCY_ID]", "RUB"),
        )
    )
    added = await stack.http.post(
        "/rest/crm.deal.add.json",
        content=form.encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "1C+Enterprise/8.3",
        },
    )
    assert added.status_code == 200, added.text
    deal_id = added.json()["result"]
    # Read back the same way: `auth` in the form. In the query string (`?auth=`) the key
    # would land in proxies' access logs; that takes a key made with --allow-url-key.
    got = await stack.http.post(
        "/rest/crm.deal.get",
        content=f"id={deal_id}&auth={quote(key, safe='')}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert got.status_code == 200
    assert got.json()["result"]["TITLE"] == "Заказ покупателя № 000123 от 01.02.2025"
    assert got.json()["result"]["OPPORTUNITY"] == "15000.00"
