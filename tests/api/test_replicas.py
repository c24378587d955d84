"""Three ``b24gate serve`` processes on one PostgreSQL database and one Redis, in front of a
``b24gate sandbox`` process with Bitrix24's request budget: 1,000 concurrent callers spread
over the replicas, with the access token expiring while they run, are all answered, with
one refresh in all (docs/design.md, the refresh lock) and no QUERY_LIMIT_EXCEEDED (the
shared budget, docs/limits.md "Several replicas")."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from b24gate.core import Gateway, new_key
from b24gate.settings import load_settings
from b24gate.store import NewPortal
from b24gate.testing import free_port

from .conftest import ci
from .test_jobs_crash import ready, start_serve
from .test_jobs_crash import serve_logs as serve_logs  # autouse: the replicas' logs on failure

PG_URL = os.environ.get("B24GATE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("B24GATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CLIENT_ID = "local.replicas"
CLIENT_SECRET = "replicas-client-secret-0123456789abcdef"
CALLERS = 1000
REPLICAS = 3
# A budget the run spends (it takes 40 to 70 requests) in a few seconds. Three replicas each
# booking from a budget of their own would overrun it.
RATE, BURST = 10, 20
CALL = {"method": "crm.deal.list", "params": {"start": -1}}


@pytest.fixture
async def services() -> tuple[str, str]:
    """PostgreSQL's test database, emptied, and Redis; required in CI, skipped elsewhere."""
    try:
        conn = await asyncpg.connect(PG_URL, timeout=10)
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        finally:
            await conn.close()
        client: Any = aioredis.from_url(REDIS_URL)
        try:
            await client.ping()
        finally:
            await client.aclose()
    except (OSError, asyncpg.PostgresError, aioredis.ConnectionError) as exc:
        if ci():
            raise
        pytest.skip(f"PostgreSQL or Redis not reachable here: {exc}")
    return PG_URL, REDIS_URL


@asynccontextmanager
async def sandbox_process(tmp_path: Path, redirect_uri: str) -> AsyncIterator[str]:
    """``b24gate sandbox`` with Bitrix24's budget of ``RATE``/``BURST``; its base URL."""
    secret = tmp_path / "client-secret"
    secret.write_text(CLIENT_SECRET)
    with (tmp_path / "sandbox.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "b24gate", "sandbox", "--auto-approve"),
            *("--client-id", CLIENT_ID, "--client-secret-file", str(secret)),
            *("--redirect-uri", redirect_uri, "--rate", str(RATE), "--burst", str(BURST)),
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            base_url = (await proc.stdout.readline()).decode().strip()
        assert base_url.startswith("http://"), "the sandbox did not start"
        yield base_url
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


@contextmanager
def replicas(data_dir: Path, ports: list[int], env: dict[str, str]) -> Iterator[list[str]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        urls = []
        for port in ports:
            proc, url = start_serve(data_dir, env, port)
            procs.append(proc)
            urls.append(url)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # not to hide the test's own failure
                proc.kill()
                proc.wait(timeout=10)


async def connect(gw: Gateway, sandbox: str) -> str:
    """Portal ``demo`` registered with the sandbox's budget and authorized as an
    administrator does it (the ticket URL opened in a browser); a client key for it."""
    async with httpx.AsyncClient(base_url=sandbox, timeout=10) as control:
        domain = (await control.get("/_sandbox/state")).json()["domain"]
    await gw.store.add_portal(
        NewPortal(
            name="demo",
            url=sandbox,
            domain=domain,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            oauth_url=sandbox,
            scope="crm",
            rate=RATE,
            burst=BURST,
        )
    )
    portal = await gw.store.portal("demo")
    assert portal is not None
    url = await gw.connector.ticket_url(portal, force=False)
    async with httpx.AsyncClient(follow_redirects=True, timeout=10) as browser:
        page = await browser.get(url)
    assert page.status_code == 200, page.text
    key = new_key()
    await gw.store.add_client("erp", key.key_id, key.key_hash, ["demo"], [], [], False)
    return key.key


async def counters(control: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await control.get("/_sandbox/counters")).json()
    return body


async def test_three_replicas_serve_1000_callers_across_an_expiry(
    services: tuple[str, str], tmp_path: Path
) -> None:
    database_url, redis_url = services
    data_dir = tmp_path / "gateway"
    ports = [free_port() for _ in range(REPLICAS)]
    public_url = f"http://127.0.0.1:{ports[0]}"  # the connect pages' address (one replica)
    env = {
        "B24GATE_DATABASE_URL": database_url,
        "B24GATE_REDIS_URL": redis_url,
        "B24GATE_PUBLIC_URL": public_url,
    }
    async with sandbox_process(tmp_path, f"{public_url}/oauth/callback") as sandbox:
        # The store (its schema, the master key file) made once, before the replicas share it.
        settings = load_settings(
            data_dir=data_dir, public_url=public_url, database_url=database_url
        )
        setup = await Gateway.open(settings)
        try:
            with replicas(data_dir, ports, env) as urls:
                for url in urls:
                    await ready(url)
                key = await connect(setup, sandbox)
                async with httpx.AsyncClient(base_url=sandbox, timeout=10) as control:
                    await control.post("/_sandbox/counters/reset")
                    started = time.monotonic()
                    answers, sent_before = await run_callers(urls, key, control)
                    elapsed = time.monotonic() - started
                    seen = await counters(control)
        finally:
            await setup.close()
    assert len(answers) == CALLERS
    assert [(a.status_code, a.json()["success"]) for a in answers] == [(200, True)] * CALLERS
    # The token expired with requests still to come: one refresh for all three replicas.
    assert seen["grants"]["refresh_token"] == 1, seen
    assert seen["grants"]["authorization_code"] == 0
    assert seen["failed_grants"] == 0
    assert 0 < sent_before < seen["rest_calls"]
    # The three replicas booked from one budget in Redis: Bitrix24 never refused.
    assert seen["rejected_503"] == 0, seen
    assert seen["rest_calls"] < CALLERS / 10, seen  # the calls went in batches
    assert elapsed < 45, f"the run took {elapsed:.1f} s"
    print(f"{CALLERS} calls in {elapsed:.1f} s, {seen}")


async def run_callers(
    urls: list[str], key: str, control: httpx.AsyncClient
) -> tuple[list[httpx.Response], int]:
    """``CALLERS`` concurrent calls, round robin over ``urls``: half of them, then, once the
    sandbox has answered a few requests, the access token expires and the other half join
    while the first may still be on their way. The answers, and the REST requests the
    sandbox had seen before the expiry."""
    # Idle connections are dropped by the client before uvicorn drops them (after 5 s): a
    # request sent on a connection the server is closing at that moment fails unanswered.
    limits = httpx.Limits(
        max_connections=CALLERS, max_keepalive_connections=CALLERS, keepalive_expiry=2.0
    )
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers) as http:

        def fire(numbers: range) -> list[asyncio.Future[httpx.Response]]:
            return [
                asyncio.ensure_future(http.post(f"{urls[i % len(urls)]}/api/v1/call", json=CALL))
                for i in numbers
            ]

        half = CALLERS // 2
        first = fire(range(half))
        async with asyncio.timeout(45):
            # The sandbox's own count, not a time: some requests went with the old token.
            while (sent := (await counters(control))["rest_calls"]) < 3:  # noqa: ASYNC110 - another process counts
                await asyncio.sleep(0.01)
            await control.post("/_sandbox/expire-access-tokens")
            second = fire(range(half, CALLERS))
            return list(await asyncio.gather(*first, *second)), sent
