"""Cached reads see another process's write on the very next call (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

from b24gate.store import Cipher, Grant, ReadCache, Store

from .conftest import new_portal


async def settled(cache: ReadCache) -> None:
    """Refresh once the other store's write is visible: at once on SQLite (data_version);
    PostgreSQL delivers the NOTIFY a moment after the commit (bounded here by 1 s)."""
    seen = cache._generation
    for _ in range(100):
        if await cache._store.changes.generation() != seen:
            break
        await asyncio.sleep(0.01)
    await cache.refresh()


async def test_another_process_revoking_a_key_is_seen_on_the_next_read(
    database_url: str, cipher: Cipher, store: Store
) -> None:
    await store.add_portal(new_portal())
    await store.add_client("erp", "k1", "h1", ["demo"])
    other = await Store.open(database_url, cipher)  # another process, as far as caching goes
    try:
        cache = ReadCache(store)
        await cache.refresh()
        assert await cache.client_by_key_id("k1") is not None
        await cache.refresh()
        assert (await cache.client_by_key_id("k1")) is not None
        assert await other.revoke_client("erp")
        await settled(cache)
        assert await cache.client_by_key_id("k1") is None
    finally:
        await other.close()


async def test_unchanged_store_is_served_from_memory(store: Store) -> None:
    portal = await store.add_portal(new_portal())
    await store.save_grant(portal, Grant("a1", "r1", 2e9, 1.0))
    await asyncio.sleep(0.2)  # PostgreSQL: our own writes' NOTIFY arrives a moment later
    cache = ReadCache(store)
    await cache.refresh()
    first = await cache.grant(portal)
    await cache.refresh()
    assert await cache.grant(portal) is first  # the same object: no read, no decryption
    assert await cache.portal("demo") is await cache.portal("demo")


async def test_a_refresh_in_another_process_replaces_the_cached_grant(
    database_url: str, cipher: Cipher, store: Store
) -> None:
    portal = await store.add_portal(new_portal())
    await store.save_grant(portal, Grant("a1", "r1", 2e9, 1.0))
    other = await Store.open(database_url, cipher)
    try:
        cache = ReadCache(store)
        await cache.refresh()
        assert (await cache.grant(portal)).access_token == "a1"  # type: ignore[union-attr]
        await other.save_grant(portal, Grant("a2", "r2", 2e9, 2.0))
        await settled(cache)
        assert (await cache.grant(portal)).access_token == "a2"  # type: ignore[union-attr]
    finally:
        await other.close()


async def test_unknown_keys_are_not_cached(store: Store) -> None:
    cache = ReadCache(store)
    await cache.refresh()
    for i in range(100):
        assert await cache.client_by_key_id(f"nope{i}") is None
    assert cache._clients == {}
