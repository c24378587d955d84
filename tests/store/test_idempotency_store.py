"""Idempotency-Key rows on SQLite and PostgreSQL: of racing requests with one key exactly one
runs, the first answer comes back as it was given, and what is kept is sealed and expires."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from b24gate.store import Cipher, IdempotencyStore, Store, StoredAnswer

from .conftest import new_portal

KEY = "k" * 64
LEASE = 5.0
TTL = 60.0


@pytest.fixture
async def client_id(store: Store) -> int:
    await store.add_portal(new_portal())
    return (await store.add_client("erp", "kid-1", "h", ["demo"])).id


@pytest.fixture
async def replica(database_url: str, cipher: Cipher, store: Store) -> AsyncIterator[Store]:
    """A second store on the same database: another gateway process, its own connections."""
    async with await Store.open(database_url, cipher) as other:
        yield other


async def begin(
    keys: IdempotencyStore, client_id: int, fingerprint: str, holder: str, now: float
) -> str:
    begun = await keys.begin(
        client_id, KEY, fingerprint, holder=holder, now=now, lease=LEASE, ttl=TTL
    )
    return begun.kind


async def test_racing_begins_from_two_processes_let_exactly_one_run(
    store: Store, replica: Store, client_id: int
) -> None:
    now = time.time()
    async with asyncio.timeout(30):
        begun = await asyncio.gather(
            *(
                (store if i % 2 else replica).idempotency.begin(
                    client_id, KEY, "f", holder=f"p{i}", now=now, lease=LEASE, ttl=TTL
                )
                for i in range(10)
            )
        )
    assert sorted(b.kind for b in begun) == ["new"] + ["running"] * 9
    assert {b.lease_until for b in begun if b.kind == "running"} == {now + LEASE}


@pytest.mark.parametrize(
    "body",
    [b'{"result":{"ID":"7"},"time":{}}', b"<html>\xcf\xf0\xe8\xe2\xe5\xf2 \xff\xfe</html>"],
    ids=["json", "not-utf8"],
)
async def test_the_first_answer_replays_byte_for_byte_and_another_request_is_a_mismatch(
    store: Store, client_id: int, body: bytes
) -> None:
    keys = store.idempotency
    now = time.time()
    assert await begin(keys, client_id, "f1", "p", now) == "new"
    assert await begin(keys, client_id, "f2", "q", now) == "mismatch"  # while it runs, too
    answer = StoredAnswer(502, "text/html; charset=windows-1251", body)
    await keys.finish(client_id, KEY, answer, holder="p", now=now, ttl=TTL)
    again = await keys.begin(client_id, KEY, "f1", holder="q", now=now, lease=LEASE, ttl=TTL)
    assert (again.kind, again.answer) == ("replay", answer)
    assert await begin(keys, client_id, "f2", "q", now) == "mismatch"


async def test_a_kept_answer_is_sealed_at_rest(
    store: Store, raw: AsyncEngine, client_id: int
) -> None:
    keys = store.idempotency
    now = time.time()
    await begin(keys, client_id, "f", "p", now)
    answer = StoredAnswer(200, "application/json", b'{"result":"secret-answer-Qx7"}')
    await keys.finish(client_id, KEY, answer, holder="p", now=now, ttl=TTL)
    async with raw.connect() as conn:
        sealed = await conn.scalar(sa.text("SELECT response FROM idempotency_keys"))
    assert sealed is not None
    assert b"secret-answer-Qx7" not in bytes(sealed)
    assert b"application/json" not in bytes(sealed)


async def test_an_expired_key_is_free_again_and_purge_removes_only_expired_ones(
    store: Store, raw: AsyncEngine, client_id: int
) -> None:
    keys = store.idempotency
    now = time.time()
    for key, ttl in (("old", TTL), ("young", 10 * TTL)):
        await keys.begin(client_id, key, "f", holder="p", now=now, lease=LEASE, ttl=ttl)
        await keys.finish(
            client_id, key, StoredAnswer(200, "a/b", b"1"), holder="p", now=now, ttl=ttl
        )
    later = now + TTL + 1
    # Past its expiry a key is as if never used: another request with it runs.
    fresh = await keys.begin(client_id, "old", "g", holder="q", now=later, lease=LEASE, ttl=TTL)
    assert fresh.kind == "new"
    assert await keys.purge(later) == 0  # the replaced row lives on
    assert await keys.purge(later + TTL + 1) == 1
    async with raw.connect() as conn:
        left = (await conn.scalars(sa.text("SELECT key_hash FROM idempotency_keys"))).all()
    assert left == ["young"]


async def test_only_the_holder_finishes_renews_or_releases(store: Store, client_id: int) -> None:
    keys = store.idempotency
    now = time.time()
    assert await begin(keys, client_id, "f", "p", now) == "new"
    stranger = StoredAnswer(200, "a/b", b"not mine")
    await keys.finish(client_id, KEY, stranger, holder="q", now=now, ttl=TTL)
    await keys.release(client_id, KEY, holder="q")
    await keys.renew(client_id, KEY, holder="q", now=now + LEASE, lease=LEASE)
    assert await begin(keys, client_id, "f", "x", now + LEASE + 1) == "abandoned"
    # The holder's renewal keeps its long request from looking abandoned.
    await keys.renew(client_id, KEY, holder="p", now=now + LEASE, lease=LEASE)
    assert await begin(keys, client_id, "f", "x", now + LEASE + 1) == "running"
    await keys.release(client_id, KEY, holder="p")  # nothing was sent: a retry runs afresh
    assert await begin(keys, client_id, "f", "x", now + LEASE + 1) == "new"


async def test_an_abandoned_key_is_taken_over_by_one_process(
    store: Store, replica: Store, client_id: int
) -> None:
    now = time.time()
    assert await begin(store.idempotency, client_id, "f", "dead", now) == "new"
    late = now + LEASE + 1
    assert await begin(replica.idempotency, client_id, "f", "x", late) == "abandoned"
    async with asyncio.timeout(30):
        wins = await asyncio.gather(
            *(
                (store if i % 2 else replica).idempotency.take_over(
                    client_id, KEY, holder=f"r{i}", now=late, lease=LEASE
                )
                for i in range(6)
            )
        )
    assert sorted(wins) == [False] * 5 + [True]
    winner = f"r{wins.index(True)}"
    assert await begin(store.idempotency, client_id, "f", "x", late) == "running"
    answer = StoredAnswer(200, "application/json", b'{"result":[]}')
    await store.idempotency.finish(client_id, KEY, answer, holder=winner, now=late, ttl=TTL)
    replay = await replica.idempotency.begin(
        client_id, KEY, "f", holder="x", now=late, lease=LEASE, ttl=TTL
    )
    assert replay.answer == answer
