"""The refresh lock: one holder at a time across processes, on both backends."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from b24gate.store import REFRESH_LOCK_NAMESPACE, Cipher, LockTimeout, Store, metadata

from .conftest import new_portal

# The lease table behind the lock on SQLite, written as a dead holder would have left it.
leases = metadata.tables["leases"]


async def test_one_holder_at_a_time_across_stores(database_url: str, cipher: Cipher) -> None:
    first = await Store.open(database_url, cipher)
    portal = await first.add_portal(new_portal())
    stores = [first, *[await Store.open(database_url, cipher) for _ in range(4)]]
    inside = 0
    most_inside = 0
    counter = 0

    async def bump(store: Store) -> None:
        nonlocal inside, most_inside, counter
        async with store.refresh_lock(portal.id, wait=10, lease=30):
            inside += 1
            most_inside = max(most_inside, inside)
            seen = counter
            await asyncio.sleep(0.02)
            counter = seen + 1
            inside -= 1

    try:
        await asyncio.gather(*(bump(store) for store in stores))
    finally:
        for store in stores:
            await store.close()
    assert (counter, most_inside) == (5, 1)


async def test_a_held_lock_times_out_and_is_free_after_release(
    database_url: str, cipher: Cipher
) -> None:
    async with (
        await Store.open(database_url, cipher) as a,
        await Store.open(database_url, cipher) as b,
    ):
        portal = await a.add_portal(new_portal())
        async with a.refresh_lock(portal.id, wait=1, lease=30):
            started = time.monotonic()
            with pytest.raises(LockTimeout) as info:
                async with b.refresh_lock(portal.id, wait=0.2, lease=30):
                    pytest.fail("two holders")
            assert time.monotonic() - started >= 0.2
            assert (info.value.code, info.value.status) == ("lock_timeout", 503)
            async with b.refresh_lock(portal.id + 1, wait=0, lease=30):
                pass  # another portal's lock is independent
        async with b.refresh_lock(portal.id, wait=0, lease=30):
            pass


async def test_the_lock_is_released_when_the_body_fails(store: Store) -> None:
    portal = await store.add_portal(new_portal())
    with pytest.raises(RuntimeError):
        async with store.refresh_lock(portal.id, wait=0, lease=30):
            raise RuntimeError("refresh failed")
    async with store.refresh_lock(portal.id, wait=0, lease=30):
        pass


async def test_a_waiter_gets_the_lock_when_the_holder_leaves(store: Store) -> None:
    portal = await store.add_portal(new_portal())
    order: list[str] = []

    async def holder() -> None:
        async with store.refresh_lock(portal.id, wait=0, lease=30):
            order.append("held")
            await asyncio.sleep(0.1)
        order.append("released")

    task = asyncio.create_task(holder())
    await asyncio.sleep(0.02)
    async with store.refresh_lock(portal.id, wait=5, lease=30):
        order.append("taken")
    await task
    assert order == ["held", "released", "taken"]


async def test_a_cancelled_holder_releases_the_lock(store: Store) -> None:
    portal = await store.add_portal(new_portal())
    entered = asyncio.Event()

    async def holder() -> None:
        async with store.refresh_lock(portal.id, wait=0, lease=30):
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(holder())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with store.refresh_lock(portal.id, wait=1, lease=30):
        pass


async def test_a_dead_holders_lock_is_taken_over(store: Store, raw: AsyncEngine) -> None:
    portal = await store.add_portal(new_portal())
    if store.dialect == "postgresql":
        # A holder process that dies loses its session, and the session its lock.
        holder = await raw.connect()
        await holder.execute(
            sa.text("SELECT pg_advisory_lock(:namespace, :key)"),
            {"namespace": REFRESH_LOCK_NAMESPACE, "key": portal.id},
        )
        await holder.commit()
        with pytest.raises(LockTimeout):
            async with store.refresh_lock(portal.id, wait=0.1, lease=30):
                pass
        await holder.invalidate()
        await holder.close()
        async with store.refresh_lock(portal.id, wait=1, lease=30):
            return
    # SQLite: the dead holder's lease row stays, and counts until it expires.
    name = f"refresh:{portal.id}"
    async with raw.begin() as conn:
        await conn.execute(
            sa.insert(leases).values(name=name, holder="dead", expires_at=time.time() + 60)
        )
    with pytest.raises(LockTimeout):
        async with store.refresh_lock(portal.id, wait=0.1, lease=30):
            pass
    async with raw.begin() as conn:
        await conn.execute(sa.update(leases).values(expires_at=time.time() - 1))
    async with store.refresh_lock(portal.id, wait=0.1, lease=30):
        async with raw.connect() as conn:
            holder_id = await conn.scalar(sa.select(leases.c.holder).where(leases.c.name == name))
        assert holder_id not in (None, "dead")
    async with raw.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(leases)) == 0
