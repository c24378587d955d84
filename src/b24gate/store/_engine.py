"""Database URLs, the async engine with its per-connection settings, and migrations."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..errors import ConfigError
from ._changes import CHANNEL, QUIET_OPTION

Dialect = Literal["sqlite", "postgresql"]
T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Execution option that makes SQLite start a transaction with BEGIN IMMEDIATE: a writer takes
# the write lock up front (waiting up to busy_timeout) instead of failing with SQLITE_BUSY
# when it upgrades a read snapshot that another writer has since changed.
WRITE_OPTION = "b24gate_write"

_SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout=5000",  # first, so that switching to WAL waits for other writers
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)


def _lock_key(name: str) -> int:
    """A signed 32-bit key for PostgreSQL advisory locks, stable across processes."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


# Advisory locks take (namespace, id): our namespace keeps them apart from other programs'.
MIGRATION_LOCK = (_lock_key("b24gate-migrations"), 0)
REFRESH_LOCK_NAMESPACE = _lock_key("b24gate-refresh")
EVENTS_LOCK_NAMESPACE = _lock_key("b24gate-events")
PUSH_LOCK_NAMESPACE = _lock_key("b24gate-push")


def database_url(data_dir: Path, url: str | None) -> str:
    """``B24GATE_DATABASE_URL``, or the SQLite file in the data directory."""
    return url if url else f"sqlite:///{data_dir}/b24gate.db"


def safe_url(url: str) -> str:
    """The URL for messages: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"


def _async_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"cannot parse the database URL {safe_url(url)!r}") from None
    driver = parsed.drivername
    if driver in ("sqlite", "sqlite+aiosqlite"):
        return parsed.set(drivername="sqlite+aiosqlite")
    if driver in ("postgresql", "postgres", "postgresql+asyncpg"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise ConfigError(
        f"unsupported database URL scheme {driver!r}: use sqlite:///PATH or postgresql://..."
    )


def make_engine(url: str) -> AsyncEngine:
    """An async engine for a ``sqlite:///`` or ``postgresql://`` URL."""
    async_url = _async_url(url)
    if async_url.get_backend_name() == "postgresql":
        return create_async_engine(async_url, pool_pre_ping=True)
    if async_url.database and async_url.database != ":memory:":
        directory = Path(async_url.database).parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Created private before SQLite opens it; SQLite gives its -wal and -shm files
            # the database file's permissions.
            os.close(os.open(async_url.database, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise ConfigError(f"cannot create the directory {directory}: {exc.strerror}") from None
    engine = create_async_engine(async_url)
    event.listen(engine.sync_engine, "connect", _sqlite_connect)
    event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own implicit BEGIN is switched off so that _sqlite_begin decides how a
    # transaction starts (and DDL runs inside the migration's transaction).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


# How long opening a SQLite store keeps trying while another process holds the database. The
# busy timeout covers one statement; SQLite also answers "database is locked" at once, past
# any busy handler, while another process switches a new file to WAL or cleans up its WAL on
# close (https://sqlite.org/wal.html#sometimes_queries_return_sqlite_busy_in_wal_mode), which
# two processes starting on one new data directory can meet.
OPEN_PATIENCE = 20.0


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "database is locked" (or "table is locked")."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(cause, "sqlite_errorcode", None)
    return (
        isinstance(cause, sqlite3.OperationalError)
        and code is not None
        and code & 0xFF
        in (
            sqlite3.SQLITE_BUSY,
            sqlite3.SQLITE_LOCKED,
        )
    )


async def patiently(step: Callable[[], Awaitable[T]], patience: float = OPEN_PATIENCE) -> T:
    """Run ``step``, again while SQLite says busy, for up to ``patience`` seconds."""
    deadline = time.monotonic() + patience
    pause = 0.05
    while True:
        try:
            return await step()
        except DBAPIError as exc:
            if not is_busy(exc) or time.monotonic() + pause > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)


def dialect_of(engine: AsyncEngine) -> Dialect:
    return "postgresql" if engine.dialect.name == "postgresql" else "sqlite"


@asynccontextmanager
async def write_transaction(
    engine: AsyncEngine, *, notify: bool = True
) -> AsyncIterator[AsyncConnection]:
    """A transaction that will write: committed at exit, rolled back on an exception.
    ``notify=False``: a write no process caches (jobs, idempotency keys), which need not
    make every replica drop its cached clients, portals and grants."""
    async with engine.connect() as conn:
        await conn.execution_options(**{WRITE_OPTION: True, QUIET_OPTION: not notify})
        async with conn.begin():
            if notify and engine.dialect.name == "postgresql":
                # Delivered at commit to every process's ChangeWatch: their caches drop.
                await conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
            yield conn


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the schema to the newest migration; safe when several processes start at once.

    PostgreSQL serialises on a transaction-scoped advisory lock, SQLite on its write lock
    (BEGIN IMMEDIATE); the loser then finds the schema current and does nothing.
    """
    async with write_transaction(engine) as conn:
        if dialect_of(engine) == "postgresql":
            await conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(:namespace, :id)"),
                {"namespace": MIGRATION_LOCK[0], "id": MIGRATION_LOCK[1]},
            )
        await conn.run_sync(_upgrade_head)


def _upgrade_head(conn: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    command.upgrade(config, "head")


def head_revision() -> str:
    """The newest migration this version of b24gate knows."""
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise RuntimeError("no migrations found")
    return head


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The migration the database is at (None: no schema yet); reads, never migrates."""
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
