"""Database URLs, SQLite's connection settings, and migrations."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from b24gate.errors import ConfigError
from b24gate.store import Cipher, Store, database_url, make_engine, metadata, upgrade

from .conftest import new_portal


def test_database_url_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    assert database_url(tmp_path, None) == f"sqlite:///{tmp_path}/b24gate.db"
    assert database_url(tmp_path, "postgresql://db/x") == "postgresql://db/x"


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///var/b24gate.db", "sqlite+aiosqlite"),
        ("postgresql://u:p@db:5432/x", "postgresql+asyncpg"),
        ("postgres://u:p@db/x", "postgresql+asyncpg"),
    ],
)
async def test_make_engine_picks_the_async_driver(url: str, driver: str, tmp_path: Path) -> None:
    engine = make_engine(url.replace("var/", f"{tmp_path}/"))
    assert engine.url.drivername == driver
    await engine.dispose()


def test_an_unsupported_url_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigError, match="unsupported database URL scheme 'mysql'") as info:
        make_engine("mysql://root:hunter2@db/x")
    assert "hunter2" not in str(info.value)


async def test_sqlite_connections_get_the_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/new/dir/b24gate.db")
    async with engine.connect() as conn:
        settings = {
            pragma: await conn.scalar(sa.text(f"PRAGMA {pragma}"))
            for pragma in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
        }
    await engine.dispose()
    assert settings == {
        "journal_mode": "wal",
        "busy_timeout": 5000,
        "foreign_keys": 1,
        "synchronous": 1,
    }


def _schema_differences(conn: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def test_migrations_create_exactly_the_schema_and_are_idempotent(
    database_url: str, raw_engine: AsyncEngine
) -> None:
    await upgrade(raw_engine)
    await upgrade(raw_engine)
    async with raw_engine.connect() as conn:
        assert await conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == "0007"
        assert await conn.run_sync(_schema_differences) == []


async def test_a_store_opens_again_on_its_own_database(database_url: str, cipher: Cipher) -> None:
    async with await Store.open(database_url, cipher) as first:
        await first.add_portal(new_portal())
    async with await Store.open(database_url, cipher) as second:
        assert [p.name for p in await second.portals()] == ["demo"]


async def test_concurrent_first_starts_migrate_once(database_url: str, cipher: Cipher) -> None:
    stores = await asyncio.gather(*(Store.open(database_url, cipher) for _ in range(4)))
    await stores[0].add_portal(new_portal())
    for store in stores:
        assert (await store.portal("demo")) is not None
        await store.close()


async def test_a_start_waits_out_another_process_holding_the_database(
    tmp_path: Path, cipher: Cipher
) -> None:
    # Another process (here a plain connection) writes for longer than SQLite's busy timeout
    # (5 s), as a slow first migration or a WAL clean-up on a loaded machine can: the start
    # waits for it instead of failing with "database is locked".
    path = tmp_path / "b24gate.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    asyncio.get_running_loop().call_later(6.0, holder.commit)
    try:
        store = await asyncio.wait_for(Store.open(f"sqlite:///{path}", cipher), timeout=30)
        await store.add_portal(new_portal())
        assert (await store.portal("demo")) is not None
        await store.close()
    finally:
        holder.close()


@pytest.fixture
async def raw_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    yield engine
    await engine.dispose()
