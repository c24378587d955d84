"""The OAuth server: authorize page, code exchange, rotation, expiry, error bodies."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx

from b24gate.sandbox import Clock, SandboxServer

from .conftest import REDIRECT, MakeSandbox, authorize_code, connect, rest


async def test_authorize_redirects_with_everything_bitrix24_sends(
    client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    query = await authorize_code(client, state="opaque-42")
    assert query["state"] == "opaque-42"
    assert query["domain"] == sandbox.portal.domain
    assert query["member_id"] == sandbox.portal.member_id
    assert len(query["member_id"]) == 32
    assert query["scope"] == "crm,catalog,user"
    assert query["server_domain"] == urlsplit(sandbox.base_url).netloc
    assert len(query["code"]) >= 32


async def test_consent_page_then_allow(make_sandbox: MakeSandbox) -> None:
    sb = await make_sandbox(auto_approve=False)
    async with httpx.AsyncClient(base_url=sb.base_url) as http:
        page = await http.get(
            "/oauth/authorize/", params={"client_id": "local.sandbox", "state": "x"}
        )
        assert page.status_code == 200
        assert "Allow" in page.text
        assert 'name="approve"' in page.text
        allowed = await http.post(
            "/oauth/authorize/", data={"client_id": "local.sandbox", "state": "x", "approve": "1"}
        )
    assert allowed.status_code == 302
    assert allowed.headers["location"].startswith(REDIRECT + "?")
    assert parse_qs(urlsplit(allowed.headers["location"]).query)["state"] == ["x"]


async def test_redirect_uri_must_match_the_registered_handler(client: httpx.AsyncClient) -> None:
    for other in (REDIRECT + "/", "http://evil.example/callback"):
        response = await client.get(
            "/oauth/authorize/", params={"client_id": "local.sandbox", "redirect_uri": other}
        )
        assert response.status_code == 400
        assert "redirect_uri_mismatch" in response.text
    same = await client.get(
        "/oauth/authorize/", params={"client_id": "local.sandbox", "redirect_uri": REDIRECT}
    )
    assert same.status_code == 302


async def test_without_a_registered_handler_the_requested_one_is_used(
    make_sandbox: MakeSandbox,
) -> None:
    sb = await make_sandbox(redirect_uri=None)
    async with httpx.AsyncClient(base_url=sb.base_url) as http:
        named = await http.get(
            "/oauth/authorize/",
            params={"client_id": "local.sandbox", "redirect_uri": "http://127.0.0.1:1/x"},
        )
        assert named.headers["location"].startswith("http://127.0.0.1:1/x?code=")
        shown = await http.get("/oauth/authorize/", params={"client_id": "local.sandbox"})
    assert shown.status_code == 200
    assert "Your code" in shown.text


async def test_unknown_app_gets_an_error_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/oauth/authorize/", params={"client_id": "local.nobody"})
    assert response.status_code == 400
    assert "not installed" in response.text


async def test_token_response_has_every_documented_field(
    client: httpx.AsyncClient, sandbox: SandboxServer, clock: Clock
) -> None:
    body = await connect(client, sandbox)
    assert set(body) == {
        "access_token",
        "expires",
        "expires_in",
        "scope",
        "domain",
        "server_endpoint",
        "status",
        "client_endpoint",
        "member_id",
        "user_id",
        "refresh_token",
    }
    host = urlsplit(sandbox.base_url).netloc
    assert body["expires"] == int(clock.now()) + 3600
    assert body["expires_in"] == 3600
    assert body["domain"] == host  # the auth server's host, not the portal's
    assert body["server_endpoint"] == f"http://{host}/rest/"
    assert body["client_endpoint"] == f"http://{sandbox.portal.domain}/rest/"
    assert body["member_id"] == sandbox.portal.member_id
    assert body["user_id"] == 1
    assert body["status"] == "L"
    assert body["access_token"] != body["refresh_token"]


async def test_code_works_once_and_lives_30_seconds(
    client: httpx.AsyncClient, sandbox: SandboxServer, clock: Clock
) -> None:
    form = {
        "grant_type": "authorization_code",
        "client_id": "local.sandbox",
        "client_secret": sandbox.config.client_secret,
    }
    code = (await authorize_code(client))["code"]
    assert (await client.post("/oauth/token/", data={**form, "code": code})).status_code == 200
    again = await client.post("/oauth/token/", data={**form, "code": code})
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"

    late = (await authorize_code(client))["code"]
    clock.advance(31)
    expired = await client.post("/oauth/token/", data={**form, "code": late})
    assert expired.status_code == 400
    assert expired.json()["error"] == "invalid_grant"

    fresh = (await authorize_code(client))["code"]
    clock.advance(29)
    assert (await client.post("/oauth/token/", data={**form, "code": fresh})).status_code == 200


async def test_get_with_query_works_too_and_is_counted_as_secret_in_url(
    client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    code = (await authorize_code(client))["code"]
    response = await client.get(
        "/oauth/token/",
        params={
            "grant_type": "authorization_code",
            "client_id": "local.sandbox",
            "client_secret": sandbox.config.client_secret,
            "code": code,
        },
    )
    assert response.status_code == 200
    counters = (await client.get("/_sandbox/counters")).json()
    assert counters["secret_in_query"] == 1
    assert counters["grants"]["authorization_code"] == 1


async def test_refresh_rotates_and_a_used_refresh_token_is_rejected(
    client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    first = await connect(client, sandbox)
    form = {
        "grant_type": "refresh_token",
        "client_id": "local.sandbox",
        "client_secret": sandbox.config.client_secret,
    }
    second = await client.post(
        "/oauth/token/", data={**form, "refresh_token": first["refresh_token"]}
    )
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert rotated["access_token"] != first["access_token"]
    reused = await client.post(
        "/oauth/token/", data={**form, "refresh_token": first["refresh_token"]}
    )
    assert reused.status_code == 400
    assert reused.json() == {"error": "invalid_grant", "error_description": "Invalid refresh token"}
    third = await client.post(
        "/oauth/token/", data={**form, "refresh_token": rotated["refresh_token"]}
    )
    assert third.status_code == 200
    # The old access token keeps working until it expires; the new one works at once.
    assert (await rest(client, "profile", rotated["access_token"])).status_code == 200
    counters = (await client.get("/_sandbox/counters")).json()
    assert counters["grants"] == {"authorization_code": 1, "refresh_token": 2}
    assert counters["failed_grants"] == 1


async def test_refresh_token_lifetime_is_configurable(
    make_sandbox: MakeSandbox, clock: Clock
) -> None:
    sb = await make_sandbox(refresh_ttl=100)
    async with httpx.AsyncClient(base_url=sb.base_url) as http:
        tokens = await connect(http, sb)
        clock.advance(101)
        response = await http.post(
            "/oauth/token/",
            data={
                "grant_type": "refresh_token",
                "client_id": "local.sandbox",
                "client_secret": sb.config.client_secret,
                "refresh_token": tokens["refresh_token"],
            },
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


async def test_access_token_expires_after_access_ttl(
    make_sandbox: MakeSandbox, clock: Clock
) -> None:
    sb = await make_sandbox(access_ttl=60)
    async with httpx.AsyncClient(base_url=sb.base_url) as http:
        tokens = await connect(http, sb)
        assert tokens["expires_in"] == 60
        clock.advance(59)
        assert (await rest(http, "profile", tokens["access_token"])).status_code == 200
        clock.advance(1)
        expired = await rest(http, "profile", tokens["access_token"])
    assert expired.status_code == 401
    assert expired.json() == {
        "error": "expired_token",
        "error_description": "The access token provided has expired.",
    }


async def test_token_endpoint_error_bodies(
    client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    secret = sandbox.config.client_secret
    cases = [
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": "refresh_token"}, 400, "invalid_request"),
        (
            {
                "grant_type": "refresh_token",
                "client_id": "local.sandbox",
                "client_secret": "wrong",
                "refresh_token": "x",
            },
            401,
            "invalid_client",
        ),
        (
            {
                "grant_type": "refresh_token",
                "client_id": "local.other",
                "client_secret": secret,
                "refresh_token": "x",
            },
            401,
            "invalid_client",
        ),
        (
            {"grant_type": "refresh_token", "client_id": "local.sandbox", "client_secret": secret},
            400,
            "invalid_request",
        ),
        (
            {
                "grant_type": "authorization_code",
                "client_id": "local.sandbox",
                "client_secret": secret,
                "code": "nope",
            },
            400,
            "invalid_grant",
        ),
    ]
    for form, status, error in cases:
        response = await client.post("/oauth/token/", data=form)
        assert response.status_code == status, form
        body = response.json()
        assert body["error"] == error, form
        assert isinstance(body["error_description"], str)
        assert body["error_description"]
        assert secret not in response.text


async def test_revoked_refresh_tokens_answer_the_chosen_error(
    client: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    tokens = await connect(client, sandbox)
    revoked = await client.post(
        "/_sandbox/revoke-refresh-tokens",
        json={
            "error": "PAYMENT_REQUIRED",
            "error_description": "Payment required",
            "status": 401,
        },
    )
    assert revoked.json() == {"revoked": 1}
    response = await client.post(
        "/oauth/token/",
        data={
            "grant_type": "refresh_token",
            "client_id": "local.sandbox",
            "client_secret": sandbox.config.client_secret,
            "refresh_token": tokens["refresh_token"],
        },
    )
    assert response.status_code == 401
    assert response.json() == {"error": "PAYMENT_REQUIRED", "error_description": "Payment required"}
