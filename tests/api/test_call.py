"""`POST /api/v1/call`: success, Cyrillic, BOM, and every error status of docs/http-api.md."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from b24gate.testing import free_port

from .conftest import MakeStack, Stack


def error_of(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    assert body["status"] == response.status_code
    assert isinstance(body["error"], str)
    assert body["error"]
    return body


async def test_a_call_returns_bitrix24s_answer(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    response = await stack.call(key, {"portal": "demo", "method": "profile"})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["data"]["result"]["ID"] == "1"
    assert set(body["data"]["time"]) >= {"start", "finish", "duration"}


async def test_cyrillic_round_trip(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    title = "Поставка «Ромашка» №7 — ёлки"
    added = await stack.call(
        key, {"method": "crm.deal.add", "params": {"fields": {"TITLE": title}}}
    )
    deal_id = added.json()["data"]["result"]
    got = await stack.call(key, {"method": "crm.deal.get", "params": {"id": deal_id}})
    assert got.json()["data"]["result"]["TITLE"] == title
    assert title in got.content.decode("utf-8")  # answered as UTF-8, not \\u escapes


async def test_body_with_a_byte_order_mark_as_1c_sends(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    raw = "\ufeff" + json.dumps(
        {"method": "crm.deal.add", "params": {"fields": {"TITLE": "Из 1С"}}}, ensure_ascii=False
    )
    response = await stack.call(
        key, raw.encode("utf-8"), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["data"]["result"], int)


async def test_domain_instead_of_portal_as_php_proxies_send(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    domain = stack.sandbox.portal.domain
    for value in (domain, f"http://{domain}"):
        response = await stack.call(key, {"domain": value, "method": "profile"})
        assert response.status_code == 200, value


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b"\xff\xfe{}", "invalid_json"),
        (b"{}", "invalid_request"),
        (b'{"method": 5}', "invalid_request"),
        (b'{"method": "profile", "params": [1]}', "invalid_request"),
        (b'{"method": "profile", "extra": 1}', "invalid_request"),
        (b'{"method": "profile", "portal": "demo", "domain": "x"}', "invalid_request"),
        (b'{"method": "profile", "portal": ""}', "invalid_request"),
        (b'{"method": "crm.deal/list"}', "invalid_method"),
        (b'{"method": "../oauth/token"}', "invalid_method"),
        (b'{"method": "profile?auth=x"}', "invalid_method"),
        (b'{"method": "crm..deal"}', "invalid_method"),
    ],
)
async def test_bad_requests_get_400_with_a_code(
    connected: tuple[Stack, str], body: bytes, code: str
) -> None:
    stack, key = connected
    before = (await stack.counters())["rest_calls"]
    response = await stack.call(key, body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert error_of(response)["code"] == code
    assert (await stack.counters())["rest_calls"] == before  # nothing went upstream


async def test_client_keys(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    for header in (
        None,
        "Basic abc",
        "Bearer",
        "Bearer b24_000000000000_" + "x" * 43,
        "Bearer " + key + "x",
    ):
        headers = {"Authorization": header} if header else {}
        response = await stack.http.post(
            "/api/v1/call", json={"method": "profile"}, headers=headers
        )
        assert response.status_code == 401, header
        assert error_of(response)["code"] == "unauthorized"
    assert key.startswith("b24_")
    assert (await stack.call(key, {"method": "profile"})).status_code == 200
    assert await stack.gateway.store.revoke_client("erp")
    revoked = await stack.call(key, {"method": "profile"})
    assert revoked.status_code == 401  # on the very next call


async def test_unknown_portals_send_nothing_upstream(connected: tuple[Stack, str]) -> None:
    stack, _ = connected
    key = await stack.add_client("multi", portals=("demo",))
    before = await stack.counters()
    for body in (
        {"portal": "nope", "method": "profile"},
        {"domain": "evil.example.com", "method": "profile"},
        {"domain": "127.0.0.2", "method": "profile"},
        {"domain": "169.254.169.254", "method": "profile"},
        {"domain": "[::1]:8080", "method": "profile"},
        {"domain": "[::1", "method": "profile"},  # malformed: still a clear 404, not a 500
    ):
        response = await stack.call(key, body)
        assert response.status_code == 404, body
        assert error_of(response)["code"] == "unknown_portal"
    after = await stack.counters()
    assert after["rest_calls"] == before["rest_calls"]
    assert after["grants"] == before["grants"]


async def test_portal_method_and_address_permissions(connected: tuple[Stack, str]) -> None:
    stack, _ = connected
    await stack.add_portal("other", domain="other.example.com")
    crm_only = await stack.add_client("crm", portals=("demo",), methods=("CRM.*",))
    ok = await stack.call(crm_only, {"method": "crm.deal.list"})
    assert ok.status_code == 200
    # A portal the key may not use answers as one that does not exist (no enumeration).
    other = await stack.call(crm_only, {"portal": "other", "method": "crm.deal.list"})
    nowhere = await stack.call(crm_only, {"portal": "nowhere", "method": "crm.deal.list"})
    assert other.status_code == nowhere.status_code == 404
    assert error_of(other)["code"] == error_of(nowhere)["code"] == "unknown_portal"
    for body, code in (
        ({"method": "user.current"}, "method_forbidden"),
        (
            {"method": "batch", "params": {"cmd": {"a": "crm.deal.list", "b": "user.current"}}},
            "method_forbidden",
        ),
        (
            {"method": "batch", "params": {"cmd": ["crm.deal.list", "user.get?ID=1"]}},
            "method_forbidden",
        ),
    ):
        response = await stack.call(crm_only, body)
        assert response.status_code == 403, body
        assert error_of(response)["code"] == code
    batch = await stack.call(
        crm_only, {"method": "batch", "params": {"cmd": {"a": "crm.deal.list"}}}
    )
    assert batch.status_code == 200
    elsewhere = await stack.add_client("far", ips=("10.1.0.0/16",))
    denied = await stack.call(elsewhere, {"method": "profile"})
    assert denied.status_code == 403
    assert error_of(denied)["code"] == "ip_forbidden"
    here = await stack.add_client("near", ips=("127.0.0.0/8",))
    assert (await stack.call(here, {"method": "profile"})).status_code == 200


async def test_forwarded_for_counts_only_from_a_trusted_proxy(make_stack: MakeStack) -> None:
    stack = await make_stack(trusted_proxies=["127.0.0.1/32"])
    await stack.add_portal()
    await stack.connect()
    key = await stack.add_client(ips=("203.0.113.0/24",))
    direct = await stack.call(key, {"method": "profile"})
    assert direct.status_code == 403
    proxied = await stack.call(
        key, {"method": "profile"}, headers={"X-Forwarded-For": "203.0.113.9"}
    )
    assert proxied.status_code == 200
    spoofed = await stack.call(
        key, {"method": "profile"}, headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.1"}
    )
    assert spoofed.status_code == 403


async def test_several_portals_need_a_portal_field(connected: tuple[Stack, str]) -> None:
    stack, _ = connected
    await stack.add_portal("other", domain="other.example.com")
    key = await stack.add_client("two", portals=("demo", "other"))
    response = await stack.call(key, {"method": "profile"})
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_request"
    assert (await stack.call(key, {"portal": "demo", "method": "profile"})).status_code == 200


async def test_a_portal_never_connected_answers_409(connected: tuple[Stack, str]) -> None:
    stack, _ = connected
    await stack.add_portal("fresh", domain="fresh.example.com")
    key = await stack.add_client("f", portals=("fresh",))
    response = await stack.call(key, {"method": "profile"})
    assert response.status_code == 409
    body = error_of(response)
    assert body["code"] == "needs_authorization"
    assert "b24gate portal authorize fresh" in body["error"]


async def test_body_limit(make_stack: MakeStack) -> None:
    stack = await make_stack(body_limit=1024)
    await stack.add_portal()
    await stack.connect()
    key = await stack.add_client()
    big = {"method": "crm.deal.add", "params": {"fields": {"TITLE": "x" * 2000}}}
    response = await stack.call(key, big)
    assert response.status_code == 413
    assert error_of(response)["code"] == "body_too_large"

    async def pieces() -> AsyncIterator[bytes]:
        raw = json.dumps(big).encode()
        for start in range(0, len(raw), 100):
            yield raw[start : start + 100]

    chunked = await stack.http.post(
        "/api/v1/call",
        content=pieces(),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert chunked.status_code == 413


async def test_bitrix24_errors_pass_through(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    response = await stack.call(key, {"method": "crm.deal.get", "params": {"id": 999}})
    assert response.status_code == 400
    body = error_of(response)
    assert body["code"] == "bitrix_error"
    assert body["bitrix"] == {"error": "", "error_description": "Not found"}
    missing = await stack.call(key, {"method": "no.such.method"})
    assert missing.status_code == 404
    assert error_of(missing)["bitrix"]["error"] == "ERROR_METHOD_NOT_FOUND"


async def test_operation_time_limit_is_429_with_retry_after(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    await stack.control.post(
        "/_sandbox/method-cost", json={"method": "crm.deal.list", "seconds": 500}
    )
    assert (await stack.call(key, {"method": "crm.deal.list"})).status_code == 200
    blocked = await stack.call(key, {"method": "crm.deal.list"})
    assert blocked.status_code == 429
    body = error_of(blocked)
    assert body["code"] == "rate_limited"
    assert 500 <= body["retry_after"] <= 601
    assert blocked.headers["Retry-After"] == str(body["retry_after"])
    assert (await stack.call(key, {"method": "profile"})).status_code == 200


async def test_query_limit_exceeded_is_retried_transparently(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    await stack.control.post("/_sandbox/faults", json={"kind": "503", "count": 2})
    response = await stack.call(
        key, {"method": "crm.deal.add", "params": {"fields": {"TITLE": "once"}}}
    )
    assert response.status_code == 200
    listed = await stack.call(
        key, {"method": "crm.deal.list", "params": {"filter": {"TITLE": "once"}}}
    )
    assert listed.json()["data"]["total"] == 1  # not executed twice
    await stack.control.post("/_sandbox/faults", json={"kind": "503", "count": 10})
    exhausted = await stack.call(key, {"method": "profile"})
    assert exhausted.status_code == 429
    assert "Retry-After" in exhausted.headers
    await stack.control.delete("/_sandbox/faults")


async def test_upstream_failures(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    await stack.control.post("/_sandbox/faults", json={"kind": "malformed"})
    invalid = await stack.call(key, {"method": "profile"})
    assert (invalid.status_code, error_of(invalid)["code"]) == (502, "upstream_invalid")

    await stack.control.post("/_sandbox/faults", json={"kind": "drop-after"})
    unknown = await stack.call(
        key, {"method": "crm.deal.add", "params": {"fields": {"TITLE": "maybe"}}}
    )
    assert (unknown.status_code, error_of(unknown)["code"]) == (504, "upstream_outcome_unknown")
    listed = await stack.call(
        key, {"method": "crm.deal.list", "params": {"filter": {"TITLE": "maybe"}}}
    )
    assert listed.json()["data"]["total"] == 1  # it was done, and not repeated


async def test_timeouts_distinguish_reads_from_writes(make_stack: MakeStack) -> None:
    stack = await make_stack(upstream_timeout=0.3)
    await stack.add_portal()
    await stack.connect()
    key = await stack.add_client()
    await stack.control.post("/_sandbox/faults", json={"kind": "slow", "delay": 1.0})
    read = await stack.call(key, {"method": "crm.deal.list"})
    assert (read.status_code, error_of(read)["code"]) == (504, "upstream_timeout")
    await stack.control.post("/_sandbox/faults", json={"kind": "slow", "delay": 1.0})
    write = await stack.call(key, {"method": "crm.deal.add", "params": {"fields": {"TITLE": "t"}}})
    assert (write.status_code, error_of(write)["code"]) == (504, "upstream_outcome_unknown")


async def test_unreachable_portal(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    await stack.gateway.store.update_portal(
        "demo", url=f"http://127.0.0.1:{free_port()}", client_endpoint=None
    )
    response = await stack.call(key, {"method": "profile"})
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_unreachable"


async def test_health(stack: Stack) -> None:
    assert (await stack.http.get("/healthz")).json() == {"status": "ok"}
    assert (await stack.http.get("/readyz")).json() == {"status": "ok"}


async def test_one_log_line_per_call_without_params(
    connected: tuple[Stack, str], logs: pytest.LogCaptureFixture
) -> None:
    stack, key = connected
    caplog = logs
    caplog.clear()
    await stack.call(
        key, {"method": "crm.deal.add", "params": {"fields": {"TITLE": "secret-title-77"}}}
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "b24gate.calls"]
    assert len(lines) == 1
    line = lines[0]
    for part in (
        "client=erp",
        "portal=demo",
        "method=crm.deal.add",
        "status=200",
        "total_ms=",
        "upstream_ms=",
    ):
        assert part in line
    assert "secret-title-77" not in caplog.text
