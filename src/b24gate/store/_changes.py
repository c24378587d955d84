"""Whether anything in the store may have changed: the key to caching reads safely.

Each process caches clients, portals and grants, and must still see a revocation or a
refresh made by another process on its very next call. The store's own primitives say so
cheaply: SQLite's ``PRAGMA data_version`` (changes whenever another connection commits)
on one dedicated connection, and PostgreSQL's ``LISTEN``/``NOTIFY`` (every write
transaction notifies :data:`CHANNEL` when it commits). Commits of this process are counted
as they happen, so a reader never races its own write.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("b24gate.store")

CHANNEL = "b24gate_changes"
# The execution option of such a write (store/_engine.py sets it; kept here to avoid a cycle).
QUIET_OPTION = "b24gate_quiet"


class ChangeWatch:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._local = 0
        self._remote = 0
        self._sqlite: sqlite3.Connection | None = None
        self._pg: Any = None
        self._broken = itertools.count(1)
        self._listening = False
        event.listen(engine.sync_engine, "commit", self._committed)

    def _committed(self, conn: Any) -> None:
        # A quiet write (jobs, idempotency keys) changes nothing a cache holds.
        if not conn.get_execution_options().get(QUIET_OPTION, False):
            self._local += 1

    async def start(self) -> None:
        url = self._engine.url
        if url.get_backend_name() == "postgresql":
            dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
            try:
                self._pg = await asyncpg.connect(dsn)
                await self._pg.add_listener(CHANNEL, self._notified)
                self._pg.add_termination_listener(self._lost)
                self._listening = True
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning(
                    "cannot listen for store changes (%s): reads will not be cached",
                    type(exc).__name__,
                )
        elif url.database and url.database != ":memory:":
            # A plain connection, asked on the event loop itself: `PRAGMA data_version` reads
            # a counter in shared memory, far cheaper than a hop to a driver thread.
            self._sqlite = sqlite3.connect(
                Path(url.database), timeout=1.0, isolation_level=None, check_same_thread=False
            )
            self._listening = True

    def _notified(self, *_args: Any) -> None:
        self._remote += 1

    def _lost(self, *_args: Any) -> None:
        log.warning("lost the store-change listener: reads will not be cached")
        self._listening = False

    async def generation(self) -> tuple[int, int]:
        """A value that differs whenever the store may have changed since the last call."""
        if not self._listening:
            return (self._local, -next(self._broken))  # never equal twice: no caching
        if self._sqlite is not None:
            row = self._sqlite.execute("PRAGMA data_version").fetchone()
            return (self._local, int(row[0]) if row else 0)
        return (self._local, self._remote)

    async def close(self) -> None:
        if event.contains(self._engine.sync_engine, "commit", self._committed):
            event.remove(self._engine.sync_engine, "commit", self._committed)
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._pg is not None and not self._pg.is_closed():
            await self._pg.close()
        self._listening = False
