"""Where a client key may stand on ``/rest/``, and where it is only data.

The gateway finds a body's key by a search before it parses anything; what the search finds
must be the top-level ``auth`` the parse finds, or the key authenticates from where
Bitrix24 would never read it (and goes on to the portal as data). And whether a key is
"in the URL", where proxies log it, is what PHP's parse of the query says, whatever the
spelling (``%61uth``).
"""

from __future__ import annotations

import pytest

from b24gate.core import hash_key

from .conftest import MakeStack, Stack
from .test_surface_hardening import url_key_client

ADMIN = "admin-token-for-tests-123456"


def deals(stack: Stack) -> int:
    return len(stack.sandbox.portal.tables["crm.deal"].records)


async def test_a_key_nested_in_the_body_does_not_authenticate(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    before = (await stack.counters())["rest_calls"]
    for body in (
        {"fields": {"TITLE": "t", "auth": key}},
        {"fields": {"TITLE": "t"}, "other": [{"auth": key}]},
        {"auth": {"auth": key}, "fields": {"TITLE": "t"}},
    ):
        answer = await stack.http.post("/rest/crm.deal.add", json=body)
        assert answer.status_code == 401, (body, answer.text)
        assert answer.json()["error"] == "NO_AUTH_FOUND"
    assert (await stack.counters())["rest_calls"] == before
    assert deals(stack) == 0  # no deal carrying the key in its fields


async def test_the_client_key_never_goes_to_the_portal_as_data(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    bearer = {"Authorization": f"Bearer {key}"}
    before = (await stack.counters())["rest_calls"]
    for headers, body in (
        (bearer, {"fields": {"TITLE": key}}),
        (bearer, {"fields": {"TITLE": "t", "auth": key}}),
        ({}, {"auth": key, "fields": {"TITLE": f"my key is {key}"}}),
    ):
        answer = await stack.http.post("/rest/crm.deal.add", json=body, headers=headers)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"] == "INVALID_REQUEST"
    form = await stack.http.post(
        "/rest/crm.deal.add",
        content=f"auth={key}&fields[TITLE]={key}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 400, form.text
    assert (await stack.counters())["rest_calls"] == before
    assert deals(stack) == 0
    # The control: the same call with the key where it belongs is served.
    done = await stack.http.post("/rest/crm.deal.add", json={"auth": key, "fields": {"TITLE": "t"}})
    assert done.status_code == 200, done.text
    assert deals(stack) == 1


async def test_an_encoded_auth_in_the_query_is_a_key_in_the_url(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    bearer = {"Authorization": f"Bearer {key}"}
    before = (await stack.counters())["rest_calls"]
    for query in (f"%61uth={key}", f"%61%75%74%68={key}", f"auth[]={key}", f"x=1&%61uth={key}"):
        for method in ("GET", "POST"):
            answer = await stack.http.request(method, f"/rest/profile?{query}", headers=bearer)
            assert answer.status_code == 401, (query, answer.text)
            assert answer.json()["error"] == "NO_AUTH_FOUND"
    assert (await stack.counters())["rest_calls"] == before  # nothing ran
    # A key allowed in URLs may be spelled so.
    hook = await url_key_client(stack)
    allowed = await stack.http.get(
        f"/rest/profile?%61uth={hook}", headers={"Authorization": f"Bearer {hook}"}
    )
    assert allowed.status_code == 200, allowed.text


async def test_the_authorization_header_is_read_one_way_everywhere(
    make_stack: MakeStack,
) -> None:
    """``Authorization: Bearer`` is one parser for every route: the scheme in any case (RFC
    9110), and nothing without it, the admin token at /metrics included (it used to pass
    bare, with no scheme, where a client key would not)."""
    stack = await make_stack(admin_token=ADMIN)
    await stack.add_portal()
    await stack.connect()
    key = await stack.add_client("erp")
    for scheme in ("Bearer", "bearer", "BEARER"):
        headers = {"Authorization": f"{scheme} {key}"}
        assert (await stack.http.post("/rest/profile", headers=headers)).status_code == 200
        called = await stack.http.post("/api/v1/call", json={"method": "profile"}, headers=headers)
        assert called.status_code == 200, called.text
        metrics = {"Authorization": f"{scheme} {ADMIN}"}
        assert (await stack.http.get("/metrics", headers=metrics)).status_code == 200
    for header in (ADMIN, f"Basic {ADMIN}", f"Bearer{ADMIN}"):
        refused = await stack.http.get("/metrics", headers={"Authorization": header})
        assert refused.status_code == 403, header
    for header in (key, f"Basic {key}"):
        answer = await stack.http.post(
            "/api/v1/call", json={"method": "profile"}, headers={"Authorization": header}
        )
        assert answer.status_code == 401, header


@pytest.mark.parametrize("tail", ["A" * 43, "A-" * 21 + "A"])
async def test_a_key_where_the_method_goes_is_never_sent_logged_or_echoed(
    connected: tuple[Stack, str], logs: pytest.LogCaptureFixture, tail: str
) -> None:
    # A webhook URL without its user id (`/rest/<key>`) makes the key the path's last
    # segment, the method; with the key also in the header, it used to go to Bitrix24 as a
    # method name with the portal's token, and into the call log line.
    # Both kinds of key: one that is also a well-formed method name (no `-`), which went
    # on to Bitrix24, and one that is not.
    stack, _ = connected
    key = f"b24_0123456789ab_{tail}"
    await stack.gateway.store.add_client(
        "crafted", "0123456789ab", hash_key(key), ["demo"], [], [], False
    )
    before = (await stack.counters())["rest_calls"]
    headers = {"Authorization": f"Bearer {key}"}
    batch = {"cmd": {"a": key}}
    for verb, path, body in (
        ("GET", f"/rest/{key}", None),
        ("POST", f"/rest/{key}.json", None),
        ("POST", "/api/v1/call", {"portal": "demo", "method": key}),
        ("POST", "/api/v1/call", {"portal": "demo", "method": "batch", "params": batch}),
    ):
        answer = await stack.http.request(verb, path, json=body, headers=headers)
        # 400 invalid_method; on /rest/, Bitrix24's own answer to a bad name (404).
        assert answer.status_code in (400, 404), answer.text
        assert key not in answer.text
    assert (await stack.counters())["rest_calls"] == before
    ours = "\n".join(r.getMessage() for r in logs.records if r.name.startswith("b24gate"))
    assert key not in ours
    assert f"{key[:17]}***" in ours  # the call's line still says which key it was
