"""The lesser holes of the HTTP surface (issue 10, item 6), each as an attacker tries it.

A key in the query string where proxies log it; a key probing for portals it may not use;
a method name that forges a log line; Bitrix24's error bodies carrying more than its two
fields (or the portal's token); the connect pages framed or cached.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from b24gate.api import bitrix_shape, error_response
from b24gate.core import new_key
from b24gate.errors import LockTimeout

from .conftest import Stack


async def url_key_client(stack: Stack, name: str = "hook") -> str:
    key = new_key()
    await stack.gateway.store.add_client(
        name, key.key_id, key.key_hash, ["demo"], [], [], allow_url_key=True
    )
    return key.key


async def test_a_key_in_the_query_string_needs_allow_url_key(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    before = (await stack.counters())["rest_calls"]
    for method in ("GET", "POST"):
        refused = await stack.http.request(method, "/rest/profile", params={"auth": key})
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"] == "NO_AUTH_FOUND"
        # Also when the body or the header carries the key as well: the URL has it.
        both = await stack.http.request(
            method,
            "/rest/profile",
            params={"auth": key},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert both.status_code == 401
    assert (await stack.counters())["rest_calls"] == before  # nothing ran
    hook = await url_key_client(stack)
    allowed = await stack.http.get("/rest/profile", params={"auth": hook})
    assert allowed.status_code == 200, allowed.text
    # Two different keys in one request: whichever the gateway checked, refused.
    mixed = await stack.http.post("/rest/profile", params={"auth": hook}, json={"auth": key})
    assert mixed.status_code == 401


async def test_a_forbidden_portal_answers_as_a_missing_one(connected: tuple[Stack, str]) -> None:
    stack, _ = connected
    await stack.add_portal("secret", domain="secret.example.com")
    key = await stack.add_client("crm", portals=("demo",))
    auth = {"Authorization": f"Bearer {key}"}

    async def probe(**target: str) -> httpx.Response:
        return await stack.http.post(
            "/api/v1/call", json={"method": "profile", **target}, headers=auth
        )

    for exists, missing in (
        (await probe(portal="secret"), await probe(portal="nowhere")),
        (await probe(domain="secret.example.com"), await probe(domain="nowhere.example.com")),
    ):
        assert exists.status_code == missing.status_code == 404
        assert exists.headers.keys() == missing.headers.keys()
        shown = exists.json()
        assert shown["code"] == missing.json()["code"] == "unknown_portal"
        assert shown["error"].replace("secret", "nowhere") == missing.json()["error"]
    on_rest = await stack.http.post("/portals/secret/rest/profile", headers=auth)
    off_rest = await stack.http.post("/portals/nowhere/rest/profile", headers=auth)
    assert on_rest.status_code == off_rest.status_code
    assert on_rest.text.replace("secret", "nowhere") == off_rest.text


async def test_a_newline_in_the_method_cannot_forge_a_log_line(
    connected: tuple[Stack, str], caplog: pytest.LogCaptureFixture
) -> None:
    stack, key = connected
    forged = "crm.deal.list\n2026-01-01 00:00:00 INFO b24gate.calls client=admin status=200"
    caplog.set_level(logging.INFO, logger="b24gate.calls")
    caplog.clear()
    answer = await stack.call(key, {"method": forged})
    assert answer.status_code == 400
    on_rest = await stack.http.post(
        "/rest/" + forged.replace("\n", "%0A").replace(" ", "%20"), json={"auth": key}
    )
    assert on_rest.status_code == 404
    assert on_rest.json()["error"] == "ERROR_METHOD_NOT_FOUND"
    lines = [r.getMessage() for r in caplog.records if r.name == "b24gate.calls"]
    assert len(lines) == 2, lines  # one line per call, not two
    for line in lines:
        assert "\n" not in line
        assert line.count("client=") == 2  # the real field, and the forged text in quotes
        assert line.startswith("client=erp ")


# A portal whose answers carry more than Bitrix24's two fields, and echo the token it got.
@pytest.fixture
async def echoing(connected: tuple[Stack, str]) -> AsyncIterator[tuple[Stack, str, list[str]]]:
    stack, key = connected
    tokens: list[str] = []

    async def rest(request: web.Request) -> web.Response:
        body = await request.json()
        tokens.append(body["auth"])
        leak = f"auth={body['auth']} at /home/bitrix/www/bitrix/modules/rest/lib/x.php:42"
        if request.match_info["method"] == "batch":
            error = {"error": "ERROR_CORE", "error_description": leak, "trace": leak}
            # A `cmd` sent as a list: PHP writes the errors keyed 0..n-1 as a JSON list.
            listed = isinstance(body.get("cmd"), list)
            answer: dict[str, Any] = {
                "result": {
                    "result": [] if listed else {},
                    "result_error": [error] if listed else {"a": error},
                    "result_total": [],
                    "result_next": [],
                    "result_time": [],
                },
                "time": {"start": 1.0, "finish": 1.1},
            }
            return web.json_response(answer)
        if request.path.startswith("/rest/api/"):  # REST 3.0's shape
            v3 = {"code": f"ERROR_{body['auth']}", "message": leak, "trace": leak}
            return web.json_response({"error": v3, "debug": {"sql": leak}}, status=400)
        error = {"error": f"ERROR_{body['auth']}", "error_description": leak}
        return web.json_response({**error, "trace": leak, "debug": {"sql": leak}}, status=400)

    app = web.Application()
    app.router.add_post("/rest/{method}", rest)
    app.router.add_post("/rest/api/{method}", rest)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await stack.gateway.store.update_portal(
        "demo", client_endpoint=f"http://127.0.0.1:{port}/rest/"
    )
    yield stack, key, tokens
    await runner.cleanup()


async def test_bitrix24_error_bodies_come_back_with_two_fields_and_no_token(
    echoing: tuple[Stack, str, list[str]],
) -> None:
    stack, key, tokens = echoing
    auth = {"Authorization": f"Bearer {key}"}
    batch = {"cmd": {"a": "crm.deal.get?id=1"}}
    answers = [
        await stack.http.post("/rest/crm.deal.get", json={"id": 1}, headers=auth),
        await stack.http.post("/rest/api/crm.deal.get", json={"id": 1}, headers=auth),
        await stack.http.post("/rest/batch", json=batch, headers=auth),
        await stack.call(key, {"method": "crm.deal.get", "params": {"id": 1}}),
        await stack.call(key, {"method": "batch", "params": batch}),
    ]
    assert tokens
    assert all(tokens)
    for answer in answers:
        text = answer.text
        assert not any(token in text for token in tokens), text
        assert "trace" not in text, text
        assert "debug" not in text, text
        assert "[redacted]" in text
    plain, v3, passed = (orjson.loads(a.content) for a in answers[:3])
    assert set(plain) == {"error", "error_description"}
    assert set(v3["error"]) == {"code", "message"}
    assert set(passed["result"]["result_error"]["a"]) == {"error", "error_description"}
    assert set(answers[3].json()["bitrix"]) == {"error", "error_description"}
    assert set(answers[4].json()["data"]["result"]["result_error"]["a"]) == {
        "error",
        "error_description",
    }


async def test_connect_pages_cannot_be_framed_cached_or_referred(stack: Stack) -> None:
    await stack.add_portal()
    pages = [
        await stack.http.get("/oauth/start"),  # no ticket: an error page
        await stack.http.get("/oauth/callback", params={"state": "forged", "code": "x"}),
        await stack.connect(),  # the whole flow: the redirect, then "Portal connected"
    ]
    for page in pages:
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "no-referrer"
    assert pages[2].status_code == 200
    redirect = pages[2].history[0]
    assert redirect.headers["referrer-policy"] == "no-referrer"
    assert redirect.headers["cache-control"] == "no-store"


async def test_json_answers_are_never_cached(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    for answer in (
        await stack.call(key, {"method": "profile"}),
        await stack.call(None, {"method": "profile"}),
        await stack.http.post("/rest/profile", json={"auth": key}),
        await stack.http.post("/rest/profile"),
    ):
        assert answer.headers["cache-control"] == "no-store", answer.request.url


async def test_a_list_of_batch_errors_comes_back_with_two_fields_and_no_token(
    echoing: tuple[Stack, str, list[str]],
) -> None:
    """A ``cmd`` sent as a list gets its errors back as a list: scrubbed and reduced too."""
    stack, key, tokens = echoing
    batch = {"cmd": ["crm.deal.get?id=1"]}
    answers = [
        await stack.http.post(
            "/rest/batch", json=batch, headers={"Authorization": f"Bearer {key}"}
        ),
        await stack.call(key, {"method": "batch", "params": batch}),
    ]
    assert tokens
    for answer in answers:
        assert answer.status_code == 200, answer.text
        text = answer.text
        assert not any(token in text for token in tokens), text
        assert "trace" not in text, text
        assert "[redacted]" in text
    on_rest, on_call = answers[0].json(), answers[1].json()["data"]
    for body in (on_rest, on_call):
        assert isinstance(body["result"]["result_error"], list)  # the shape as Bitrix24's
        assert set(body["result"]["result_error"][0]) == {"error", "error_description"}


def test_a_busy_token_refresh_is_a_503_to_retry_on_rest() -> None:
    """Another request refreshing the portal's token (a lock not free in time) is a moment's
    wait on ``/rest/`` as on ``/api/v1``: 503 with Retry-After, which clients back off on,
    not a 500."""
    for v3 in (False, True):
        answer = error_response(LockTimeout("busy"), bitrix_shape(url_key=False, v3=v3))
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "1"
