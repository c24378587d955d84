"""Incoming webhook URLs, their calls through the REST client, and ``app.info`` at the OAuth
server (the sandbox): the token in the body, every refusal classified, no secret quoted."""

from __future__ import annotations

import logging
import secrets

import httpx
import pytest
from aiohttp import web

from b24gate.bitrix import OAuthClient, RestClient, app_info_url, parse_webhook_url
from b24gate.errors import (
    CredentialsRejected,
    OAuthError,
    OAuthUnavailable,
    PortalMoved,
    TokenRejected,
)
from b24gate.sandbox import SandboxServer
from b24gate.testing import free_port
from tests.sandbox.conftest import connect

from .conftest import TinyServer, assert_no_secret, control, counters, issued_secrets

# -- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "origin", "base"),
    [
        (
            "https://Company.Bitrix24.ru/rest/1/abc123def456gh78/",
            "https://company.bitrix24.ru",
            "https://company.bitrix24.ru/rest/1/abc123def456gh78/",
        ),
        (
            "  https://company.bitrix24.ru/rest/17/abc123def456gh78  \n",
            "https://company.bitrix24.ru",
            "https://company.bitrix24.ru/rest/17/abc123def456gh78/",
        ),
        (
            "http://127.0.0.1:8443/rest/1/c0de/",
            "http://127.0.0.1:8443",
            "http://127.0.0.1:8443/rest/1/c0de/",
        ),
    ],
)
def test_a_webhook_url_is_split_into_origin_and_base(given: str, origin: str, base: str) -> None:
    hook = parse_webhook_url(given)
    assert (hook.origin, hook.base) == (origin, base)
    assert "abc123" not in repr(hook)
    assert "c0de" not in repr(hook)


@pytest.mark.parametrize(
    "given",
    [
        "",
        "company.bitrix24.ru/rest/1/secretcode42/",
        "ftp://company.bitrix24.ru/rest/1/secretcode42/",
        "https://company.bitrix24.ru/",
        "https://company.bitrix24.ru/rest/secretcode42/",
        "https://company.bitrix24.ru/rest/1/secretcode42/profile.json",
        "https://company.bitrix24.ru/rest/1/secretcode42/?auth=x",
        "https://company.bitrix24.ru/rest/1/secretcode42/#top",
        "https://admin:pw@company.bitrix24.ru/rest/1/secretcode42/",
        "https://company.bitrix24.ru/rest/1/../secretcode42/",
        "https://company.bitrix24.ru:notaport/rest/1/secretcode42/",
    ],
)
def test_anything_else_is_refused_without_quoting_it(given: str) -> None:
    with pytest.raises(ValueError, match="webhook URL") as caught:
        parse_webhook_url(given)
    assert "secretcode42" not in str(caught.value)


# -- calls -------------------------------------------------------------------------------


async def test_a_webhook_call_carries_no_token_and_no_secret_in_errors(
    rest_client: RestClient,
    client: httpx.AsyncClient,
    sandbox: SandboxServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = (await control(client, "webhooks", {"scope": "crm,user"}))["url"]
    base = parse_webhook_url(url).base
    answer = await rest_client.call(base, "profile", {}, auth=None, write=False)
    assert answer["result"]["ID"] == "1"
    code = base.rstrip("/").rsplit("/", 1)[1]
    received = (await client.get("/_sandbox/received")).json()["urls"]
    assert received[-1] == f"/rest/1/{code}/profile"

    raised: list[Exception] = []
    wrong = base.replace(code, "0" * len(code))
    with pytest.raises(CredentialsRejected) as refused:
        await rest_client.call(wrong, "profile", {}, auth=None, write=False)
    assert refused.value.error == "INVALID_CREDENTIALS"
    assert not isinstance(refused.value, TokenRejected)  # nothing to refresh
    raised.append(refused.value)

    await control(client, "move")
    with pytest.raises(PortalMoved) as moved:
        await rest_client.call(base, "profile", {}, auth=None, write=True)
    assert sandbox.portal.domain in moved.value.message
    raised.append(moved.value)

    issued = [*await issued_secrets(client, sandbox), code]
    for exc in raised:
        assert_no_secret(exc, issued)
    for record in caplog.records:
        if record.name.startswith("b24gate"):
            assert code not in record.getMessage()


# -- app.info ----------------------------------------------------------------------------


@pytest.fixture
async def token(client: httpx.AsyncClient, sandbox: SandboxServer) -> str:
    access: str = (await connect(client, sandbox))["access_token"]
    return access


async def test_app_info_names_the_tokens_application(
    oauth: OAuthClient, client: httpx.AsyncClient, sandbox: SandboxServer, token: str
) -> None:
    assert app_info_url(sandbox.base_url + "/") == f"{sandbox.base_url}/rest/app.info"
    info = await oauth.app_info(sandbox.base_url, token)
    assert info["CODE"] == sandbox.config.client_id
    assert info["INSTALLED"] is True
    received = (await client.get("/_sandbox/received")).json()["urls"]
    assert received[-1] == "/rest/app.info"  # the token went in the body
    assert (await counters(client))["secret_in_query"] == 0


async def test_app_info_refusals_and_outages_are_told_apart(
    oauth: OAuthClient,
    client: httpx.AsyncClient,
    sandbox: SandboxServer,
    token: str,
    tiny_server: TinyServer,
) -> None:
    made_up = secrets.token_hex(16)
    with pytest.raises(OAuthError) as forged:
        await oauth.app_info(sandbox.base_url, made_up)
    assert not isinstance(forged.value, OAuthUnavailable)
    assert (forged.value.error, forged.value.http_status) == ("invalid_token", 401)

    await control(client, "faults", {"kind": "500", "target": "rest"})
    with pytest.raises(OAuthUnavailable):
        await oauth.app_info(sandbox.base_url, token)
    with pytest.raises(OAuthUnavailable) as unreachable:
        await oauth.app_info(f"http://127.0.0.1:{free_port()}", token)
    assert unreachable.value.error == "unreachable"

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/redirect/"):
            return web.Response(status=302, headers={"Location": "https://elsewhere.test/"})
        if request.path.startswith("/noresult/"):
            return web.json_response({"time": {}})
        return web.Response(status=200, text="<h1>maintenance</h1>", content_type="text/html")

    base = await tiny_server(handler)
    with pytest.raises(OAuthError) as redirected:
        await oauth.app_info(f"{base}/redirect", token)
    assert not isinstance(redirected.value, OAuthUnavailable)  # never followed
    for prefix in ("noresult", "html"):
        with pytest.raises(OAuthUnavailable):
            await oauth.app_info(f"{base}/{prefix}", token)
    assert_no_secret(forged.value, [token, made_up])
