"""Durable jobs in the store, on SQLite and PostgreSQL: what replicas racing for commands
get, when a job ends, and what is kept sealed (Idempotency-Key rows:
test_idempotency_store.py)."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from b24gate.store import NewJob, Store

from .conftest import new_portal


async def ids(store: Store) -> tuple[int, int]:
    portal = await store.add_portal(new_portal())
    client = await store.add_client("erp", "kid-1", "h", ["demo"])
    return client.id, portal.id


async def new_job(store: Store, n: int, job_id: str = "a" * 32) -> str:
    client_id, portal_id = await ids(store)
    commands = [("crm.deal.add", {"fields": {"TITLE": f"secret-title-{i}"}}) for i in range(n)]
    await store.jobs.create(
        NewJob(job_id, client_id, portal_id, commands, "ORIGIN_ID", "10.0.0.1"), now=time.time()
    )
    return job_id


async def test_concurrent_claims_hand_out_every_command_once(store: Store) -> None:
    job_id = await new_job(store, 500)
    now = time.time()

    async def claimer(name: str) -> list[int]:
        got: list[int] = []
        while taken := await store.jobs.claim(job_id, holder=name, now=now, lease=30, limit=37):
            got.extend(c.seq for c in taken)
        return got

    async with asyncio.timeout(60):
        hands = await asyncio.gather(*(claimer(f"r{i}") for i in range(4)))
    every = [seq for hand in hands for seq in hand]
    assert sorted(every) == list(range(500))  # each once, none lost
    info = await store.jobs.get(job_id)
    assert info is not None
    assert info.state == "running"


async def test_a_lapsed_lease_frees_unsent_commands_and_orphans_sent_ones(store: Store) -> None:
    job_id = await new_job(store, 4)
    now = time.time()
    held = await store.jobs.claim(job_id, holder="dead", now=now, lease=1, limit=4)
    assert [c.params["fields"]["TITLE"] for c in held] == [f"secret-title-{i}" for i in range(4)]
    assert await store.jobs.mark_sent(job_id, [0, 1], holder="dead", now=now) == [0, 1]
    later = now + 2
    assert await store.jobs.claim(job_id, holder="other", now=now, lease=30, limit=9) == []
    again = await store.jobs.claim(job_id, holder="other", now=later, lease=30, limit=9)
    assert [c.seq for c in again] == [2, 3]  # never sent: free for anyone
    orphans = await store.jobs.orphans(now=later)
    assert [(j.address, c.seq, c.state) for j, c in orphans] == [
        ("10.0.0.1", 0, "sent"),
        ("10.0.0.1", 1, "sent"),
    ]
    wins = await asyncio.gather(
        *(store.jobs.adopt(job_id, 0, holder=f"r{i}", now=later, lease=30) for i in range(3))
    )
    assert sorted(wins) == [False, False, True]


async def test_only_the_holder_marks_and_a_cancelled_command_is_not_marked(store: Store) -> None:
    job_id = await new_job(store, 3)
    now = time.time()
    await store.jobs.claim(job_id, holder="me", now=now, lease=30, limit=3)
    assert await store.jobs.mark_sent(job_id, [0], holder="someone", now=now) == []
    client_id = (await store.clients())[0].id
    await store.jobs.cancel(job_id, client_id, now=now, retention=60)
    assert await store.jobs.mark_sent(job_id, [0, 1, 2], holder="me", now=now) == []
    info = await store.jobs.get(job_id)
    assert info is not None
    assert (info.state, info.counts["cancelled"]) == ("cancelled", 3)
    assert info.expires_at == pytest.approx(now + 60)


async def test_the_last_answer_ends_the_job_and_purge_removes_it(
    store: Store, raw: AsyncEngine
) -> None:
    job_id = await new_job(store, 3)
    now = time.time()
    await store.jobs.claim(job_id, holder="me", now=now, lease=30, limit=3)
    await store.jobs.mark_sent(job_id, [0, 1, 2], holder="me", now=now)
    await store.jobs.record(
        job_id,
        [(0, "ok", {"result": 7}), (1, "error", {"error": {}})],
        holder="me",
        now=now,
        retention=100,
    )
    info = await store.jobs.get(job_id)
    assert info is not None
    assert info.state == "running"
    await store.jobs.record(job_id, [(2, "unknown", {})], holder="me", now=now, retention=100)
    info = await store.jobs.get(job_id)
    assert info is not None
    assert (info.state, info.finished_at, info.expires_at) == ("done", now, now + 100)
    assert [r.result for r in await store.jobs.results(job_id, after=-1, limit=2)] == [
        {"result": 7},
        {"error": {}},
    ]
    # Sealed at rest: no title, no result in the rows.
    async with raw.connect() as conn:
        blobs = (await conn.execute(sa.text("SELECT params, result FROM job_commands"))).all()
    assert not any(b"secret-title" in bytes(p) or b'"result"' in bytes(r or b"") for p, r in blobs)
    assert await store.jobs.purge(now + 50) == 0
    assert await store.jobs.purge(now + 101) == 1
    async with raw.connect() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM job_commands")) == 0
    assert await store.jobs.get(job_id) is None
