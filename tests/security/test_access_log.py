"""Attack surface: keys in URLs (``?auth=<key>``, ``/rest/<user>/<key>/…``) reaching a log.

uvicorn writes an access line whenever its ``uvicorn.access`` logger has a handler, whatever
``access_log=False`` said at start; a log shipper, an error tracker or pytest's capture adds
one later. Whatever writes such a line must not write the key.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from b24gate.testing import AccessLineRedactor, redact_target

from .conftest import Stack


class _Shipper(logging.Handler):
    """What a log shipper attached to uvicorn's logger after start-up would receive."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def shipper() -> Iterator[_Shipper]:
    handler = _Shipper()
    logger = logging.getLogger("uvicorn.access")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_access_lines_never_carry_a_key(
    connected: tuple[Stack, str], shipper: _Shipper
) -> None:
    stack, key = connected
    # New connections decide whether to write access lines: use a fresh client.
    async with stack.http.__class__(base_url=stack.base_url, timeout=30) as http:
        await http.get("/rest/crm.deal.list", params={"auth": key})
        await http.post(f"/rest/1/{key}/profile")
        await http.post(f"/portals/demo/rest/7/{key}/crm.deal.list.json")
        await http.post(f"/rest/api/1/{key}/crm.item.list")
        await http.post("/api/v1/call", params={"auth": key}, json={"method": "profile"})
    text = "\n".join(shipper.lines)
    assert "/rest/crm.deal.list" in text  # the lines were written, and reached the shipper
    assert key not in text
    assert key.split("_", 2)[2] not in text  # not even the key's secret part


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("/rest/crm.deal.add?auth=b24_x&fields[TITLE]=a", "/rest/crm.deal.add?…"),
        ("/rest/1/b24_secret/profile", "/rest/***/***/profile"),
        ("/rest/1/b24_secret", "/rest/***/b24_secret"),
        ("/rest/1%2Fb24_secret/profile", "/rest/***/profile"),
        ("/REST/1/s3cr3t/profile", "/REST/***/***/profile"),
        (
            "/portals/p/rest/1/s3cr3t/crm.deal.get.json?id=1",
            "/portals/p/rest/***/***/crm.deal.get.json?…",
        ),
        ("/rest/api/1/b24_secret/crm.item.list", "/rest/api/***/***/crm.item.list"),
        ("/portals/p/rest/api/1/b24_secret/m", "/portals/p/rest/api/***/***/m"),
        ("/rest/api/crm.item.list", "/rest/api/crm.item.list"),
        ("/api/v1/call", "/api/v1/call"),
        ("/oauth/callback?code=c&state=s", "/oauth/callback?…"),
        ("/x#frag", "/x?…"),
    ],
)
def test_a_request_target_is_redacted_for_logs(target: str, shown: str) -> None:
    assert redact_target(target) == shown


KEY = "b24_0123456789ab_" + "A" * 20 + "_" + "b" * 22


@pytest.mark.parametrize(
    "args",
    [
        # uvicorn's own shape, with targets that defeat a search of the rendered line
        ("127.0.0.1:1", "GET", "/rest/x?filter[T]=O'Brien&auth=" + KEY, "1.1", 200),
        ("127.0.0.1:1", "POST", "/rest/1/" + KEY, "1.1", 401),
        ("127.0.0.1:1", "POST", "/rest/1/" + KEY.replace("_", "%5F") + "/profile", "1.1", 401),
        # an unknown shape: the key is still masked wherever it stands
        ("weird", KEY, "end", "x", 1),
    ],
)
def test_no_record_shape_brings_a_key_back(args: tuple[object, ...]) -> None:
    fmt = (
        '%s - "%s %s HTTP/%s" %d'
        if isinstance(args[-1], int) and args[0] != "weird"
        else ("%s %s %s %s %s")
    )
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, fmt, args, None)
    AccessLineRedactor().filter(record)
    line = record.getMessage()
    assert KEY not in line
    assert "A" * 20 not in line
