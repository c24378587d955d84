"""The event log on SQLite and PostgreSQL: numbers without gaps in commit order when two
processes append at once, an offline record handed out twice kept once, data sealed, each
consumer's cursor, purge remembered, the handler secret found by its hash only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from b24gate.errors import LockTimeout
from b24gate.store import Cipher, NewEvent, Store

from .conftest import new_portal


def change(record: int, origin: str | None = None) -> NewEvent:
    return NewEvent(
        event="ONCRMDEALUPDATE",
        data={"FIELDS": {"ID": str(record)}},
        ts=None,
        source="online",
        origin=origin,
    )


@pytest.fixture
async def portal_id(store: Store) -> int:
    return (await store.add_portal(new_portal())).id


@pytest.fixture
async def replica(database_url: str, cipher: Cipher, store: Store) -> AsyncIterator[Store]:
    async with await Store.open(database_url, cipher) as other:
        yield other


async def test_two_processes_appending_at_once_number_without_gaps(
    store: Store, replica: Store, portal_id: int
) -> None:
    async def writer(which: Store, tag: int) -> list[int]:
        numbers: list[int] = []
        for i in range(20):
            numbers += await which.events.append(
                portal_id, [change(tag * 1000 + i), change(tag * 1000 + i)], time.time()
            )
        return numbers

    async with asyncio.timeout(60):
        first, second = await asyncio.gather(writer(store, 1), writer(replica, 2))
    assert sorted(first + second) == list(range(1, 81))
    rows = await store.events.read(portal_id, 0, 1000)
    assert [r.seq for r in rows] == list(range(1, 81))
    # Each append's events are consecutive, in the order given.
    ids = [r.data["FIELDS"]["ID"] for r in rows]
    assert all(ids[i] == ids[i + 1] for i in range(0, 80, 2))


async def test_a_reader_never_sees_a_later_number_before_an_earlier_one(
    store: Store, replica: Store, portal_id: int
) -> None:
    """While two processes append, every read is a prefix of the log: a consumer that
    acknowledged n has seen every event up to n."""
    done = asyncio.Event()

    async def appender(which: Store) -> None:
        for i in range(30):
            await which.events.append(portal_id, [change(i)], time.time())

    async def reader() -> None:
        while not done.is_set():
            seqs = [r.seq for r in await store.events.read(portal_id, 0, 1000)]
            assert seqs == list(range(1, len(seqs) + 1))
            await asyncio.sleep(0)

    async with asyncio.timeout(60):
        watching = asyncio.create_task(reader())
        await asyncio.gather(appender(store), appender(replica))
        done.set()
        await watching


async def test_an_origin_is_kept_once(store: Store, portal_id: int) -> None:
    now = time.time()
    assert await store.events.append(portal_id, [change(1, "offline:1:t1")], now) == [1]
    again = [change(1, "offline:1:t1"), change(2, "offline:2:t1"), change(2, "offline:2:t1")]
    assert await store.events.append(portal_id, again, now) == [2]
    assert await store.events.append(portal_id, [change(1, "offline:1:t2")], now) == [3]
    assert (await store.events.head(portal_id)).last == 3


async def test_the_data_is_sealed(store: Store, raw: AsyncEngine, portal_id: int) -> None:
    await store.events.append(portal_id, [change(424242)], time.time())
    async with raw.connect() as conn:
        sealed = await conn.scalar(sa.text("SELECT data FROM events"))
        secret = await conn.scalar(sa.text("SELECT handler_secret FROM event_heads"))
    assert b"424242" not in bytes(sealed)
    assert secret is None
    await store.events.handler_secret(portal_id, "h" * 43)
    async with raw.connect() as conn:
        row = (
            await conn.execute(sa.text("SELECT handler_hash, handler_secret FROM event_heads"))
        ).one()
    assert b"h" * 43 not in bytes(row.handler_secret)
    assert "h" * 43 not in row.handler_hash


async def test_the_handler_secret_is_made_once(store: Store, portal_id: int) -> None:
    assert await store.events.handler_secret(portal_id, "a" * 43) == "a" * 43
    assert await store.events.handler_secret(portal_id, "b" * 43) == "a" * 43
    assert await store.events.portal_by_secret("a" * 43) == portal_id
    assert await store.events.portal_by_secret("b" * 43) is None


async def test_cursors_are_per_consumer(store: Store, portal_id: int) -> None:
    first = (await store.add_client("a", "kid-a", "h", ["demo"])).id
    second = (await store.add_client("b", "kid-b", "h", ["demo"])).id
    assert await store.events.cursor(first, portal_id) is None
    await store.events.acknowledge(first, portal_id, 5, time.time())
    await store.events.acknowledge(first, portal_id, 7, time.time())
    assert await store.events.cursor(first, portal_id) == 7
    assert await store.events.cursor(second, portal_id) is None


async def test_purge_remembers_the_highest_number_gone(store: Store, portal_id: int) -> None:
    old = time.time() - 100
    await store.events.append(portal_id, [change(1), change(2)], old)
    await store.events.append(portal_id, [change(3)], time.time())
    assert await store.events.purge(time.time() - 50) == 2
    assert [r.seq for r in await store.events.read(portal_id, 0, 10)] == [3]
    head = await store.events.head(portal_id)
    assert (head.last, head.purged) == (3, 2)
    assert await store.events.purge(time.time() - 50) == 0
    assert (await store.events.head(portal_id)).purged == 2


async def test_subscriptions_change_mode_and_go(store: Store, portal_id: int) -> None:
    now = time.time()
    await store.events.subscribe(portal_id, ["ONCRMDEALADD", "ONCRMDEALUPDATE"], "online", now)
    await store.events.subscribe(portal_id, ["ONCRMDEALADD"], "offline", now)
    subs = {s.event: s.mode for s in await store.events.subscriptions(portal_id)}
    assert subs == {"ONCRMDEALADD": "offline", "ONCRMDEALUPDATE": "online"}
    removed = await store.events.unsubscribe(portal_id, ["ONCRMDEALADD", "ONCRMLEADADD"])
    assert [s.event for s in removed] == ["ONCRMDEALADD"]
    assert [s.event for s in await store.events.subscriptions()] == ["ONCRMDEALUPDATE"]
    with pytest.raises(ValueError, match="mode"):
        await store.events.subscribe(portal_id, ["X"], "sometimes", now)


async def test_one_drainer_a_portal_across_processes(
    store: Store, replica: Store, portal_id: int
) -> None:
    async with store.events.drain_lock(portal_id):
        with pytest.raises(LockTimeout):
            async with replica.events.drain_lock(portal_id):
                pass
    async with replica.events.drain_lock(portal_id):
        pass


async def test_a_push_acknowledges_only_from_where_it_read(store: Store, portal_id: int) -> None:
    """Compare-and-set: a page pushed from a cursor that moved meanwhile (another process,
    the key's own read) does not move it back."""
    client = (await store.add_client("a", "kid-a", "h", ["demo"])).id
    assert await store.events.advance(client, portal_id, 0, 5, time.time())
    assert not await store.events.advance(client, portal_id, 0, 3, time.time())
    assert await store.events.advance(client, portal_id, 5, 9, time.time())
    assert not await store.events.advance(client, portal_id, 5, 7, time.time())
    assert await store.events.cursor(client, portal_id) == 9
