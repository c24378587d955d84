"""A client that hangs up mid-body, and what the gateway's log makes of it.

Anyone, without a key, can open a connection, promise a body and close it after a few
bytes. That is no fault of the gateway: it must not write an ERROR line with a traceback
each time (a flood anyone can cause, which buries real errors), and what such a client
chose (the method in its path) must not forge a line of its own in the log.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from b24gate.api import Frame

from .conftest import Stack

FORGED = "crm.deal.list%0A2026-01-01%20ERROR%20b24gate.calls%20client=admin%20method=user.get"


async def hang_up(stack: Stack, path: str, headers: str = "") -> None:
    """POST ``path`` promising 1,000 bytes, send 3, close."""
    port = int(stack.base_url.rsplit(":", 1)[1])
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"{headers}Content-Length: 1000\r\n\r\nabc".encode()
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()


async def test_a_client_hanging_up_mid_body_writes_no_error(
    connected: tuple[Stack, str], caplog: pytest.LogCaptureFixture
) -> None:
    stack, key = connected
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    async with asyncio.timeout(10):
        await hang_up(stack, "/rest/" + FORGED)  # no key at all
        await hang_up(stack, "/api/v1/call", f"Authorization: Bearer {key}\r\n")
        await hang_up(stack, "/bitrix/install")
        for _ in range(50):  # until the three requests have ended on the gateway
            calls = [r for r in caplog.records if r.name == "b24gate.calls"]
            if len(calls) >= 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]
    lines = [r.getMessage() for r in caplog.records if r.name == "b24gate.calls"]
    assert len(lines) == 2, lines  # one line per call, /rest/ and /api/v1/call
    for line in lines:
        assert "\n" not in line
        assert "status=499" in line
        assert line.startswith("client=")
        assert line.count("client=") <= 2  # the real field, the forged text in quotes
    # The gateway still serves.
    assert (await stack.call(key, {"method": "profile"})).status_code == 200


def test_an_unexpected_error_line_escapes_what_the_client_chose(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    with Frame("api", "/api/v1/call") as frame:
        frame.who = "erp"
        frame.method = "crm.deal.list\n2026-01-01 ERROR b24gate.calls client=admin"
        raise RuntimeError("a bug")
    assert frame.refusal.status_code == 500
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "\n" not in errors[0]
    assert errors[0].count("client=") == 2  # the real field, the forged text in quotes
