"""Refresh: lazy, single-flight in one process and across processes, never losing a rotation."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from b24gate.core import Gateway, operator_call
from b24gate.testing import free_port

from .conftest import MakeStack, Stack, ci

PG_URL = os.environ.get("B24GATE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def expire_and_fire(
    stack: Stack, key: str, n: int, base_urls: list[str] | None = None
) -> list[httpx.Response]:
    await stack.control.post("/_sandbox/expire-access-tokens")
    await stack.control.post("/_sandbox/counters/reset")
    urls = base_urls or [stack.base_url]
    async with httpx.AsyncClient(timeout=60) as http:
        return await asyncio.gather(
            *(
                http.post(
                    f"{urls[i % len(urls)]}/api/v1/call",
                    json={"method": "crm.deal.list", "params": {"start": -1}},
                    headers={"Authorization": f"Bearer {key}"},
                )
                for i in range(n)
            )
        )


async def test_50_concurrent_calls_with_an_expired_token_refresh_once(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    responses = await expire_and_fire(stack, key, 50)
    assert [r.status_code for r in responses] == [200] * 50
    counters = await stack.counters()
    assert counters["grants"]["refresh_token"] == 1
    assert counters["failed_grants"] == 0


async def test_token_near_expiry_is_refreshed_before_the_call(make_stack: MakeStack) -> None:
    stack = await make_stack({"access_ttl": 30}, refresh_skew=60)
    await stack.add_portal()
    await stack.connect()
    key = await stack.add_client()
    await stack.control.post("/_sandbox/counters/reset")
    assert (await stack.call(key, {"method": "profile"})).status_code == 200
    counters = await stack.counters()
    assert counters["grants"]["refresh_token"] == 1
    assert counters["rest_calls"] == 1  # refreshed first: no call was refused


async def test_restart_after_a_refresh_keeps_the_rotated_token(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    assert [r.status_code for r in await expire_and_fire(stack, key, 3)] == [200] * 3
    await stack.gateway.close()
    # A new process on the same store: the rotated refresh token must have been committed.
    again = await Gateway.open(stack.settings)
    try:
        portal = await again.store.portal("demo")
        assert portal is not None
        grant = await again.store.grant(portal)
        assert grant is not None
        await stack.control.post("/_sandbox/expire-access-tokens")
        body = await operator_call(again.dispatcher, "demo", "profile", {})
        assert body["result"]["ID"] == "1"
    finally:
        await again.close()
    counters = await stack.counters()
    assert counters["grants"]["refresh_token"] == 2
    assert counters["failed_grants"] == 0


async def test_revoked_refresh_token_needs_authorization_then_reconnect(
    connected: tuple[Stack, str], tmp_path: Path
) -> None:
    stack, key = connected
    await stack.control.post("/_sandbox/revoke-refresh-tokens")
    await stack.control.post("/_sandbox/expire-access-tokens")
    first = await stack.call(key, {"method": "profile"})
    assert first.status_code == 409
    body = first.json()
    assert body["code"] == "needs_authorization"
    assert "invalid_grant" in body["error"]
    assert "b24gate portal authorize demo" in body["error"]
    await stack.control.post("/_sandbox/counters/reset")
    second = await stack.call(key, {"method": "profile"})
    assert second.status_code == 409
    assert (await stack.counters())["grants"][
        "refresh_token"
    ] == 0  # no retry loop at the OAuth server

    env = {**os.environ, "B24GATE_DATA_DIR": str(stack.settings.data_dir)}
    status = subprocess.run(  # noqa: ASYNC221 - the CLI is what an administrator runs
        [sys.executable, "-m", "b24gate", "portal", "status", "demo", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    info = json.loads(status.stdout)
    assert info["state"] == "needs_authorization"
    assert set(info) == {
        "name",
        "domain",
        "member_id",
        "state",
        "access_expires_at",
        "refresh_obtained_at",
    }

    assert (await stack.connect()).status_code == 200
    assert (await stack.call(key, {"method": "profile"})).status_code == 200


@pytest.mark.parametrize("error", ["PAYMENT_REQUIRED", "NOT_INSTALLED", "invalid_client"])
async def test_permanent_refresh_errors_mark_the_portal(
    connected: tuple[Stack, str], error: str
) -> None:
    stack, key = connected
    await stack.control.post(
        "/_sandbox/revoke-refresh-tokens", json={"error": error, "status": 401}
    )
    await stack.control.post("/_sandbox/expire-access-tokens")
    response = await stack.call(key, {"method": "profile"})
    assert response.status_code == 409
    assert error in response.json()["error"]
    portal = await stack.gateway.store.portal("demo")
    assert portal is not None
    assert portal.state == "needs_authorization"


async def test_oauth_server_5xx_is_retried(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    await stack.control.post(
        "/_sandbox/faults", json={"kind": "500", "target": "oauth", "count": 2}
    )
    await stack.control.post("/_sandbox/expire-access-tokens")
    response = await stack.call(key, {"method": "profile"})
    assert response.status_code == 200
    assert (await stack.counters())["grants"]["refresh_token"] == 1


async def test_keep_alive_refreshes_only_old_grants(connected: tuple[Stack, str]) -> None:
    stack, _ = connected
    assert await stack.gateway.tokens.keep_alive() == 0
    portal = await stack.gateway.store.portal("demo")
    assert portal is not None
    grant = await stack.gateway.store.grant(portal)
    assert grant is not None
    old = time.time() - 15 * 24 * 3600
    await stack.gateway.store.save_grant(
        portal,
        type(grant)(
            access_token=grant.access_token,
            refresh_token=grant.refresh_token,
            access_expires_at=grant.access_expires_at,
            refresh_obtained_at=old,
            user_id=grant.user_id,
            server_endpoint=grant.server_endpoint,
        ),
    )
    await stack.control.post("/_sandbox/counters/reset")
    assert await stack.gateway.tokens.keep_alive() == 1
    assert (await stack.counters())["grants"]["refresh_token"] == 1
    assert await stack.gateway.tokens.keep_alive() == 0


async def test_get_fallback_for_a_token_server_that_refuses_post(make_stack: MakeStack) -> None:
    stack = await make_stack()
    await stack.add_portal(token_method="GET")
    await stack.connect()
    key = await stack.add_client()
    await stack.control.post("/_sandbox/expire-access-tokens")
    assert (await stack.call(key, {"method": "profile"})).status_code == 200
    assert (await stack.counters())["secret_in_query"] == 2  # the code exchange and the refresh


@contextmanager
def gateway_processes(data_dir: Path, env_extra: dict[str, str], n: int = 2) -> Iterator[list[str]]:
    env = {**os.environ, "B24GATE_DATA_DIR": str(data_dir), **env_extra}
    procs, urls = [], []
    try:
        for _ in range(n):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "b24gate", "serve", "--port", str(port)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        for url in urls:
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("gateway processes did not start")
                time.sleep(0.1)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


async def _two_processes(stack: Stack, key: str, env_extra: dict[str, str]) -> None:
    with gateway_processes(stack.settings.data_dir, env_extra) as urls:
        responses = await expire_and_fire(stack, key, 50, urls)
    assert [r.status_code for r in responses] == [200] * 50
    counters = await stack.counters()
    assert counters["grants"]["refresh_token"] == 1
    assert counters["failed_grants"] == 0


async def test_two_processes_on_one_sqlite_file_refresh_once(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    await _two_processes(stack, key, {})


async def _reset_postgres() -> None:
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()


async def test_two_processes_on_postgresql_refresh_once(make_stack: MakeStack) -> None:
    try:
        await _reset_postgres()
    except (OSError, asyncpg.PostgresError) as exc:
        if ci():
            raise
        pytest.skip(f"PostgreSQL not reachable here: {exc}")
    stack = await make_stack(database_url=PG_URL)
    await stack.add_portal()
    await stack.connect()
    key = await stack.add_client()
    await _two_processes(stack, key, {"B24GATE_DATABASE_URL": PG_URL})
