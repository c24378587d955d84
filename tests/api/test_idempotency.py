"""`Idempotency-Key` on /api/v1/call, /api/v1/batch and /rest/, against the sandbox: a
retried write is done once, whatever the client does with its key."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from b24gate.core import Gateway
from b24gate.store import database_url, make_engine
from b24gate.testing import free_port
from b24gate.testing import idempotency_fingerprint as fingerprint

from .conftest import MakeStack, Stack, ci, serve_gateway

# The PostgreSQL test database (B24GATE_TEST_DATABASE_URL) and its reset, as test_tokens
# uses them.
from .test_tokens import PG_URL, _reset_postgres

KEY = "order-2024-0001"


def headers(client_key: str, idempotency_key: str | None = KEY) -> dict[str, str]:
    sent = {"Authorization": f"Bearer {client_key}"}
    if idempotency_key is not None:
        sent["Idempotency-Key"] = idempotency_key
    return sent


def add(origin: str = "1c-0001", title: str = "Order 0001") -> bytes:
    """A deal add, as the exact bytes sent (the fingerprint covers them)."""
    fields = {"TITLE": title, "ORIGIN_ID": origin}
    return orjson.dumps({"method": "crm.deal.add", "params": {"fields": fields}})


async def post(
    stack: Stack, path: str, client_key: str, body: bytes, key: str | None = KEY
) -> httpx.Response:
    return await stack.http.post(path, content=body, headers=headers(client_key, key))


async def deals(stack: Stack, client_key: str) -> list[str]:
    """The titles of the portal's deals, read without a key."""
    body = {"method": "crm.deal.list", "params": {"select": ["TITLE"]}}
    response = await stack.call(client_key, body)
    assert response.status_code == 200, response.text
    return [deal["TITLE"] for deal in response.json()["data"]["result"]]


async def rest_calls(stack: Stack) -> int:
    calls: int = (await stack.counters())["rest_calls"]
    return calls


async def writes(stack: Stack) -> dict[str, Any]:
    body: dict[str, Any] = (await stack.control.get("/_sandbox/writes")).json()
    return body


async def raw_rows(stack: Stack) -> list[dict[str, Any]]:
    """The store's idempotency rows as the database holds them."""
    engine = make_engine(database_url(stack.settings.data_dir, stack.settings.database_url))
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text("SELECT * FROM idempotency_keys"))
            return [dict(row._mapping) for row in result]
    finally:
        await engine.dispose()


def refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert "Idempotent-Replayed" not in response.headers


async def in_flight(stack: Stack, count: int) -> None:
    """Until ``count`` requests are at the sandbox (polled: the sandbox is another server)."""
    while True:
        if (await stack.counters())["in_flight"] == count:
            return
        await asyncio.sleep(0.01)


# -- the same request twice --------------------------------------------------------------


async def test_a_retried_write_is_done_once_and_answered_byte_for_byte(
    connected: tuple[Stack, str],
) -> None:
    stack, client_key = connected
    async with asyncio.timeout(30):
        first = await post(stack, "/api/v1/call", client_key, add())
        assert first.status_code == 200, first.text
        assert "Idempotent-Replayed" not in first.headers
        sent = await rest_calls(stack)

        again = await post(stack, "/api/v1/call", client_key, add())
        assert again.status_code == 200
        assert again.content == first.content
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.headers["content-type"] == first.headers["content-type"]
        assert again.headers["Cache-Control"] == "no-store"
        assert await rest_calls(stack) == sent  # the replay never reached the portal
        assert await deals(stack, client_key) == ["Order 0001"]
        assert (await writes(stack))["by_external_id"] == {"crm.deal:ORIGIN_ID:1c-0001": 1}


async def test_the_key_as_a_query_parameter_is_the_same_key(
    connected: tuple[Stack, str],
) -> None:
    stack, client_key = connected
    async with asyncio.timeout(30):
        first = await post(stack, "/api/v1/call", client_key, add())
        assert first.status_code == 200, first.text
        # 1C's exchange module can change only the URL.
        again = await stack.http.post(
            "/api/v1/call",
            params={"idempotency_key": KEY},
            content=add(),
            headers=headers(client_key, None),
        )
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.content == first.content
        assert await deals(stack, client_key) == ["Order 0001"]


async def test_the_query_in_another_order_is_the_same_request(
    connected: tuple[Stack, str],
) -> None:
    stack, client_key = connected
    async with asyncio.timeout(30):
        first = await stack.http.post(
            f"/api/v1/call?b=2&idempotency_key={KEY}&a=1",
            content=add(),
            headers=headers(client_key, None),
        )
        assert first.status_code == 200, first.text
        again = await stack.http.post(
            "/api/v1/call?a=1&b=2", content=add(), headers=headers(client_key)
        )
        assert again.headers["Idempotent-Replayed"] == "true"
        assert await deals(stack, client_key) == ["Order 0001"]


async def test_a_bitrix24_error_is_kept_too(connected: tuple[Stack, str]) -> None:
    stack, client_key = connected
    body = orjson.dumps({"method": "crm.deal.get", "params": {"id": 999}})
    async with asyncio.timeout(30):
        first = await post(stack, "/api/v1/call", client_key, body)
        assert first.status_code == 400
        assert first.json()["code"] == "bitrix_error"
        sent = await rest_calls(stack)
        again = await post(stack, "/api/v1/call", client_key, body)
        assert (again.status_code, again.content) == (400, first.content)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert await rest_calls(stack) == sent


async def test_a_retried_batch_is_done_once(connected: tuple[Stack, str]) -> None:
    stack, client_key = connected
    commands = [
        {"method": "crm.deal.add", "params": {"fields": {"TITLE": f"b{i}", "ORIGIN_ID": f"b{i}"}}}
        for i in range(3)
    ]
    body = orjson.dumps({"commands": commands})
    async with asyncio.timeout(30):
        first = await post(stack, "/api/v1/batch", client_key, body)
        assert first.status_code == 200, first.text
        sent = await rest_calls(stack)
        again = await post(stack, "/api/v1/batch", client_key, body)
        assert again.content == first.content
        assert again.headers["Idempotent-Replayed"] == "true"
        assert await rest_calls(stack) == sent
        assert sorted(await deals(stack, client_key)) == ["b0", "b1", "b2"]
        assert (await writes(stack))["doubled"] == []


# -- the same key for something else -----------------------------------------------------


async def test_the_key_of_another_request_is_422_and_nothing_is_sent(
    connected: tuple[Stack, str],
) -> None:
    stack, client_key = connected
    async with asyncio.timeout(30):
        assert (await post(stack, "/api/v1/call", client_key, add())).status_code == 200
        sent = await rest_calls(stack)
        other_body = await post(stack, "/api/v1/call", client_key, add("1c-0002", "Order 0002"))
        refused(other_body, 422, "idempotency_key_reused")
        other_path = await post(
            stack,
            "/api/v1/batch",
            client_key,
            orjson.dumps({"commands": [orjson.loads(add("1c-0003"))]}),
        )
        refused(other_path, 422, "idempotency_key_reused")
        other_query = await stack.http.post(
            "/api/v1/call?portal_hint=x", content=add(), headers=headers(client_key)
        )
        refused(other_query, 422, "idempotency_key_reused")
        assert await rest_calls(stack) == sent
        assert await deals(stack, client_key) == ["Order 0001"]


async def test_keys_are_each_clients_own(connected: tuple[Stack, str]) -> None:
    stack, erp = connected
    shop = await stack.add_client("shop")
    async with asyncio.timeout(30):
        first = await post(stack, "/api/v1/call", erp, add("erp", "From erp"))
        # Another client's request with the same key is its own: run, not replayed, and
        # never the first client's answer.
        second = await post(stack, "/api/v1/call", shop, add("shop", "From shop"))
        assert second.status_code == 200, second.text
        assert "Idempotent-Replayed" not in second.headers
        assert second.content != first.content
        assert sorted(await deals(stack, erp)) == ["From erp", "From shop"]


# -- two at once -------------------------------------------------------------------------


async def test_a_second_request_while_the_first_runs_waits_and_replays(
    connected: tuple[Stack, str],
) -> None:
    stack, client_key = connected
    await stack.control.post("/_sandbox/faults", json={"kind": "slow", "count": 1, "delay": 1})
    async with asyncio.timeout(30):
        first = asyncio.create_task(post(stack, "/api/v1/call", client_key, add()))
        await in_flight(stack, 1)
        second = await post(stack, "/api/v1/call", client_key, add())
        done = await first
        assert done.status_code == 200, done.text
        assert second.content == done.content
        assert second.headers["Idempotent-Replayed"] == "true"
        assert await deals(stack, client_key) == ["Order 0001"]
        assert (await writes(stack))["doubled"] == []


async def test_a_second_request_past_the_wait_is_409_and_not_run(make_stack: MakeStack) -> None:
    stack = await make_stack(idempotency_wait=0.2)
    await stack.add_portal()
    await stack.connect()
    client_key = await stack.add_client()
    await stack.control.post("/_sandbox/faults", json={"kind": "slow", "count": 1, "delay": 1.5})
    async with asyncio.timeout(30):
        first = asyncio.create_task(post(stack, "/api/v1/call", client_key, add()))
        await in_flight(stack, 1)
        busy = await post(stack, "/api/v1/call", client_key, add())
        refused(busy, 409, "idempotency_key_in_use")
        assert busy.headers["Retry-After"] == "1"
        assert (await first).status_code == 200
        later = await post(stack, "/api/v1/call", client_key, add())
        assert later.headers["Idempotent-Replayed"] == "true"
        assert await deals(stack, client_key) == ["Order 0001"]


async def test_a_long_first_request_keeps_its_key_past_one_lease(make_stack: MakeStack) -> None:
    # A lease of 0.6 s renewed every 0.2 s: a request of 2 s must not look abandoned.
    stack = await make_stack(idempotency_wait=0, job_lease=0.6)
    await stack.add_portal()
    await stack.connect()
    client_key = await stack.add_client()
    await stack.control.post("/_sandbox/faults", json={"kind": "slow", "count": 1, "delay": 2})
    async with asyncio.timeout(30):
        first = asyncio.create_task(post(stack, "/api/v1/call", client_key, add()))
        await in_flight(stack, 1)
        await asyncio.sleep(1.2)  # two leases: the time passing is what is tested
        busy = await post(stack, "/api/v1/call", client_key, add())
        refused(busy, 409, "idempotency_key_in_use")
        assert (await first).status_code == 200
        assert await deals(stack, client_key) == ["Order 0001"]


# -- refusals are not kept ---------------------------------------------------------------


async def test_a_forbidden_method_is_not_kept(stack: Stack) -> None:
    await stack.add_portal()
    await stack.connect()
    client_key = await stack.add_client(methods=("crm.deal.list",))
    async with asyncio.timeout(30):
        refused(await post(stack, "/api/v1/call", client_key, add()), 403, "method_forbidden")
        assert await raw_rows(stack) == []
        # The key is free: another request with it runs (not 422).
        listed = await post(
            stack, "/api/v1/call", client_key, orjson.dumps({"method": "crm.deal.list"})
        )
        assert listed.status_code == 200, listed.text
        assert "Idempotent-Replayed" not in listed.headers


async def test_a_portal_needing_authorization_is_not_kept(stack: Stack) -> None:
    await stack.add_portal()  # not connected yet
    client_key = await stack.add_client()
    async with asyncio.timeout(30):
        refused(await post(stack, "/api/v1/call", client_key, add()), 409, "needs_authorization")
        assert (await stack.connect()).status_code == 200
        retried = await post(stack, "/api/v1/call", client_key, add())
        assert retried.status_code == 200, retried.text
        assert "Idempotent-Replayed" not in retried.headers
        assert await deals(stack, client_key) == ["Order 0001"]


async def test_a_rate_limited_call_is_not_kept(make_stack: MakeStack) -> None:
    # A queue of one call, on a budget of a request every 2 s.
    stack = await make_stack(queue_limit=1)
    await stack.add_portal("idem429", rate=0.5, burst=1)
    await stack.connect("idem429")
    client_key = await stack.add_client(portals=("idem429",))
    profile = orjson.dumps({"method": "profile"})
    async with asyncio.timeout(30):
        assert (await post(stack, "/api/v1/call", client_key, profile, None)).status_code == 200
        queued = asyncio.create_task(post(stack, "/api/v1/call", client_key, profile, None))
        await queue_depth("idem429", 1)
        refused(await post(stack, "/api/v1/call", client_key, add()), 429, "rate_limited")
        assert (await queued).status_code == 200
        retried = await post(stack, "/api/v1/call", client_key, add())
        assert retried.status_code == 200, retried.text
        assert "Idempotent-Replayed" not in retried.headers
        assert await deals(stack, client_key) == ["Order 0001"]


async def queue_depth(portal: str, depth: int) -> None:
    """Until ``depth`` calls wait in the portal's queue (the gauge /metrics shows)."""
    while True:
        if REGISTRY.get_sample_value("b24gate_queue_depth", {"portal": portal}) == depth:
            return
        await asyncio.sleep(0.01)


# -- a gateway that died with the first request on its way -------------------------------


async def abandon(stack: Stack, body: bytes) -> None:
    """The row a gateway leaves when it dies mid-request: running, its lease long over."""
    client = next(c for c in await stack.gateway.store.clients() if c.name == "erp")
    begun = await stack.gateway.store.idempotency.begin(
        client.id,
        hashlib.sha256(KEY.encode()).hexdigest(),
        fingerprint("POST", "/api/v1/call", "", body),
        holder="gone-host:1:deadbeef",
        now=time.time() - 120,
        lease=1,
        ttl=86400,
    )
    assert begun.kind == "new"


async def test_an_abandoned_write_is_outcome_unknown_and_never_sent(
    connected: tuple[Stack, str],
) -> None:
    stack, client_key = connected
    await abandon(stack, add())
    async with asyncio.timeout(30):
        sent = await rest_calls(stack)
        unknown = await post(stack, "/api/v1/call", client_key, add())
        refused(unknown, 409, "outcome_unknown")
        refused(await post(stack, "/api/v1/call", client_key, add()), 409, "outcome_unknown")
        assert await rest_calls(stack) == sent
        assert await deals(stack, client_key) == []


async def test_an_abandoned_read_runs_again(connected: tuple[Stack, str]) -> None:
    stack, client_key = connected
    body = orjson.dumps({"method": "crm.deal.list", "params": {"select": ["ID"]}})
    await abandon(stack, body)
    async with asyncio.timeout(30):
        first = await post(stack, "/api/v1/call", client_key, body)
        assert first.status_code == 200, first.text
        assert "Idempotent-Replayed" not in first.headers
        again = await post(stack, "/api/v1/call", client_key, body)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.content == first.content


# -- the Bitrix24-shaped surface ---------------------------------------------------------


def forwarded(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The parameters of every call the gateway hands on to be sent, from now on."""
    seen: list[dict[str, Any]] = []
    forward = stack.gateway.dispatcher.call

    async def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(dict(args[2]))
        return await forward(*args, **kwargs)

    monkeypatch.setattr(stack.gateway.dispatcher, "call", spy)
    return seen


async def test_rest_form_post_with_the_key_in_the_url(
    connected: tuple[Stack, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack, client_key = connected
    seen = forwarded(stack, monkeypatch)
    form = {"fields[TITLE]": "From 1C", "fields[ORIGIN_ID]": "1c-77", "auth": client_key}
    url = f"/rest/crm.deal.add.json?idempotency_key={KEY}"
    async with asyncio.timeout(30):
        first = await stack.http.post(url, data=form)
        assert first.status_code == 200, first.text
        assert isinstance(first.json()["result"], int)
        again = await stack.http.post(url, data=form)
        assert again.content == first.content
        assert again.headers["Idempotent-Replayed"] == "true"
        other = await stack.http.post(url, data={**form, "fields[TITLE]": "Changed"})
        assert other.status_code == 422
        assert other.json()["error"] == "IDEMPOTENCY_KEY_REUSED"
    # Sent once, and the gateway's parameter was not among what went to the portal.
    assert seen == [{"fields": {"TITLE": "From 1C", "ORIGIN_ID": "1c-77"}}]
    assert await deals(stack, client_key) == ["From 1C"]


async def test_rest_bad_key_is_bitrix24_shaped_400(connected: tuple[Stack, str]) -> None:
    stack, client_key = connected
    async with asyncio.timeout(30):
        sent = await rest_calls(stack)
        response = await stack.http.post(
            "/rest/crm.deal.add",
            json={"auth": client_key, "fields": {"TITLE": "x"}},
            headers={"Idempotency-Key": "has space"},
        )
        assert response.status_code == 400
        assert response.json()["error"] == "INVALID_REQUEST"
        assert await rest_calls(stack) == sent


# -- bad keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "query"),
    [
        ("", None),
        ("has space", None),
        ("x" * 256, None),
        ("ключ".encode(), None),
        ("tab\there", None),
        ("one", "two"),
        (None, "idempotency_key[]=a"),
        (None, "idempotency_key=a&idempotency_key=b"),
    ],
    ids=["empty", "space", "too-long", "not-ascii", "control", "two-keys", "array", "two-params"],
)
async def test_a_bad_key_is_400_and_nothing_is_sent(
    connected: tuple[Stack, str], header: str | bytes | None, query: str | None
) -> None:
    stack, client_key = connected
    sent_headers = [(b"Authorization", f"Bearer {client_key}".encode())]
    if header is not None:
        value = header if isinstance(header, bytes) else header.encode("latin-1")
        sent_headers.append((b"Idempotency-Key", value))
    url = "/api/v1/call"
    if query is not None:
        url += "?" + (query if "=" in query else f"idempotency_key={query}")
    async with asyncio.timeout(30):
        sent = await rest_calls(stack)
        response = await stack.http.post(url, content=add(), headers=sent_headers)
        refused(response, 400, "invalid_idempotency_key")
        assert await rest_calls(stack) == sent
        assert await raw_rows(stack) == []


async def test_the_longest_key_is_taken(connected: tuple[Stack, str]) -> None:
    stack, client_key = connected
    async with asyncio.timeout(30):
        key = "~" * 255
        assert (await post(stack, "/api/v1/call", client_key, add(), key)).status_code == 200
        again = await post(stack, "/api/v1/call", client_key, add(), key)
        assert again.headers["Idempotent-Replayed"] == "true"


# -- what is kept ------------------------------------------------------------------------


async def test_the_key_and_the_answer_are_never_kept_in_clear(
    connected: tuple[Stack, str], logs: pytest.LogCaptureFixture
) -> None:
    stack, client_key = connected
    key = "secret-looking-key-7f3a9c"
    async with asyncio.timeout(30):
        first = await post(stack, "/api/v1/call", client_key, add("zz-origin", "Zz Title"), key)
        assert first.status_code == 200, first.text
    rows = await raw_rows(stack)
    assert len(rows) == 1
    row = rows[0]
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert row["state"] == "done"
    raw = repr(row).encode()
    for clear in (key.encode(), b"Zz Title", b"zz-origin", first.content):
        assert clear not in raw
    assert isinstance(row["response"], bytes)
    assert first.content not in row["response"]
    assert key not in logs.text
    assert all(key not in str(r.__dict__) for r in logs.records if r.levelno >= logging.DEBUG)


# -- two replicas on one store -----------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_ten_retries_across_two_replicas_write_once(
    make_stack: MakeStack, backend: str
) -> None:
    overrides: dict[str, Any] = {}
    if backend == "postgresql":
        try:
            await _reset_postgres()
        except (OSError, asyncpg.PostgresError) as exc:
            if ci():
                raise
            pytest.skip(f"PostgreSQL not reachable here: {exc}")
        overrides["database_url"] = PG_URL
    stack = await make_stack(**overrides)
    await stack.add_portal()
    await stack.connect()
    client_key = await stack.add_client()
    # A second gateway process's part: its own gateway and port, the same store.
    other = await Gateway.open(stack.settings)
    port = free_port()
    server, task = await serve_gateway(stack.settings, other, port)
    await stack.control.post("/_sandbox/faults", json={"kind": "slow", "count": 1, "delay": 1})
    try:
        async with asyncio.timeout(60), httpx.AsyncClient(timeout=30) as http:
            bases = [stack.base_url, f"http://127.0.0.1:{port}"]
            answers = await asyncio.gather(
                *(
                    http.post(
                        f"{bases[i % 2]}/api/v1/call", content=add(), headers=headers(client_key)
                    )
                    for i in range(10)
                )
            )
            assert [a.status_code for a in answers] == [200] * 10
            assert len({a.content for a in answers}) == 1
            fresh = [a for a in answers if "Idempotent-Replayed" not in a.headers]
            assert len(fresh) == 1
            assert await deals(stack, client_key) == ["Order 0001"]
            assert (await writes(stack))["doubled"] == []
    finally:
        server.should_exit = True
        await task
        await other.close()
