"""Idempotency-Key rows: one per (client, key), ``running`` while the first request with the
key is on its way (held by one process, under a lease), then ``done`` with its answer,
sealed, until the row expires (docs/http-api.md, "Idempotency-Key").

Every change is one conditional statement, so that of racing processes exactly one wins:
an INSERT that conflicts with a live row does nothing, an UPDATE matches only the row in
the state it expects.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ._crypto import Cipher
from ._engine import Dialect, write_transaction
from ._schema import idempotency_keys as keys


def insert_for(dialect: Dialect, table: sa.Table) -> Any:
    """An INSERT with ON CONFLICT for the dialect (the two share the API but no type)."""
    return pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)


@dataclass(frozen=True)
class StoredAnswer:
    """An answer as it was given: replayed byte for byte."""

    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Begun:
    """What :meth:`IdempotencyStore.begin` found: ``new`` (this request holds the key and
    runs), ``replay`` (``answer``), ``mismatch`` (the key was used for another request),
    ``running`` (the first is on its way, held until ``lease_until``) or ``abandoned`` (the
    first one's process died before its answer was kept)."""

    kind: Literal["new", "replay", "mismatch", "running", "abandoned"]
    answer: StoredAnswer | None = None
    lease_until: float | None = None


class IdempotencyStore:
    def __init__(self, engine: AsyncEngine, cipher: Cipher, dialect: Dialect) -> None:
        self._engine = engine
        self._cipher = cipher
        self._dialect = dialect

    def _where(self, client_id: int, key_hash: str) -> sa.ColumnElement[bool]:
        return (keys.c.client_id == client_id) & (keys.c.key_hash == key_hash)

    async def begin(
        self,
        client_id: int,
        key_hash: str,
        fingerprint: str,
        *,
        holder: str,
        now: float,
        lease: float,
        ttl: float,
    ) -> Begun:
        """Hold the key for this request (``new``), or say what holds it."""
        fresh = {
            "fingerprint": fingerprint,
            "state": "running",
            "holder": holder,
            "lease_until": now + lease,
            "response": None,
            "created_at": now,
            "expires_at": now + ttl,
        }
        insert = insert_for(self._dialect, keys).values(
            client_id=client_id, key_hash=key_hash, **fresh
        )
        # A row past its expiry is replaced as if it were not there.
        take = insert.on_conflict_do_update(
            index_elements=[keys.c.client_id, keys.c.key_hash],
            set_=fresh,
            where=keys.c.expires_at < now,
        ).returning(keys.c.holder)
        async with write_transaction(self._engine, notify=False) as conn:
            won = (await conn.execute(take)).first()
            if won is not None:
                return Begun("new")
            row = (
                await conn.execute(sa.select(keys).where(self._where(client_id, key_hash)))
            ).first()
        if row is None:  # deleted between the two statements: a retry finds it free
            return await self.begin(
                client_id, key_hash, fingerprint, holder=holder, now=now, lease=lease, ttl=ttl
            )
        if row.fingerprint != fingerprint:
            return Begun("mismatch")
        if row.state == "done":
            return Begun("replay", answer=self._answer(client_id, key_hash, row.response))
        if (row.lease_until or 0.0) >= now:
            return Begun("running", lease_until=row.lease_until)
        return Begun("abandoned")

    async def take_over(
        self, client_id: int, key_hash: str, *, holder: str, now: float, lease: float
    ) -> bool:
        """Hold an abandoned key (its first request's process died); one winner."""
        update = (
            keys.update()
            .where(
                self._where(client_id, key_hash),
                keys.c.state == "running",
                keys.c.lease_until < now,
            )
            .values(holder=holder, lease_until=now + lease)
        )
        async with write_transaction(self._engine, notify=False) as conn:
            return int((await conn.execute(update)).rowcount) == 1

    async def renew(
        self, client_id: int, key_hash: str, *, holder: str, now: float, lease: float
    ) -> None:
        """Keep holding the key while the first request still runs."""
        update = (
            keys.update()
            .where(self._where(client_id, key_hash), keys.c.holder == holder)
            .where(keys.c.state == "running")
            .values(lease_until=now + lease)
        )
        async with write_transaction(self._engine, notify=False) as conn:
            await conn.execute(update)

    async def finish(
        self,
        client_id: int,
        key_hash: str,
        answer: StoredAnswer,
        *,
        holder: str,
        now: float,
        ttl: float,
    ) -> None:
        """Keep the first request's answer, sealed, for ``ttl`` seconds."""
        sealed = self._cipher.encrypt(
            orjson.dumps(_packed(answer)).decode(),
            table="idempotency_keys",
            row=f"{client_id}:{key_hash}",
            column="response",
        )
        update = (
            keys.update()
            .where(self._where(client_id, key_hash), keys.c.holder == holder)
            .where(keys.c.state == "running")
            .values(
                state="done", response=sealed, holder=None, lease_until=None, expires_at=now + ttl
            )
        )
        async with write_transaction(self._engine, notify=False) as conn:
            await conn.execute(update)

    async def release(self, client_id: int, key_hash: str, *, holder: str) -> None:
        """Forget a key whose request did nothing: a retry with it runs afresh."""
        delete = keys.delete().where(
            self._where(client_id, key_hash), keys.c.holder == holder, keys.c.state == "running"
        )
        async with write_transaction(self._engine, notify=False) as conn:
            await conn.execute(delete)

    async def purge(self, now: float) -> int:
        """Delete the rows past their expiry; how many."""
        async with write_transaction(self._engine, notify=False) as conn:
            deleted = await conn.execute(keys.delete().where(keys.c.expires_at < now))
            return int(deleted.rowcount)

    def _answer(self, client_id: int, key_hash: str, sealed: bytes | None) -> StoredAnswer:
        if sealed is None:  # never: a done row always has one
            raise ValueError("a finished idempotency key without its answer")
        opened: dict[str, Any] = orjson.loads(
            self._cipher.decrypt(
                sealed, table="idempotency_keys", row=f"{client_id}:{key_hash}", column="response"
            )
        )
        if "body_b64" in opened:
            body = base64.b64decode(opened["body_b64"])
        else:
            body = str(opened["body"]).encode("utf-8", "surrogateescape")
        return StoredAnswer(int(opened["status"]), str(opened["content_type"]), body)


def _packed(answer: StoredAnswer) -> dict[str, Any]:
    """The answer as JSON can carry it: the body as text when it is UTF-8 (every JSON
    answer), else as base64. Not every body is (an upstream's error page in another
    charset), and JSON cannot carry lone surrogates: such an answer would not be kept, and
    a retry would get 409 outcome_unknown instead of its replay."""
    packed: dict[str, Any] = {"status": answer.status, "content_type": answer.content_type}
    try:
        packed["body"] = answer.body.decode("utf-8")
    except UnicodeDecodeError:
        packed["body_b64"] = base64.b64encode(answer.body).decode("ascii")
    return packed
