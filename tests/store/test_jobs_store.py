"""Durable jobs in the store, on SQLite and PostgreSQL: what replicas racing for commands
get, when a job ends, and what is kept sealed (Idempotency-Key rows:
test_idempotency_store.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from b24gate.store import Cipher, JobInfo, NewJob, Store, StoreConflict

from .conftest import new_portal

JOB = "a" * 32
RETENTION = 100.0


@pytest.fixture
async def owner(store: Store) -> tuple[int, int]:
    """The (client id, portal id) every job of a test belongs to."""
    portal = await store.add_portal(new_portal())
    client = await store.add_client("erp", "kid-1", "h", ["demo"])
    return client.id, portal.id


@pytest.fixture
async def replica(database_url: str, cipher: Cipher, store: Store) -> AsyncIterator[Store]:
    """A second store on the same database: another replica, its own connections."""
    async with await Store.open(database_url, cipher) as other:
        yield other


async def new_job(
    store: Store, owner: tuple[int, int], n: int, job_id: str = JOB, now: float | None = None
) -> str:
    commands = [("crm.deal.add", {"fields": {"TITLE": f"secret-title-{i}"}}) for i in range(n)]
    job = NewJob(job_id, *owner, commands, "ORIGIN_ID", "10.0.0.1")
    await store.jobs.create(job, now=time.time() if now is None else now)
    return job_id


async def held(store: Store, owner: tuple[int, int], n: int) -> float:
    """A job of ``n`` commands, all held by "me"; when they were taken."""
    await new_job(store, owner, n)
    now = time.time()
    await store.jobs.claim(JOB, holder="me", now=now, lease=30, limit=n)
    return now


async def info_of(store: Store, job_id: str = JOB) -> JobInfo:
    info = await store.jobs.get(job_id)
    assert info is not None
    return info


async def command_rows(raw: AsyncEngine) -> list[tuple[str, int, str]]:
    async with raw.connect() as conn:
        query = sa.text("SELECT job_id, seq, state FROM job_commands ORDER BY job_id, seq")
        return [tuple(row) for row in (await conn.execute(query)).all()]


# -- the caller's side -------------------------------------------------------------------


async def test_a_job_of_50000_commands_is_stored_in_seconds(
    store: Store, owner: tuple[int, int]
) -> None:
    # A guard, not a benchmark: one row per statement took minutes and held SQLite's write
    # lock (every other writer's busy timeout is 5 s) all that time.
    started = time.monotonic()
    async with asyncio.timeout(60):
        await new_job(store, owner, 50_000)
    assert time.monotonic() - started < 30
    info = await info_of(store)
    assert (info.state, info.total, info.counts["pending"]) == ("queued", 50_000, 50_000)
    last = await store.jobs.results(JOB, after=49_997, limit=10)
    assert [(r.seq, r.state) for r in last] == [(49_998, "pending"), (49_999, "pending")]


async def test_a_job_is_stored_whole_or_not_at_all(
    store: Store, raw: AsyncEngine, owner: tuple[int, int]
) -> None:
    await new_job(store, owner, 2)
    with pytest.raises(StoreConflict):
        await new_job(store, owner, 5)  # the same id again: the first job stays as it was
    long_method: list[tuple[str, dict[str, Any]]] = [("crm.deal.add", {}), ("x" * 256, {})]
    with pytest.raises(ValueError, match="method is longer than 255"):
        await store.jobs.create(NewJob("b" * 32, *owner, long_method), now=time.time())
    assert (await info_of(store)).total == 2
    assert await store.jobs.get("b" * 32) is None
    assert len(await command_rows(raw)) == 2


async def test_a_job_is_only_its_clients(store: Store, owner: tuple[int, int]) -> None:
    await new_job(store, owner, 1)
    other = await store.add_client("crm", "kid-2", "h2", ["demo"])
    assert await store.jobs.get(JOB, owner[0]) is not None
    assert await store.jobs.get(JOB, other.id) is None
    assert await store.jobs.cancel(JOB, other.id, now=time.time(), retention=RETENTION) is None
    assert (await info_of(store)).state == "queued"


# -- replicas taking work ----------------------------------------------------------------


async def test_concurrent_claims_on_two_replicas_hand_out_every_command_once(
    store: Store, replica: Store, owner: tuple[int, int]
) -> None:
    await new_job(store, owner, 500)
    now = time.time()

    async def claimer(on: Store, name: str) -> list[int]:
        got: list[int] = []
        while taken := await on.jobs.claim(JOB, holder=name, now=now, lease=30, limit=37):
            assert len(taken) <= 37
            assert [c.seq for c in taken] == sorted(c.seq for c in taken)
            got.extend(c.seq for c in taken)
        return got

    async with asyncio.timeout(60):
        hands = await asyncio.gather(
            *(claimer(store if i % 2 else replica, f"r{i}") for i in range(6))
        )
    every = [seq for hand in hands for seq in hand]
    assert sorted(every) == list(range(500))  # each once, none lost
    assert sum(1 for hand in hands if hand) > 1  # shared, not one replica taking the job
    assert (await info_of(store)).state == "running"


async def test_a_claim_takes_the_lowest_free_commands_and_no_more(
    store: Store, owner: tuple[int, int]
) -> None:
    await new_job(store, owner, 10)
    now = time.time()
    first = await store.jobs.claim(JOB, holder="a", now=now, lease=30, limit=3)
    second = await store.jobs.claim(JOB, holder="b", now=now, lease=30, limit=3)
    assert ([c.seq for c in first], [c.seq for c in second]) == ([0, 1, 2], [3, 4, 5])
    assert first[0].params == {"fields": {"TITLE": "secret-title-0"}}


async def test_a_lapsed_lease_frees_unsent_commands_and_orphans_sent_ones(
    store: Store, replica: Store, owner: tuple[int, int]
) -> None:
    await new_job(store, owner, 4)
    now = time.time()
    held = await store.jobs.claim(JOB, holder="dead", now=now, lease=1, limit=4)
    assert [c.params["fields"]["TITLE"] for c in held] == [f"secret-title-{i}" for i in range(4)]
    assert await store.jobs.mark_sent(JOB, [0, 1], holder="dead", now=now) == [0, 1]
    later = now + 2
    assert await replica.jobs.claim(JOB, holder="other", now=now, lease=30, limit=9) == []
    again = await replica.jobs.claim(JOB, holder="other", now=later, lease=30, limit=9)
    assert [c.seq for c in again] == [2, 3]  # never sent: free for anyone
    orphans = await replica.jobs.orphans(now=later)
    assert [(j.id, j.address, c.seq, c.state, c.sent_at) for j, c in orphans] == [
        (JOB, "10.0.0.1", 0, "sent", now),
        (JOB, "10.0.0.1", 1, "sent", now),
    ]
    async with asyncio.timeout(30):
        wins = await asyncio.gather(
            *(
                (store if i % 2 else replica).jobs.adopt(
                    JOB, 0, holder=f"r{i}", now=later, lease=30
                )
                for i in range(6)
            )
        )
    assert sorted(wins) == [False] * 5 + [True]
    assert [c.seq for _, c in await replica.jobs.orphans(now=later)] == [1]


async def test_runnable_lists_jobs_with_free_commands_oldest_first(
    store: Store, owner: tuple[int, int]
) -> None:
    now = time.time()
    await new_job(store, owner, 2, "a" * 32, now=now)
    await new_job(store, owner, 2, "b" * 32, now=now + 1)
    await store.jobs.claim("a" * 32, holder="me", now=now, lease=30, limit=2)
    assert [r.id for r in await store.jobs.runnable(now=now)] == ["b" * 32]
    assert [r.id for r in await store.jobs.runnable(now=now + 31)] == ["a" * 32, "b" * 32]


async def test_a_renewed_lease_holds_and_a_dead_holders_commands_are_freed_at_once(
    store: Store, owner: tuple[int, int]
) -> None:
    await new_job(store, owner, 4)
    now = time.time()

    async def claim(holder: str, at: float) -> list[int]:
        taken = await store.jobs.claim(JOB, holder=holder, now=at, lease=10, limit=9)
        return [c.seq for c in taken]

    await store.jobs.claim(JOB, holder="alive", now=now, lease=10, limit=2)
    await store.jobs.claim(JOB, holder="dead", now=now, lease=10, limit=2)
    await store.jobs.renew(holder="alive", now=now + 9, lease=10)
    later = now + 11
    assert await store.jobs.holders(now=later) == ["alive"]
    assert await claim("x", later) == [2, 3]  # the dead one's, not the renewed ones
    assert sorted(await store.jobs.holders(now=now)) == ["alive", "x"]
    await store.jobs.expire_holder("alive")  # its process is known gone: no wait for its lease
    assert await claim("y", now) == [0, 1]


async def test_a_requeued_command_is_free_for_any_replica(
    store: Store, replica: Store, owner: tuple[int, int]
) -> None:
    now = await held(store, owner, 2)
    await store.jobs.mark_sent(JOB, [0, 1], holder="me", now=now)
    await store.jobs.requeue(JOB, [0], holder="someone-else")  # not theirs: nothing happens
    await store.jobs.requeue(JOB, [0], holder="me")  # a read, to be repeated
    again = await replica.jobs.claim(JOB, holder="other", now=now, lease=30, limit=9)
    assert [(c.seq, c.state, c.sent_at) for c in again] == [(0, "pending", None)]


# -- sending and recording ---------------------------------------------------------------


async def test_only_the_holder_marks_and_a_mark_is_committed_on_return(
    store: Store, database_url: str, cipher: Cipher, owner: tuple[int, int]
) -> None:
    now = await held(store, owner, 3)
    assert await store.jobs.mark_sent(JOB, [0], holder="someone", now=now) == []
    assert await store.jobs.mark_sent(JOB, [0, 1], holder="me", now=now) == [0, 1]
    # What a process that starts after a kill sees: the marks, nothing else.
    async with await Store.open(database_url, cipher) as after_a_crash:
        rows = await after_a_crash.jobs.results(JOB, after=-1, limit=9)
    assert [r.state for r in rows] == ["sent", "sent", "pending"]


async def test_the_last_answer_ends_the_job_and_purge_removes_it_with_its_commands(
    store: Store, raw: AsyncEngine, owner: tuple[int, int]
) -> None:
    now = await held(store, owner, 3)
    await new_job(store, owner, 2, "b" * 32)  # still running: purge leaves it alone
    await store.jobs.mark_sent(JOB, [0, 1, 2], holder="me", now=now)
    outcomes: list[tuple[int, str, dict[str, Any]]] = [
        (0, "ok", {"result": 7}),
        (1, "error", {"error": {"error": "X"}}),
    ]
    await store.jobs.record(JOB, outcomes, holder="me", now=now, retention=RETENTION)
    info = await info_of(store)
    assert (info.state, info.finished_at, info.expires_at) == ("running", None, None)
    await store.jobs.record(JOB, [(2, "unknown", {})], holder="me", now=now, retention=RETENTION)
    info = await info_of(store)
    assert (info.state, info.finished_at, info.expires_at) == ("done", now, now + RETENTION)
    assert (info.counts["ok"], info.counts["error"], info.counts["unknown"]) == (1, 1, 1)
    assert [
        (r.seq, r.state, r.result) for r in await store.jobs.results(JOB, after=0, limit=1)
    ] == [(1, "error", {"error": {"error": "X"}})]
    assert await store.jobs.purge(now + RETENTION - 1) == 0
    assert await store.jobs.purge(now + RETENTION + 1) == 1
    assert await store.jobs.get(JOB) is None
    assert await command_rows(raw) == [("b" * 32, 0, "pending"), ("b" * 32, 1, "pending")]


async def test_the_last_answers_recorded_by_two_replicas_at_once_end_the_job(
    store: Store, replica: Store, owner: tuple[int, int]
) -> None:
    # Each replica's count of what is left must see the other's answer, or neither ends
    # the job and it stays `running` with nothing left to run.
    now = time.time()
    for i in range(20):
        job_id = f"{i:032d}"
        await new_job(store, owner, 2, job_id)
        for on, holder in ((store, "a"), (replica, "b")):
            [command] = await on.jobs.claim(job_id, holder=holder, now=now, lease=30, limit=1)
            await on.jobs.mark_sent(job_id, [command.seq], holder=holder, now=now)
        async with asyncio.timeout(30):
            await asyncio.gather(
                store.jobs.record(job_id, [(0, "ok", {})], holder="a", now=now, retention=60),
                replica.jobs.record(job_id, [(1, "ok", {})], holder="b", now=now, retention=60),
            )
        assert (await info_of(store, job_id)).state == "done"


async def test_cancel_stops_what_was_not_sent_and_leaves_sent_commands_alone(
    store: Store, owner: tuple[int, int]
) -> None:
    await new_job(store, owner, 4)
    now = time.time()
    await store.jobs.claim(JOB, holder="me", now=now, lease=30, limit=3)
    await store.jobs.mark_sent(JOB, [0, 1], holder="me", now=now)
    info = await store.jobs.cancel(JOB, owner[0], now=now, retention=RETENTION)
    assert info is not None
    assert (info.state, info.finished_at) == ("cancelled", None)  # two are still out
    assert (info.counts["sent"], info.counts["cancelled"]) == (2, 2)
    # A held command that was not sent is not sent after the cancel.
    assert await store.jobs.mark_sent(JOB, [2], holder="me", now=now) == []
    later = now + 5
    await store.jobs.record(JOB, [(0, "ok", {"result": 1})], holder="me", now=later, retention=9)
    await store.jobs.record(JOB, [(1, "unknown", {})], holder="me", now=later, retention=9)
    info = await info_of(store)
    assert (info.state, info.finished_at, info.expires_at) == ("cancelled", later, later + 9)
    assert [r.state for r in await store.jobs.results(JOB, after=-1, limit=9)] == [
        "ok",
        "unknown",
        "cancelled",
        "cancelled",
    ]


async def test_a_cancelled_job_with_nothing_sent_ends_at_once(
    store: Store, owner: tuple[int, int]
) -> None:
    await new_job(store, owner, 3)
    now = time.time()
    info = await store.jobs.cancel(JOB, owner[0], now=now, retention=RETENTION)
    assert info is not None
    assert (info.state, info.counts["cancelled"]) == ("cancelled", 3)
    assert (info.finished_at, info.expires_at) == (now, now + RETENTION)
    assert await store.jobs.runnable(now=now) == []


async def test_params_and_results_are_sealed_at_rest(
    store: Store, raw: AsyncEngine, owner: tuple[int, int]
) -> None:
    now = await held(store, owner, 2)
    secret = {"result": {"ID": "secret-result-Zw4"}}
    await store.jobs.record(JOB, [(0, "ok", secret)], holder="me", now=now, retention=RETENTION)
    async with raw.connect() as conn:
        blobs = (await conn.execute(sa.text("SELECT params, result FROM job_commands"))).all()
    for params, result in blobs:
        assert b"secret-title" not in bytes(params)
        assert b"secret-result" not in bytes(result or b"")
    assert (await store.jobs.results(JOB, after=-1, limit=1))[0].result == secret
