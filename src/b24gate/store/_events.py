"""Bitrix24's events, kept: each portal's subscriptions, its ordered event log, and each
consumer's cursor in it (docs/events.md).

A portal's events are numbered 1, 2, 3… with no gap, in the order their writes commit: an
append takes the portal's row in ``event_heads`` (PostgreSQL's row lock, SQLite's write
lock) for the numbers it hands out and holds it until it commits, so a reader that sees
event n has seen every event before it. A consumer acknowledges by reading after a number;
nothing it has not acknowledged is purged before ``event_retention``.

What Bitrix24 sent about a record (``data``) is sealed like every other column that holds
the business's data; the delivery's ``auth`` (a token) is never kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ._crypto import Cipher
from ._engine import Dialect, write_transaction
from ._locks import drain_lock
from ._schema import event_cursors, event_heads, event_pushes, event_subscriptions, events

MODES = ("online", "offline")


@dataclass(frozen=True)
class Subscription:
    portal_id: int
    event: str
    mode: str  # online | offline
    created_at: float


@dataclass(frozen=True)
class NewEvent:
    event: str
    data: Mapping[str, Any]
    ts: float | None  # when Bitrix24 says it happened (its ``ts`` or TIMESTAMP_X)
    source: str  # online | offline
    # What names this occurrence at Bitrix24 (an offline record's ID and time): an event
    # handed out twice (a reservation that lapsed after a crash) is kept once.
    origin: str | None = None


@dataclass(frozen=True)
class Event:
    portal_id: int
    seq: int
    event: str
    data: dict[str, Any]
    ts: float | None
    source: str
    received_at: float


@dataclass(frozen=True)
class Head:
    """A portal's log: its last number and the highest number purged."""

    last: int
    purged: int


@dataclass(frozen=True)
class Push:
    """A consumer's events pushed to its HTTP service; ``secret`` (decrypted) signs them."""

    client_id: int
    portal_id: int
    url: str
    secret: str = field(repr=False)
    created_at: float


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class EventStore:
    def __init__(self, engine: AsyncEngine, cipher: Cipher, dialect: Dialect) -> None:
        self._engine = engine
        self._cipher = cipher
        self._dialect = dialect

    def _writing(self) -> Any:
        # Nothing here is in the read cache: the writes are quiet.
        return write_transaction(self._engine, notify=False)

    def _insert(self, table: sa.Table) -> Any:
        return (pg_insert if self._dialect == "postgresql" else sqlite_insert)(table)

    def drain_lock(self, portal_id: int, lease: float = 300.0) -> AbstractAsyncContextManager[None]:
        """Held while this process drains ``portal_id``'s offline queue; :class:`LockTimeout`
        at once when another does."""
        return drain_lock(self._engine, portal_id, lease)

    # -- subscriptions ---------------------------------------------------------------

    async def subscribe(self, portal_id: int, names: Sequence[str], mode: str, now: float) -> None:
        """Subscribe ``portal_id`` to ``names`` in ``mode`` (an event subscribed in the other
        mode changes mode)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if not names:
            return
        insert = self._insert(event_subscriptions).values(
            [{"portal_id": portal_id, "event": n, "mode": mode, "created_at": now} for n in names]
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[event_subscriptions.c.portal_id, event_subscriptions.c.event],
            set_={"mode": insert.excluded.mode},
        )
        async with self._writing() as conn:
            await conn.execute(upsert)

    async def unsubscribe(self, portal_id: int, names: Sequence[str]) -> list[Subscription]:
        """Remove these subscriptions; the ones that existed."""
        removed = [s for s in await self.subscriptions(portal_id) if s.event in set(names)]
        if removed:
            async with self._writing() as conn:
                await conn.execute(
                    sa.delete(event_subscriptions).where(
                        event_subscriptions.c.portal_id == portal_id,
                        event_subscriptions.c.event.in_([s.event for s in removed]),
                    )
                )
        return removed

    async def subscriptions(self, portal_id: int | None = None) -> list[Subscription]:
        query = sa.select(event_subscriptions).order_by(
            event_subscriptions.c.portal_id, event_subscriptions.c.event
        )
        if portal_id is not None:
            query = query.where(event_subscriptions.c.portal_id == portal_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Subscription(r.portal_id, r.event, r.mode, r.created_at) for r in rows]

    # -- the handler's secret (online deliveries) ------------------------------------

    async def handler_secret(self, portal_id: int, new_secret: str) -> str:
        """The secret of ``portal_id``'s handler URL: ``new_secret`` becomes it unless the
        portal has one already."""
        await self._ensure_head(portal_id)
        sealed = self._seal_secret(portal_id, new_secret)
        async with self._writing() as conn:
            await conn.execute(
                sa.update(event_heads)
                .where(event_heads.c.portal_id == portal_id, event_heads.c.handler_hash.is_(None))
                .values(handler_hash=secret_hash(new_secret), handler_secret=sealed)
            )
            stored = await conn.scalar(
                sa.select(event_heads.c.handler_secret).where(event_heads.c.portal_id == portal_id)
            )
        return self._cipher.decrypt(
            stored, table="event_heads", row=str(portal_id), column="handler_secret"
        )

    async def portal_by_secret(self, secret: str) -> int | None:
        """The portal whose handler URL carries ``secret`` (found by its hash)."""
        async with self._engine.connect() as conn:
            found = await conn.scalar(
                sa.select(event_heads.c.portal_id).where(
                    event_heads.c.handler_hash == secret_hash(secret)
                )
            )
        return None if found is None else int(found)

    def _seal_secret(self, portal_id: int, secret: str) -> bytes:
        return self._cipher.encrypt(
            secret, table="event_heads", row=str(portal_id), column="handler_secret"
        )

    async def _ensure_head(self, portal_id: int) -> None:
        insert = self._insert(event_heads).values(portal_id=portal_id, last_seq=0, purged_seq=0)
        async with self._writing() as conn:
            await conn.execute(insert.on_conflict_do_nothing(index_elements=["portal_id"]))

    # -- the log ---------------------------------------------------------------------

    def _seal_data(self, portal_id: int, seq: int, data: Mapping[str, Any]) -> bytes:
        return self._cipher.encrypt(
            orjson.dumps(data).decode(), table="events", row=f"{portal_id}:{seq}", column="data"
        )

    def _open_data(self, portal_id: int, seq: int, sealed: bytes) -> dict[str, Any]:
        opened: dict[str, Any] = orjson.loads(
            self._cipher.decrypt(sealed, table="events", row=f"{portal_id}:{seq}", column="data")
        )
        return opened

    async def append(self, portal_id: int, items: Sequence[NewEvent], now: float) -> list[int]:
        """Keep ``items`` in order, durably, in one transaction; their numbers (an item whose
        ``origin`` is kept already is skipped and gets none)."""
        if not items:
            return []
        head = self._insert(event_heads).values(portal_id=portal_id, last_seq=0, purged_seq=0)
        async with self._writing() as conn:
            await conn.execute(head.on_conflict_do_nothing(index_elements=["portal_id"]))
            # The portal's row, locked until commit (SQLite: the write lock already is):
            # numbers are handed out in commit order, and origins are checked under it.
            last = int(
                await conn.scalar(
                    sa.select(event_heads.c.last_seq)
                    .where(event_heads.c.portal_id == portal_id)
                    .with_for_update()
                )
                or 0
            )
            fresh = await self._unseen(conn, portal_id, items)
            if not fresh:
                return []
            await conn.execute(
                sa.update(event_heads)
                .where(event_heads.c.portal_id == portal_id)
                .values(last_seq=last + len(fresh))
            )
            await conn.execute(
                events.insert(),
                [
                    {
                        "portal_id": portal_id,
                        "seq": seq,
                        "event": item.event,
                        "data": self._seal_data(portal_id, seq, item.data),
                        "ts": item.ts,
                        "source": item.source,
                        "origin": item.origin,
                        "received_at": now,
                    }
                    for seq, item in enumerate(fresh, start=last + 1)
                ],
            )
        return list(range(last + 1, last + len(fresh) + 1))

    @staticmethod
    async def _unseen(
        conn: AsyncConnection, portal_id: int, items: Sequence[NewEvent]
    ) -> list[NewEvent]:
        """``items`` but those whose origin is kept already (or repeated among them)."""
        origins = [i.origin for i in items if i.origin is not None]
        if not origins:
            return list(items)
        kept = set(
            (
                await conn.execute(
                    sa.select(events.c.origin).where(
                        events.c.portal_id == portal_id, events.c.origin.in_(origins)
                    )
                )
            ).scalars()
        )
        fresh = []
        for item in items:
            if item.origin is not None:
                if item.origin in kept:
                    continue
                kept.add(item.origin)
            fresh.append(item)
        return fresh

    async def read(self, portal_id: int, after: int, limit: int) -> list[Event]:
        """Up to ``limit`` events numbered above ``after``, in order."""
        query = (
            sa.select(events)
            .where(events.c.portal_id == portal_id, events.c.seq > after)
            .order_by(events.c.seq)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            Event(
                portal_id=r.portal_id,
                seq=r.seq,
                event=r.event,
                data=self._open_data(r.portal_id, r.seq, r.data),
                ts=r.ts,
                source=r.source,
                received_at=r.received_at,
            )
            for r in rows
        ]

    async def head(self, portal_id: int) -> Head:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(event_heads.c.last_seq, event_heads.c.purged_seq).where(
                        event_heads.c.portal_id == portal_id
                    )
                )
            ).first()
        return Head(0, 0) if row is None else Head(int(row.last_seq), int(row.purged_seq))

    # -- consumers -------------------------------------------------------------------

    async def cursor(self, client_id: int, portal_id: int) -> int | None:
        """Where ``client_id`` acknowledged up to in ``portal_id``'s log; None: never read."""
        async with self._engine.connect() as conn:
            found = await conn.scalar(
                sa.select(event_cursors.c.seq).where(
                    event_cursors.c.client_id == client_id, event_cursors.c.portal_id == portal_id
                )
            )
        return None if found is None else int(found)

    async def acknowledge(self, client_id: int, portal_id: int, seq: int, now: float) -> None:
        insert = self._insert(event_cursors).values(
            client_id=client_id, portal_id=portal_id, seq=seq, updated_at=now
        )
        async with self._writing() as conn:
            await conn.execute(
                insert.on_conflict_do_update(
                    index_elements=[event_cursors.c.client_id, event_cursors.c.portal_id],
                    set_={"seq": insert.excluded.seq, "updated_at": insert.excluded.updated_at},
                )
            )

    # -- pushes ----------------------------------------------------------------------

    async def set_push(
        self, client_id: int, portal_id: int, url: str, secret: str, now: float
    ) -> None:
        """Push ``client_id``'s events of ``portal_id`` to ``url`` (replacing any earlier)."""
        sealed = self._cipher.encrypt(
            secret, table="event_pushes", row=f"{client_id}:{portal_id}", column="secret"
        )
        insert = self._insert(event_pushes).values(
            client_id=client_id, portal_id=portal_id, url=url, secret=sealed, created_at=now
        )
        async with self._writing() as conn:
            await conn.execute(
                insert.on_conflict_do_update(
                    index_elements=[event_pushes.c.client_id, event_pushes.c.portal_id],
                    set_={"url": insert.excluded.url, "secret": insert.excluded.secret},
                )
            )

    async def remove_push(self, client_id: int, portal_id: int) -> bool:
        async with self._writing() as conn:
            gone = await conn.execute(
                sa.delete(event_pushes).where(
                    event_pushes.c.client_id == client_id, event_pushes.c.portal_id == portal_id
                )
            )
        return bool(gone.rowcount)

    async def pushes(self) -> list[Push]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(event_pushes))).all()
        return [
            Push(
                client_id=r.client_id,
                portal_id=r.portal_id,
                url=r.url,
                secret=self._cipher.decrypt(
                    r.secret,
                    table="event_pushes",
                    row=f"{r.client_id}:{r.portal_id}",
                    column="secret",
                ),
                created_at=r.created_at,
            )
            for r in rows
        ]

    def push_lock(self, client_id: int, portal_id: int) -> AbstractAsyncContextManager[None]:
        """One replica at a time pushes a consumer's events of a portal (in order)."""
        return drain_lock(self._engine, portal_id, 300.0, consumer=client_id)

    async def advance(
        self, client_id: int, portal_id: int, expected: int, seq: int, now: float
    ) -> bool:
        """Move ``client_id``'s cursor from ``expected`` to ``seq``, only if it is still at
        ``expected`` (no cursor counts as 0); whether it moved. A push acknowledges so: a
        page another process pushed meanwhile does not move the cursor back."""
        async with self._writing() as conn:
            moved = await conn.execute(
                sa.update(event_cursors)
                .where(
                    event_cursors.c.client_id == client_id,
                    event_cursors.c.portal_id == portal_id,
                    event_cursors.c.seq == expected,
                )
                .values(seq=seq, updated_at=now)
            )
            if moved.rowcount:
                return True
            if expected != 0:
                return False
            insert = self._insert(event_cursors).values(
                client_id=client_id, portal_id=portal_id, seq=seq, updated_at=now
            )
            made = await conn.execute(insert.on_conflict_do_nothing())
            return bool(made.rowcount)

    # -- retention -------------------------------------------------------------------

    async def purge(self, before: float) -> int:
        """Delete the events received before ``before``; how many. Each portal's head
        remembers the highest number purged, so a consumer behind it learns it missed some.
        One short transaction a portal, in portal order: appends to the other portals'
        logs do not wait for the whole purge."""
        async with self._engine.connect() as conn:
            gone = (
                await conn.execute(
                    sa.select(events.c.portal_id, sa.func.max(events.c.seq))
                    .where(events.c.received_at < before)
                    .group_by(events.c.portal_id)
                    .order_by(events.c.portal_id)
                )
            ).all()
        greatest = sa.func.max if self._dialect == "sqlite" else sa.func.greatest
        purged = 0
        for portal_id, highest in gone:
            async with self._writing() as conn:
                deleted = await conn.execute(
                    sa.delete(events).where(
                        events.c.portal_id == portal_id, events.c.seq <= highest
                    )
                )
                await conn.execute(
                    sa.update(event_heads)
                    .where(event_heads.c.portal_id == portal_id)
                    .values(purged_seq=greatest(event_heads.c.purged_seq, highest))
                )
            purged += deleted.rowcount
        return purged
