"""The Bitrix24-shaped `/rest/` surface: requests and answers exactly as Bitrix24's.

Every encoding Bitrix24 takes, the client key wherever a Bitrix24 token may stand, answers
passed through unwrapped, and each gateway-side failure in the error shape that makes a
Bitrix24 client do the right thing (docs/protocol.md §3, §4, §6).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from b24gate.api import bitrix_shape, error_response
from b24gate.core import new_key
from b24gate.errors import TokenRejected

from .conftest import MakeStack, Stack


async def url_key_client(stack: Stack, name: str = "hook") -> str:
    """A client allowed to carry its key in a webhook-style URL (`client add --allow-url-key`)."""
    key = new_key()
    await stack.gateway.store.add_client(
        name, key.key_id, key.key_hash, ["demo"], [], [], allow_url_key=True
    )
    return key.key


def bitrix_error(response: httpx.Response, status: int, error: str) -> str:
    """Assert Bitrix24's error shape; return the description."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == error, body
    assert isinstance(body["error_description"], str)
    assert body["error_description"]
    description: str = body["error_description"]
    return description


async def titles(stack: Stack, key: str) -> list[str]:
    listed = await stack.http.post(
        "/rest/crm.deal.list", json={"auth": key, "order": {"ID": "ASC"}, "select": ["TITLE"]}
    )
    assert listed.status_code == 200
    return [row["TITLE"] for row in listed.json()["result"]]


async def test_params_in_every_encoding_bitrix24_takes(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    http = stack.http
    auth = {"Authorization": f"Bearer {key}"}
    query = await http.get(
        "/rest/crm.deal.add.json", params={"fields[TITLE]": "query"}, headers=auth
    )
    form = await http.post("/rest/crm.deal.add", data={"fields[TITLE]": "form"}, headers=auth)
    multipart = await http.post(
        "/rest/crm.deal.add.json", files={"fields[TITLE]": (None, "multipart")}, headers=auth
    )
    json_ = await http.post("/rest/crm.deal.add", json={"fields": {"TITLE": "json"}}, headers=auth)
    for response in (query, form, multipart, json_):
        assert response.status_code == 200, response.text
        assert isinstance(response.json()["result"], int)
    assert await titles(stack, key) == ["query", "form", "multipart", "json"]

    # PHP brackets: an operator in a filter key, a list of fields.
    first = query.json()["result"]
    picked = await http.post(
        "/rest/crm.deal.list",
        data={"filter[>ID]": str(first), "select[]": ["ID", "TITLE"], "order[ID]": "DESC"},
        headers=auth,
    )
    assert picked.status_code == 200
    assert picked.json()["result"] == [
        {"ID": str(first + 3), "TITLE": "json"},
        {"ID": str(first + 2), "TITLE": "multipart"},
        {"ID": str(first + 1), "TITLE": "form"},
    ]


async def test_answers_are_bitrix24s_own_unwrapped(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    await stack.control.post("/_sandbox/seed", json={"entity": "crm.deal", "count": 60})
    page = await stack.http.post("/rest/crm.deal.list", json={"auth": key})
    assert page.status_code == 200
    body = page.json()
    assert set(body) == {"result", "total", "next", "time"}
    assert (len(body["result"]), body["total"], body["next"]) == (50, 60, 50)
    for field in ("start", "finish", "duration", "processing", "date_start", "date_finish"):
        assert field in body["time"]
    last = await stack.http.post("/rest/crm.deal.list", json={"auth": key, "start": 50})
    assert "next" not in last.json()
    assert len(last.json()["result"]) == 10
    scalar = await stack.http.post("/rest/profile", json={"auth": key})
    assert set(scalar.json()) == {"result", "time"}


async def test_batch_passes_through_with_references(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    as_json = await stack.http.post(
        "/rest/batch",
        json={
            "auth": key,
            "halt": 0,
            "cmd": {
                "deal": "crm.deal.add?fields[TITLE]=referenced",
                "back": "crm.deal.get?id=$result[deal]",
                "broken": "crm.deal.get?id=999999",
            },
        },
    )
    assert as_json.status_code == 200
    batch = as_json.json()["result"]
    assert batch["result"]["back"]["ID"] == str(batch["result"]["deal"])
    assert batch["result"]["back"]["TITLE"] == "referenced"
    assert batch["result_error"] == {"broken": {"error": "", "error_description": "Not found"}}
    assert set(batch) == {"result", "result_error", "result_total", "result_next", "result_time"}
    # Form mode: each command URL-encoded once more, as Bitrix24 wants it.
    as_form = await stack.http.post(
        "/rest/batch.json",
        content=(
            f"auth={key}&halt=1"
            "&cmd[a]=crm.deal.add%3Ffields%255BTITLE%255D%3Dfrom%2520form"
            "&cmd[b]=crm.deal.get%3Fid%3D%24result%5Ba%5D"
        ).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert as_form.status_code == 200
    assert as_form.json()["result"]["result"]["b"]["TITLE"] == "from form"


async def test_bitrix24_errors_pass_through_as_they_are(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    missing = await stack.http.post("/rest/crm.deal.get", json={"auth": key, "id": 999})
    assert missing.status_code == 400
    assert missing.json() == {"error": "", "error_description": "Not found"}
    unknown = await stack.http.post("/rest/no.such.method", json={"auth": key})
    bitrix_error(unknown, 404, "ERROR_METHOD_NOT_FOUND")


@pytest.mark.parametrize("where", ["json body", "form body", "query", "bearer"])
async def test_the_key_stands_where_a_token_would(connected: tuple[Stack, str], where: str) -> None:
    stack, key = connected
    if where == "query":
        # A key in the query string lands in proxies' access logs, as one in the path:
        # it takes a client created with --allow-url-key (tests/security has the refusal).
        key = await url_key_client(stack)
    request: dict[str, Any] = {
        "json body": {"json": {"auth": key}},
        "form body": {"data": {"auth": key}},
        "query": {"params": {"auth": key}},
        "bearer": {"headers": {"Authorization": f"Bearer {key}"}},
    }[where]
    response = await stack.http.post("/rest/user.current", **request)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["ID"] == "1"
    urls = (await stack.control.get("/_sandbox/received")).json()["urls"]
    assert not any(key in url for url in urls)  # the sandbox never sees the client key
    assert (await stack.counters())["secret_in_query"] == 0


async def test_a_missing_or_bad_key_is_no_auth_found(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    before = (await stack.counters())["rest_calls"]
    requests: list[dict[str, Any]] = [
        {},
        {"json": {"auth": ""}},
        {"json": {"auth": key + "x"}},
        {"params": {"auth": "b24_000000000000_" + "A" * 43}},
        {"headers": {"Authorization": "Bearer nonsense"}},
        {"headers": {"Authorization": f"Basic {key}"}},
    ]
    for request in requests:
        response = await stack.http.post("/rest/profile", **request)
        bitrix_error(response, 401, "NO_AUTH_FOUND")
    await stack.gateway.store.revoke_client("erp")
    revoked = await stack.http.post("/rest/profile", json={"auth": key})
    bitrix_error(revoked, 401, "NO_AUTH_FOUND")
    assert (await stack.counters())["rest_calls"] == before


async def test_the_webhook_style_url_form_only_when_allowed(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    refused = await stack.http.post(f"/rest/1/{key}/profile")
    bitrix_error(refused, 401, "INVALID_CREDENTIALS")
    hook = await url_key_client(stack)
    for path in (f"/rest/1/{hook}/profile", f"/rest/1/{hook}/profile.json"):
        allowed = await stack.http.post(path)
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["result"]["ID"] == "1"
    deal = await stack.http.post(
        f"/rest/1/{hook}/crm.deal.add.json", data={"fields[TITLE]": "via url key"}
    )
    assert deal.status_code == 200
    bad = await stack.http.post(f"/rest/1/{hook}x/profile")
    bitrix_error(bad, 401, "INVALID_CREDENTIALS")
    urls = (await stack.control.get("/_sandbox/received")).json()["urls"]
    assert not any(hook in url or key in url for url in urls)


async def test_what_a_key_may_not_use_is_access_denied(connected: tuple[Stack, str]) -> None:
    stack, _ = connected
    await stack.add_portal("other", domain="other.example.com")
    crm_only = await stack.add_client("crm", portals=("demo",), methods=("crm.*",))
    auth = {"Authorization": f"Bearer {crm_only}"}
    assert (await stack.http.post("/rest/crm.deal.list", headers=auth)).status_code == 200
    for path, body in (
        ("/rest/user.current", {}),
        ("/rest/batch", {"cmd": {"a": "crm.deal.list", "b": "user.current"}}),
        ("/portals/other/rest/crm.deal.list", {}),
        ("/portals/nowhere/rest/crm.deal.list", {}),
    ):
        response = await stack.http.post(path, json=body, headers=auth)
        bitrix_error(response, 403, "ACCESS_DENIED")
    elsewhere = await stack.add_client("far", ips=("10.1.0.0/16",))
    denied = await stack.http.post("/rest/profile", json={"auth": elsewhere})
    bitrix_error(denied, 403, "ACCESS_DENIED")


async def test_a_portal_needing_authorization_is_access_denied_with_the_reason(
    connected: tuple[Stack, str],
) -> None:
    stack, _ = connected
    await stack.add_portal("fresh", domain="fresh.example.com")
    fresh = await stack.add_client("f", portals=("fresh",))
    never = await stack.http.post("/rest/profile", json={"auth": fresh})
    description = bitrix_error(never, 403, "ACCESS_DENIED")
    assert "never connected" in description
    assert "b24gate portal authorize fresh" in description

    key = await stack.add_client("again")
    await stack.control.post("/_sandbox/revoke-refresh-tokens")
    await stack.control.post("/_sandbox/expire-access-tokens")
    revoked = await stack.http.post("/rest/profile", json={"auth": key})
    description = bitrix_error(revoked, 403, "ACCESS_DENIED")
    assert "invalid_grant" in description
    assert "b24gate portal authorize demo" in description


async def test_an_expired_portal_token_is_refreshed_unseen(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    await stack.control.post("/_sandbox/expire-access-tokens")
    response = await stack.http.post("/rest/profile", json={"auth": key})
    assert response.status_code == 200
    assert (await stack.counters())["grants"].get("refresh_token") == 1


async def test_a_portal_refusing_fresh_tokens_is_never_expired_token(
    make_stack: MakeStack,
) -> None:
    # Every token the portal issues is stale at once (like an on-premise box with its clock
    # off): the gateway refreshes once, is refused again, and must not hand the client an
    # `expired_token` that would make it "refresh" its client key.
    stack = await make_stack({"access_ttl": 0})
    await stack.add_portal()
    assert (await stack.connect()).status_code == 200
    key = await stack.add_client()
    response = await stack.http.post("/rest/profile", json={"auth": key})
    description = bitrix_error(response, 403, "ACCESS_DENIED")
    assert "expired_token" in description
    v3 = error_response(
        TokenRejected(401, "invalid_token", "Unable to get application by token."),
        bitrix_shape(url_key=False, v3=True),
    )
    assert v3.status_code == 403
    assert b'"code":"ACCESS_DENIED"' in v3.body


async def test_an_exhausted_request_limit_is_503_query_limit_exceeded(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    await stack.control.post("/_sandbox/faults", json={"kind": "503", "count": 2})
    retried = await stack.http.post("/rest/profile", json={"auth": key})
    assert retried.status_code == 200  # backed off and retried inside the gateway
    await stack.control.post("/_sandbox/faults", json={"kind": "503", "count": 10})
    exhausted = await stack.http.post("/rest/profile", json={"auth": key})
    bitrix_error(exhausted, 503, "QUERY_LIMIT_EXCEEDED")
    assert int(exhausted.headers["Retry-After"]) >= 1
    await stack.control.delete("/_sandbox/faults")


async def test_a_blocked_method_is_429_operation_time_limit(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    await stack.control.post(
        "/_sandbox/method-cost", json={"method": "crm.deal.list", "seconds": 500}
    )
    assert (await stack.http.post("/rest/crm.deal.list", json={"auth": key})).status_code == 200
    blocked = await stack.http.post("/rest/crm.deal.list", json={"auth": key})
    bitrix_error(blocked, 429, "OPERATION_TIME_LIMIT")
    assert 500 <= int(blocked.headers["Retry-After"]) <= 601
    assert (await stack.http.post("/rest/profile", json={"auth": key})).status_code == 200


async def test_an_invalid_method_name_is_method_not_found(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    before = (await stack.counters())["rest_calls"]
    for path in ("/rest/", "/rest/crm..deal.list", "/rest/crm.deal.list;drop", "/rest/a/b"):
        response = await stack.http.post(path, json={"auth": key})
        bitrix_error(response, 404, "ERROR_METHOD_NOT_FOUND")
    assert (await stack.counters())["rest_calls"] == before


async def test_bad_bodies_are_invalid_request(make_stack: MakeStack) -> None:
    stack = await make_stack(body_limit=1024)
    await stack.add_portal()
    await stack.connect()
    key = await stack.add_client()
    auth = {"Authorization": f"Bearer {key}"}
    for content, content_type in (
        (b'{"fields": ', "application/json"),
        (b"[1, 2]", "application/json"),
        (b"--x\r\nbroken", "multipart/form-data"),  # no boundary
        (b"\xff\xfe=1", "application/x-www-form-urlencoded"),
    ):
        response = await stack.http.post(
            "/rest/crm.deal.add", content=content, headers={**auth, "Content-Type": content_type}
        )
        bitrix_error(response, 400, "INVALID_REQUEST")
    # `.xml` asks Bitrix24 for an XML answer the gateway could not read: refused, not sent.
    xml = await stack.http.post("/rest/crm.deal.add.xml", data={"fields[TITLE]": "x"}, headers=auth)
    assert "XML" in bitrix_error(xml, 400, "INVALID_REQUEST")
    # Over the limit in several small parts, each under it: the whole body counts.
    parts = {f"fields[F{i}]": (None, "x" * 300) for i in range(5)}
    big = await stack.http.post("/rest/crm.deal.add", files=parts, headers=auth)
    bitrix_error(big, 413, "INVALID_REQUEST")
    assert (await stack.counters())["rest_calls"] == 0


async def test_several_portals_are_reached_by_name(connected: tuple[Stack, str]) -> None:
    stack, _ = connected
    await stack.add_portal("other", domain="other.example.com")
    two = await stack.add_client("two", portals=("demo", "other"))
    ambiguous = await stack.http.post("/rest/profile", json={"auth": two})
    assert "portal" in bitrix_error(ambiguous, 400, "INVALID_REQUEST")
    named = await stack.http.post("/portals/demo/rest/profile.json", json={"auth": two})
    assert named.status_code == 200
    assert named.json()["result"]["ID"] == "1"


async def test_rest_3_paths_answer_in_rest_3s_error_shape(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({}, 401, "NO_AUTH_FOUND"),
        ({"json": {"auth": key}}, 404, "ERROR_METHOD_NOT_FOUND"),
    ]
    for request, status, code in cases:
        response = await stack.http.post("/rest/api/tasks.task.get", **request)
        assert response.status_code == status
        error = response.json()["error"]
        assert set(error) == {"code", "message"}
        assert error["code"] == code


async def test_no_key_or_secret_in_logs_or_upstream_urls(
    connected: tuple[Stack, str], logs: pytest.LogCaptureFixture
) -> None:
    stack, key = connected
    hook = await url_key_client(stack)
    http = stack.http
    await http.get("/rest/crm.deal.add", params={"auth": key, "fields[TITLE]": "q"})
    await http.post("/rest/crm.deal.add", data={"auth": key, "fields[TITLE]": "f"})
    await http.post("/rest/crm.deal.get", json={"auth": key, "id": 424242})
    await http.post(f"/rest/1/{hook}/profile")
    await http.post(f"/rest/1/{key}/profile")  # refused: not allowed in a URL
    await http.post("/rest/profile", params={"auth": key + "x"})
    await http.post("/rest/no.such.method", headers={"Authorization": f"Bearer {key}"})
    await stack.control.post("/_sandbox/expire-access-tokens")
    await http.post("/rest/profile", json={"auth": key})

    secrets = (await stack.control.get("/_sandbox/secrets")).json()["secrets"]
    secrets += [key, hook]
    # The gateway's records (the test's own HTTP client logs its URLs; that is not the gateway).
    text = "\n".join(
        r.getMessage() for r in logs.records if not r.name.startswith(("httpx", "httpcore"))
    )
    assert "surface=rest" in text  # the calls were logged
    urls = "\n".join((await stack.control.get("/_sandbox/received")).json()["urls"])
    for secret in secrets:
        assert secret not in text
        assert secret not in urls
    assert (await stack.counters())["secret_in_query"] == 0


async def test_a_write_of_unknown_outcome_is_a_4xx_that_clients_do_not_repeat(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    await stack.control.post("/_sandbox/faults", json={"kind": "drop-after"})
    response = await stack.http.post(
        "/rest/crm.deal.add", json={"auth": key, "fields": {"TITLE": "maybe"}}
    )
    bitrix_error(response, 409, "UPSTREAM_OUTCOME_UNKNOWN")
    assert await titles(stack, key) == ["maybe"]  # done once, and not again


async def test_an_unreachable_oauth_server_during_refresh_is_503(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    await stack.control.post(
        "/_sandbox/faults", json={"kind": "500", "target": "oauth", "count": 5}
    )
    await stack.control.post("/_sandbox/expire-access-tokens")
    response = await stack.http.post("/rest/profile", json={"auth": key})
    assert "OAuth server" in bitrix_error(response, 503, "INTERNAL_SERVER_ERROR")
    await stack.control.delete("/_sandbox/faults")
    assert (await stack.http.post("/rest/profile", json={"auth": key})).status_code == 200


async def test_rest_3_paths_pass_through_to_the_portal(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    added = await stack.http.post(
        "/rest/api/crm.deal.add", json={"auth": key, "fields": {"TITLE": "через REST 3.0"}}
    )
    assert added.status_code == 200, added.text
    got = await stack.http.post(
        "/rest/api/crm.deal.get", headers={"Authorization": f"Bearer {key}"},
        json={"id": added.json()["result"]},
    )  # fmt: skip
    assert got.json()["result"]["TITLE"] == "через REST 3.0"
    missing = await stack.http.post("/rest/api/crm.deal.get", json={"auth": key, "id": 999})
    assert missing.status_code == 400
    assert missing.json() == {"error": {"code": "", "message": "Not found"}}
    urls = (await stack.control.get("/_sandbox/received")).json()["urls"]
    assert "/rest/api/crm.deal.get" in urls
    assert not any(key in u for u in urls)
