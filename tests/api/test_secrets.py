"""No secret the sandbox issued, nor a client key, reaches a log, the database or a URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Stack


async def test_no_secret_in_logs_database_or_urls(
    connected: tuple[Stack, str], logs: pytest.LogCaptureFixture
) -> None:
    stack, key = connected
    # A day in the life: calls, errors, refreshes, a revoked grant, a re-connect.
    await stack.call(key, {"method": "crm.deal.add", "params": {"fields": {"TITLE": "a"}}})
    await stack.call(key, {"method": "crm.deal.get", "params": {"id": 12345}})
    await stack.call(key + "x", {"method": "profile"})
    await stack.control.post("/_sandbox/expire-access-tokens")
    await stack.call(key, {"method": "profile"})
    await stack.control.post(
        "/_sandbox/faults", json={"kind": "500", "target": "oauth", "count": 1}
    )
    await stack.control.post("/_sandbox/expire-access-tokens")
    await stack.call(key, {"method": "profile"})
    await stack.control.post("/_sandbox/revoke-refresh-tokens")
    await stack.control.post("/_sandbox/expire-access-tokens")
    assert (await stack.call(key, {"method": "profile"})).status_code == 409
    assert (await stack.connect()).status_code == 200
    assert (await stack.call(key, {"method": "profile"})).status_code == 200

    secrets = (await stack.control.get("/_sandbox/secrets")).json()["secrets"]
    secrets.append(key)
    assert len(secrets) > 8
    # The gateway's own records (the test's HTTP client logs its URLs; that is not the gateway).
    text = "\n".join(
        r.getMessage() for r in logs.records if not r.name.startswith(("httpx", "httpcore"))
    )
    assert "refreshed" in text  # the logs did capture the gateway's work
    db_files = sorted(Path(stack.settings.data_dir).glob("b24gate.db*"))  # noqa: ASYNC240
    db_bytes = b"".join(p.read_bytes() for p in db_files)
    assert len(db_bytes) > 0
    urls = "\n".join((await stack.control.get("/_sandbox/received")).json()["urls"])
    for secret in secrets:
        assert secret not in text
        assert secret.encode() not in db_bytes
        assert secret not in urls
    assert (await stack.counters())["secret_in_query"] == 0
