"""The gateway's log lines as an operator reads them: one line per call whatever a client
named itself, JSON lines with fields on request, and the request id the client sent."""

from __future__ import annotations

import json
import logging

import pytest

from b24gate.testing import REQUEST_ID, JsonFormatter, RequestIdFilter, TextFormatter, fields_text

from .conftest import Stack


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("b24gate.calls", logging.INFO, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    RequestIdFilter().filter(record)
    return record


def test_a_hostile_client_name_cannot_break_or_forge_a_text_line() -> None:
    hostile = "erp\n2026-12-06 00:00:00 INFO b24gate.calls client=admin status=200"
    text = fields_text({"client": hostile, "method": "crm.deal add", "status": 200})
    line = TextFormatter().format(_record(text))
    assert "\n" not in line
    assert line.count("client=") == 2  # the real field, and the forged text inside its quotes
    assert 'client="erp\\n2026' in line
    assert 'method="crm.deal add"' in line
    assert "status=200" in line


def test_plain_values_stay_bare() -> None:
    assert fields_text({"client": "erp-1", "portal": "main", "ms": 1.5}) == (
        "client=erp-1 portal=main ms=1.5"
    )


def test_json_lines_carry_the_fields_and_the_request_id() -> None:
    token = REQUEST_ID.set("abc-123")
    try:
        record = _record("client=x", fields={"client": "x\ny", "status": 404})
    finally:
        REQUEST_ID.reset(token)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["client"] == "x\ny"
    assert parsed["status"] == 404
    assert parsed["request_id"] == "abc-123"
    assert parsed["logger"] == "b24gate.calls"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.addFilter(RequestIdFilter())  # as the gateway's own log handler has it
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("path", ["/api/v1/call", "/rest/profile", "/api/v1/batch"])
async def test_the_clients_request_id_comes_back_and_is_in_the_log_line(
    connected: tuple[Stack, str], path: str
) -> None:
    stack, key = connected
    headers = {"Authorization": f"Bearer {key}", "X-Request-Id": "1c-exchange-42"}
    bodies: dict[str, object] = {
        "/api/v1/call": {"method": "profile"},
        "/api/v1/batch": {"commands": [{"method": "profile"}]},
        "/rest/profile": {},
    }
    body = bodies[path]
    collect = _Collect()
    calls = logging.getLogger("b24gate.calls")
    calls.addHandler(collect)
    level = calls.level
    calls.setLevel(logging.INFO)
    try:
        response = await stack.http.post(path, json=body, headers=headers)
    finally:
        calls.removeHandler(collect)
        calls.setLevel(level)
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "1c-exchange-42"
    assert [getattr(r, "request_id", None) for r in collect.records] == ["1c-exchange-42"]
    line = TextFormatter().format(collect.records[0])
    assert line.endswith("request_id=1c-exchange-42")


async def test_an_unusable_request_id_is_replaced(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    response = await stack.http.post(
        "/api/v1/call",
        json={"method": "profile"},
        headers={"Authorization": f"Bearer {key}", "X-Request-Id": "bad id\twith tab"},
    )
    given = response.headers["x-request-id"]
    assert given != "bad id\twith tab"
    assert len(given) == 16
    other = await stack.http.get("/healthz")
    assert other.headers["x-request-id"] != given
