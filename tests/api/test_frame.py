"""The frame every route runs in, and the one renderer of errors: what a client gets and
what the operator's log says is decided in one place for every surface."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import orjson
import pytest

from b24gate.api import Frame, bitrix_shape, error_response
from b24gate.errors import B24GateError, BitrixError, RateLimited, Unauthorized


def _lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        r.__dict__["fields"]
        for r in caplog.records
        if r.name == "b24gate.calls" and r.levelno == logging.INFO
    ]


@pytest.mark.parametrize("wait", [0.2, 1.0, 1.0004, 2.5, 29.0001, 600.0])
def test_retry_after_is_rounded_up_alike_on_every_surface(wait: float) -> None:
    """A client told to come back a fraction too early is only refused again: every surface
    rounds the wait up, to the same whole second."""
    expected = str(max(1, math.ceil(wait)))
    refused = RateLimited("the queue is full", wait)
    api = error_response(refused)
    rest = error_response(refused, bitrix_shape(url_key=False, v3=False))
    v3 = error_response(refused, bitrix_shape(url_key=False, v3=True))
    assert api.headers["Retry-After"] == expected
    assert orjson.loads(api.body)["retry_after"] == int(expected)
    assert (api.status_code, rest.status_code, v3.status_code) == (429, 503, 503)
    assert rest.headers["Retry-After"] == expected
    assert v3.headers["Retry-After"] == expected
    assert orjson.loads(rest.body) == {
        "error": "QUERY_LIMIT_EXCEEDED",
        "error_description": "Too many requests",
    }
    assert orjson.loads(v3.body) == {
        "error": {"code": "QUERY_LIMIT_EXCEEDED", "message": "Too many requests"}
    }


@pytest.mark.parametrize(
    "error",
    [
        Unauthorized("unknown or revoked client key"),
        BitrixError(400, "", "Not found"),
        BitrixError(503, "SERVICE_UNAVAILABLE", "maintenance"),
        B24GateError("internal error; see the gateway's log"),
    ],
)
def test_every_error_answer_is_kept_by_no_cache(error: B24GateError) -> None:
    for shape in (None, bitrix_shape(url_key=False, v3=False), bitrix_shape(url_key=True, v3=True)):
        answer = error_response(error) if shape is None else error_response(error, shape)
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["Content-Type"] == "application/json"
        # A 503 says when to come back, whichever shape it is in; nothing else does.
        assert ("Retry-After" in answer.headers) == (answer.status_code == 503)


def test_an_unexpected_error_is_a_500_with_one_traceback_and_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="b24gate.calls")
    with Frame("api", "/api/v1/call") as frame:
        frame.who, frame.method = "erp", "crm.deal.get"
        raise KeyError("a bug")
    assert frame.refusal.status_code == 500
    body = orjson.loads(frame.refusal.body)
    assert body["code"] == "internal_error"
    assert b"a bug" not in bytes(frame.refusal.body)  # the bug's text stays in the log
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[0] is KeyError
    assert "/api/v1/call" in errors[0].getMessage()
    [line] = _lines(caplog)
    assert (line["client"], line["method"], line["status"], line["surface"]) == (
        "erp",
        "crm.deal.get",
        500,
        "api",
    )


def test_a_recursion_error_is_the_clients_400_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="b24gate.calls")
    with Frame("rest", "/rest/", bitrix_shape(url_key=False, v3=False)) as frame:
        raise RecursionError
    assert frame.refusal.status_code == 400
    assert orjson.loads(frame.refusal.body)["error"] == "INVALID_REQUEST"
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [line["status"] for line in _lines(caplog)] == [400]


def test_the_line_has_the_status_the_client_got(caplog: pytest.LogCaptureFixture) -> None:
    """On /rest/ a rate limit is answered 503 QUERY_LIMIT_EXCEEDED: the line says 503."""
    caplog.set_level(logging.INFO, logger="b24gate.calls")
    with Frame("rest", "/rest/", bitrix_shape(url_key=False, v3=False)) as frame:
        raise RateLimited("the queue is full", 3)
    assert frame.refusal.status_code == 503
    assert [line["status"] for line in _lines(caplog)] == [503]


async def test_a_cancelled_call_goes_on_up_and_still_leaves_its_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="b24gate.calls")
    with pytest.raises(asyncio.CancelledError), Frame("api", "/api/v1/call"):
        raise asyncio.CancelledError
    assert [line["status"] for line in _lines(caplog)] == [500]


def test_a_streamed_answer_writes_its_one_line_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="b24gate.calls")
    with Frame("api", "/api/v1/list") as frame:
        finish = frame.later()
    assert _lines(caplog) == []  # the answer has only started
    finish(499)
    assert [line["status"] for line in _lines(caplog)] == [499]
