"""Reads on the hot path, cached until the store says something may have changed.

A call needs its client, its portal and the portal's grant: three reads (and decryptions)
that rarely change. :meth:`ReadCache.refresh` asks :class:`~._changes.ChangeWatch` once per
call; when anything may have changed, everything cached is dropped. Unknown keys are not
cached, so random keys cannot grow the cache.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from ._store import Client, Grant, Portal, Store

T = TypeVar("T")
K = TypeVar("K")


class ReadCache:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._generation: tuple[int, int] | None = None
        self._epoch = 0
        self._clients: dict[str, Client] = {}
        self._portals: dict[str, Portal] = {}
        self._domains: dict[str, Portal] = {}
        self._grants: dict[int, Grant] = {}
        self._all: list[Portal] | None = None

    async def refresh(self) -> None:
        """Drop everything cached if the store may have changed since the last refresh."""
        generation = await self._store.changes.generation()
        if generation != self._generation:
            self._generation = generation
            self._epoch += 1
            self._clients.clear()
            self._portals.clear()
            self._domains.clear()
            self._grants.clear()
            self._all = None

    async def _cached(
        self, table: dict[K, T], key: K, load: Callable[[], Awaitable[T | None]]
    ) -> T | None:
        if key in table:
            return table[key]
        epoch = self._epoch
        value = await load()
        # A read that overlapped a refresh may hold data from before the change: not kept.
        if value is not None and epoch == self._epoch:
            table[key] = value
        return value

    async def client_by_key_id(self, key_id: str) -> Client | None:
        return await self._cached(
            self._clients, key_id, lambda: self._store.client_by_key_id(key_id)
        )

    async def portal(self, name: str) -> Portal | None:
        return await self._cached(self._portals, name, lambda: self._store.portal(name))

    async def portal_by_domain(self, domain: str) -> Portal | None:
        key = domain.lower()
        return await self._cached(self._domains, key, lambda: self._store.portal_by_domain(key))

    async def portals(self) -> list[Portal]:
        if self._all is None:
            epoch = self._epoch
            found = await self._store.portals()
            if epoch == self._epoch:
                self._all = found
            return found
        return self._all

    async def grant(self, portal: Portal) -> Grant | None:
        return await self._cached(self._grants, portal.id, lambda: self._store.grant(portal))
