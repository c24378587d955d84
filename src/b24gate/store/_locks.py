"""One holder at a time across processes: PostgreSQL advisory locks, or SQLite lease rows.

Neither holds a transaction open while the caller's body runs: an advisory lock belongs to
a connection (its session), and a lease is a committed row with an expiry that a later
taker may claim if its holder died.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..errors import LockTimeout
from ._engine import (
    EVENTS_LOCK_NAMESPACE,
    PUSH_LOCK_NAMESPACE,
    REFRESH_LOCK_NAMESPACE,
    dialect_of,
    write_transaction,
)
from ._schema import leases

logger = logging.getLogger("b24gate.store")

POLL_INTERVAL = 0.02


def refresh_lock(
    engine: AsyncEngine, portal_id: int, *, wait: float, lease: float
) -> AbstractAsyncContextManager[None]:
    """The lock that makes a portal's token refresh single-flight across replicas.

    ``wait`` bounds how long to try; ``lease`` (SQLite only) is how long the lock survives
    a holder that died, so it must exceed the longest body.
    """
    if wait < 0 or lease <= 0:
        raise ValueError("wait must be >= 0 and lease > 0")
    what = f"the token refresh of portal {portal_id}"
    if dialect_of(engine) == "postgresql":
        return _advisory_lock(engine, REFRESH_LOCK_NAMESPACE, portal_id, wait, what)
    return _lease(engine, f"refresh:{portal_id}", wait, lease, what)


def drain_lock(
    engine: AsyncEngine, portal_id: int, lease: float, *, consumer: int | None = None
) -> AbstractAsyncContextManager[None]:
    """One replica at a time drains a portal's offline events (or, with ``consumer``,
    pushes that client's events of the portal, in order); the others skip it
    (:class:`LockTimeout` at once). ``lease``: as for :func:`refresh_lock`."""
    if consumer is None:
        what = f"the offline events of portal {portal_id}"
        if dialect_of(engine) == "postgresql":
            return _advisory_lock(engine, EVENTS_LOCK_NAMESPACE, portal_id, 0.0, what)
        return _lease(engine, f"events:{portal_id}", 0.0, lease, what)
    what = f"the event push of client {consumer} for portal {portal_id}"
    if dialect_of(engine) == "postgresql":
        # Advisory keys are 32-bit: pushes have a namespace of their own.
        key = (consumer * 1_000_003 + portal_id) % 2**31
        return _advisory_lock(engine, PUSH_LOCK_NAMESPACE, key, 0.0, what)
    return _lease(engine, f"push:{consumer}:{portal_id}", 0.0, lease, what)


def _timeout(what: str, wait: float) -> LockTimeout:
    return LockTimeout(f"{what} is busy in another process; gave up after {wait:g} s")


@asynccontextmanager
async def _advisory_lock(
    engine: AsyncEngine, namespace: int, key: int, wait: float, what: str
) -> AsyncIterator[None]:
    params = {"namespace": namespace, "key": key}
    deadline = time.monotonic() + wait
    while True:
        # A fresh pooled connection per attempt: a waiter holds no connection while it sleeps.
        conn = await engine.connect()
        try:
            got = bool(
                await conn.scalar(sa.text("SELECT pg_try_advisory_lock(:namespace, :key)"), params)
            )
            await conn.commit()
        except BaseException:
            await _discard(conn)  # it may hold the lock: only closing the session frees it
            raise
        if got:
            break
        await conn.close()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout(what, wait)
        await asyncio.sleep(min(POLL_INTERVAL, remaining))
    try:
        yield
    finally:
        try:
            await conn.scalar(sa.text("SELECT pg_advisory_unlock(:namespace, :key)"), params)
            await conn.commit()
            await conn.close()
        except BaseException as exc:
            await _discard(conn)
            if not isinstance(exc, Exception):
                raise
            logger.warning("could not release the lock on %s cleanly: %s", what, type(exc).__name__)


async def _discard(conn: AsyncConnection) -> None:
    """Close the connection's session for good, which releases its advisory locks."""
    try:
        await conn.invalidate()
    finally:
        await conn.close()


@asynccontextmanager
async def _lease(
    engine: AsyncEngine, name: str, wait: float, lease: float, what: str
) -> AsyncIterator[None]:
    holder = secrets.token_hex(16)
    deadline = time.monotonic() + wait
    while not await _take_lease(engine, name, holder, lease):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout(what, wait)
        await asyncio.sleep(min(POLL_INTERVAL, remaining))
    try:
        yield
    finally:
        # Shielded: a cancelled body must still give the lease back, not leave it to expire.
        await asyncio.shield(_drop_lease(engine, name, holder, what))


async def _take_lease(engine: AsyncEngine, name: str, holder: str, lease: float) -> bool:
    now = time.time()
    insert = sqlite_insert(leases).values(name=name, holder=holder, expires_at=now + lease)
    claim = insert.on_conflict_do_update(
        index_elements=[leases.c.name],
        set_={"holder": insert.excluded.holder, "expires_at": insert.excluded.expires_at},
        where=leases.c.expires_at < now,  # only a lease whose holder is gone
    ).returning(leases.c.holder)
    async with write_transaction(engine) as conn:
        taken = await conn.scalar(claim)
    return isinstance(taken, str) and taken == holder


async def _drop_lease(engine: AsyncEngine, name: str, holder: str, what: str) -> None:
    try:
        async with write_transaction(engine) as conn:
            result = await conn.execute(
                sa.delete(leases).where(leases.c.name == name, leases.c.holder == holder)
            )
    except Exception as exc:
        logger.warning("could not release the lease on %s: %s", what, type(exc).__name__)
        return
    if result.rowcount == 0:
        logger.warning("the lease on %s expired before its holder finished", what)


# -- which gateway processes run on this store -------------------------------------------

_SERVING = "serving:"


async def announce_serving(engine: AsyncEngine, holder: str, ttl: float) -> None:
    """Say that the gateway process ``holder`` runs on this store, for ``ttl`` seconds."""
    name = (_SERVING + holder)[:128]
    async with write_transaction(engine, notify=False) as conn:
        await conn.execute(sa.delete(leases).where(leases.c.name == name))
        await conn.execute(
            sa.insert(leases).values(name=name, holder=holder[:64], expires_at=time.time() + ttl)
        )


async def withdraw_serving(engine: AsyncEngine, holder: str) -> None:
    async with write_transaction(engine, notify=False) as conn:
        await conn.execute(sa.delete(leases).where(leases.c.name == (_SERVING + holder)[:128]))


async def serving(engine: AsyncEngine) -> list[str]:
    """The gateway processes that said they run on this store and have not expired."""
    query = sa.select(leases.c.holder).where(
        leases.c.name.startswith(_SERVING, autoescape=True), leases.c.expires_at > time.time()
    )
    async with engine.connect() as conn:
        return sorted((await conn.scalars(query)).all())


# -- admin page sessions that were signed out --------------------------------------------

_SIGNED_OUT = "signed-out:"


async def sign_out(engine: AsyncEngine, session: str, until: float) -> None:
    """Remember that ``session`` signed out, until it would have expired anyway; forget
    the sessions whose time has passed."""
    now = time.time()
    async with write_transaction(engine, notify=False) as conn:
        await conn.execute(
            sa.delete(leases).where(
                leases.c.name.startswith(_SIGNED_OUT, autoescape=True), leases.c.expires_at < now
            )
        )
        name = (_SIGNED_OUT + session)[:128]
        await conn.execute(sa.delete(leases).where(leases.c.name == name))
        await conn.execute(
            sa.insert(leases).values(name=name, holder="admin page", expires_at=until)
        )


async def signed_out(engine: AsyncEngine, session: str) -> bool:
    query = sa.select(leases.c.name).where(leases.c.name == (_SIGNED_OUT + session)[:128])
    async with engine.connect() as conn:
        return await conn.scalar(query) is not None
