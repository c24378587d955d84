"""The OAuth client against the sandbox's token endpoint: grants, rotation, every error."""

from __future__ import annotations

import logging

import aiohttp
import httpx
import pytest
from aiohttp import web

from b24gate.bitrix import OAuthClient, TokenSet, server_endpoint_allowed, token_url
from b24gate.errors import GrantRevoked, OAuthError, OAuthUnavailable, UpstreamInvalid
from b24gate.sandbox import SandboxServer
from b24gate.testing import free_port
from tests.sandbox.conftest import T0, authorize_code

from .conftest import TinyServer, assert_no_secret, control, counters, issued_secrets


async def _connect(
    oauth: OAuthClient, http: httpx.AsyncClient, sandbox: SandboxServer, *, use_get: bool = False
) -> TokenSet:
    code = (await authorize_code(http))["code"]
    config = sandbox.config
    return await oauth.exchange_code(
        sandbox.base_url, config.client_id, config.client_secret, code, use_get=use_get
    )


async def _refresh(
    oauth: OAuthClient, sandbox: SandboxServer, refresh_token: str, *, use_get: bool = False
) -> TokenSet:
    config = sandbox.config
    return await oauth.refresh(
        sandbox.base_url, config.client_id, config.client_secret, refresh_token, use_get=use_get
    )


# -- grants ------------------------------------------------------------------------------


async def test_exchange_code_returns_the_full_token_set(
    oauth: OAuthClient, client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    tokens = await _connect(oauth, client, sandbox)
    assert tokens.client_endpoint == f"{sandbox.base_url}/rest/"
    assert tokens.member_id == sandbox.portal.member_id
    assert tokens.expires_at == T0 + 3600
    assert tokens.user_id == 1
    assert tokens.status == "L"
    assert len(tokens.access_token) >= 32
    assert tokens.refresh_token != tokens.access_token
    seen = await counters(client)
    assert seen["grants"]["authorization_code"] == 1
    assert seen["secret_in_query"] == 0  # POST form: nothing secret in the URL


async def test_refresh_rotates_both_tokens_and_the_old_one_is_spent(
    oauth: OAuthClient, client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    first = await _connect(oauth, client, sandbox)
    second = await _refresh(oauth, sandbox, first.refresh_token)
    assert second.access_token != first.access_token
    assert second.refresh_token != first.refresh_token
    with pytest.raises(GrantRevoked) as caught:
        await _refresh(oauth, sandbox, first.refresh_token)
    assert caught.value.error == "invalid_grant"
    assert caught.value.http_status == 400
    third = await _refresh(oauth, sandbox, second.refresh_token)
    assert third.refresh_token not in (first.refresh_token, second.refresh_token)
    assert (await counters(client))["secret_in_query"] == 0


async def test_use_get_sends_the_query_string(
    oauth: OAuthClient, client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    tokens = await _connect(oauth, client, sandbox, use_get=True)
    assert (await counters(client))["secret_in_query"] == 1
    await _refresh(oauth, sandbox, tokens.refresh_token, use_get=True)
    assert (await counters(client))["secret_in_query"] == 2


async def test_a_code_works_once(
    oauth: OAuthClient, client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    code = (await authorize_code(client))["code"]
    config = sandbox.config
    await oauth.exchange_code(sandbox.base_url, config.client_id, config.client_secret, code)
    with pytest.raises(GrantRevoked) as caught:
        await oauth.exchange_code(sandbox.base_url, config.client_id, config.client_secret, code)
    assert caught.value.error == "invalid_grant"


async def test_a_wrong_client_secret_revokes(
    oauth: OAuthClient, client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    tokens = await _connect(oauth, client, sandbox)
    with pytest.raises(GrantRevoked) as caught:
        await oauth.refresh(
            sandbox.base_url, sandbox.config.client_id, "not-the-secret", tokens.refresh_token
        )
    assert caught.value.error == "invalid_client"
    assert caught.value.http_status == 401


# -- what the token server says ----------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "expected"),
    [
        ("PAYMENT_REQUIRED", 401, GrantRevoked),
        ("Payment_Required", 401, GrantRevoked),  # codes compare case-insensitively
        ("NOT_INSTALLED", 400, GrantRevoked),
        ("wrong_client", 200, GrantRevoked),  # a 200 that carries an error is an error
        ("NO_AUTH_FOUND", 401, GrantRevoked),
        ("PORTAL_DELETED", 500, GrantRevoked),  # the code says more than the status
        ("invalid_scope", 400, GrantRevoked),
        ("insufficient_scope", 401, GrantRevoked),
        ("bad_verification_code", 400, GrantRevoked),
        ("anything", 404, GrantRevoked),
        ("invalid_request", 400, OAuthError),
        ("INTERNAL_SERVER_ERROR", 503, OAuthUnavailable),
    ],
)
async def test_error_answers_are_classified(
    oauth: OAuthClient,
    client: httpx.AsyncClient,
    sandbox: SandboxServer,
    error: str,
    status: int,
    expected: type[OAuthError],
) -> None:
    tokens = await _connect(oauth, client, sandbox)
    await control(
        client,
        "revoke-refresh-tokens",
        {"error": error, "error_description": "said the server", "status": status},
    )
    with pytest.raises(OAuthError) as caught:
        await _refresh(oauth, sandbox, tokens.refresh_token)
    assert type(caught.value) is expected
    assert caught.value.error == error
    assert caught.value.description == "said the server"
    assert caught.value.http_status == status


async def test_a_500_is_unavailable_and_the_grant_survives(
    oauth: OAuthClient, client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    tokens = await _connect(oauth, client, sandbox)
    await control(client, "faults", {"kind": "500", "target": "oauth"})
    with pytest.raises(OAuthUnavailable) as caught:
        await _refresh(oauth, sandbox, tokens.refresh_token)
    assert caught.value.http_status == 500
    # A retry (what OAuthUnavailable invites) succeeds.
    await _refresh(oauth, sandbox, tokens.refresh_token)


async def test_a_malformed_answer_is_unavailable(
    oauth: OAuthClient, client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    # A 200 HTML page is a proxy's or a maintenance page: transient, worth the same bounded
    # retry as a 5xx. UpstreamInvalid is kept for a JSON answer that lacks the tokens.
    tokens = await _connect(oauth, client, sandbox)
    await control(client, "faults", {"kind": "malformed", "target": "oauth"})
    with pytest.raises(OAuthUnavailable) as caught:
        await _refresh(oauth, sandbox, tokens.refresh_token)
    assert caught.value.http_status == 200
    assert "Bad Gateway" not in str(caught.value)
    await _refresh(oauth, sandbox, tokens.refresh_token)


async def test_a_dropped_connection_is_unavailable(
    oauth: OAuthClient, client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    tokens = await _connect(oauth, client, sandbox)
    await control(client, "faults", {"kind": "drop", "target": "oauth"})
    with pytest.raises(OAuthUnavailable):
        await _refresh(oauth, sandbox, tokens.refresh_token)


async def test_a_slow_server_is_unavailable_after_the_timeout(
    session: aiohttp.ClientSession, client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    oauth = OAuthClient(session, aiohttp.ClientTimeout(total=0.2))
    tokens = await _connect(oauth, client, sandbox)
    await control(client, "faults", {"kind": "slow", "target": "oauth", "delay": 1.0})
    with pytest.raises(OAuthUnavailable) as caught:
        await _refresh(oauth, sandbox, tokens.refresh_token)
    assert caught.value.error == "timeout"


async def test_nothing_listening_is_unavailable(oauth: OAuthClient) -> None:
    with pytest.raises(OAuthUnavailable) as caught:
        await oauth.refresh(f"http://127.0.0.1:{free_port()}", "local.x", "secret", "refresh")
    assert caught.value.error == "unreachable"


async def test_answers_the_sandbox_never_gives(oauth: OAuthClient, tiny_server: TinyServer) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/redirect/"):
            return web.Response(status=302, headers={"Location": "https://elsewhere.test/"})
        if path.startswith("/html404/"):
            return web.Response(status=404, text="<h1>Not found</h1>", content_type="text/html")
        if path.startswith("/html400/"):
            return web.Response(status=400, text="<h1>Bad</h1>", content_type="text/html")
        if path.startswith("/html502/"):
            return web.Response(status=502, text="<h1>Bad gateway</h1>", content_type="text/html")
        if path.startswith("/notokens/"):
            return web.json_response({"expires_in": 3600})
        return web.json_response({"error": "invalid_grant"})

    base = await tiny_server(handler)
    cases: list[tuple[str, type[Exception]]] = [
        ("redirect", OAuthError),
        ("html404", GrantRevoked),
        ("html400", OAuthError),
        ("html502", OAuthUnavailable),
        ("notokens", UpstreamInvalid),
        ("error200", GrantRevoked),
    ]
    for prefix, expected in cases:
        with pytest.raises(expected) as caught:
            await oauth.refresh(f"{base}/{prefix}", "local.x", "secret", "refresh")
        if expected is OAuthError:
            assert type(caught.value) is OAuthError, prefix


async def test_answers_with_a_byte_order_mark_are_read(
    oauth: OAuthClient, tiny_server: TinyServer
) -> None:
    # An on-premise portal whose PHP files were saved with a BOM prints it before every
    # answer, app.info at the portal's own REST base included: read as Bitrix24's are.
    bom = b"\xef\xbb\xbf"

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/app.info"):
            body = b'{"result": {"CODE": "local.x", "INSTALLED": true}}'
        elif request.path.startswith("/error/"):
            body = b'{"error": "invalid_grant", "error_description": "expired"}'
        else:
            body = b'{"access_token": "a", "refresh_token": "r", "expires_in": 3600}'
        status = 400 if request.path.startswith("/error/") else 200
        return web.Response(status=status, body=bom + body, content_type="application/json")

    base = await tiny_server(handler)
    info = await oauth.app_info(base, "token")
    assert info == {"CODE": "local.x", "INSTALLED": True}
    tokens = await oauth.refresh(base, "local.x", "secret", "refresh")
    assert (tokens.access_token, tokens.refresh_token) == ("a", "r")
    # The error code is read too: a revoked grant, not a malformed answer.
    with pytest.raises(GrantRevoked) as caught:
        await oauth.refresh(f"{base}/error", "local.x", "secret", "refresh")
    assert caught.value.error == "invalid_grant"


# -- secrets -----------------------------------------------------------------------------


@pytest.mark.parametrize("use_get", [False, True])
async def test_no_secret_in_any_error_or_log_line(
    session: aiohttp.ClientSession,
    client: httpx.AsyncClient,
    sandbox: SandboxServer,
    caplog: pytest.LogCaptureFixture,
    use_get: bool,
) -> None:
    caplog.set_level(logging.DEBUG, logger="b24gate")
    oauth = OAuthClient(session, aiohttp.ClientTimeout(total=0.2))
    tokens = await _connect(oauth, client, sandbox, use_get=use_get)
    code = (await authorize_code(client))["code"]
    config = sandbox.config
    raised: list[Exception] = []

    async def attempt(oauth_url: str, secret: str, refresh: str) -> None:
        try:
            await oauth.refresh(oauth_url, config.client_id, secret, refresh, use_get=use_get)
        except Exception as exc:
            raised.append(exc)

    # The server echoes the refresh token in its description: it must come out redacted.
    await control(
        client,
        "revoke-refresh-tokens",
        {"error": "invalid_grant", "error_description": f"bad token {tokens.refresh_token}"},
    )
    await attempt(sandbox.base_url, config.client_secret, tokens.refresh_token)
    await attempt(sandbox.base_url, "wrong-" + config.client_secret, tokens.refresh_token)
    for kind in ("500", "malformed", "drop", "slow"):
        await control(client, "faults", {"kind": kind, "target": "oauth", "delay": 1.0})
        await attempt(sandbox.base_url, config.client_secret, tokens.refresh_token)
    await attempt(f"http://127.0.0.1:{free_port()}", config.client_secret, tokens.refresh_token)
    await attempt("http://[::1", config.client_secret, tokens.refresh_token)
    try:
        await oauth.exchange_code(sandbox.base_url, config.client_id, "wrong", code)
    except OAuthError as exc:
        raised.append(exc)

    assert len(raised) == 9
    assert "[redacted]" in str(raised[0])
    secrets = [*await issued_secrets(client, sandbox), "wrong-" + config.client_secret]
    for error in raised:
        assert_no_secret(error, secrets)
    ours = [r for r in caplog.records if r.name.startswith("b24gate")]
    assert ours
    for record in ours:
        for secret in secrets:
            assert secret not in record.getMessage()


# -- URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize("oauth_url", ["https://oauth.bitrix.info", "https://oauth.bitrix.info/"])
def test_token_url(oauth_url: str) -> None:
    assert token_url(oauth_url) == "https://oauth.bitrix.info/oauth/token/"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://oauth.bitrix.info/rest/", True),
        ("https://oauth.bitrix24.tech/rest/", True),
        ("https://OAUTH.BITRIX.INFO/rest/", True),
        ("https://oauth.bitrix.info:443/rest/", True),
        ("http://oauth.bitrix.info/rest/", False),
        ("https://oauth.bitrix.info:8443/rest/", False),
        ("https://oauth.bitrix.info.evil.test/rest/", False),
        ("https://evil.test/oauth.bitrix.info/", False),
        ("https://oauth.bitrix.info@evil.test/rest/", False),
        ("https://user@oauth.bitrix.info/rest/", False),
        ("https://oauth.bitrix.info:99999/", False),
        ("portal.bitrix24.ru", False),
        ("", False),
    ],
)
def test_server_endpoint_allowed(url: str, allowed: bool) -> None:
    assert server_endpoint_allowed(url) is allowed
