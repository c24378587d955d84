"""Fixtures: a fresh database on each backend (SQLite in a temporary file, PostgreSQL),
a cipher with a random key, and a store opened on them."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from b24gate.store import Cipher, NewPortal, Store, make_engine

PG_URL = os.environ.get("B24GATE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")

# Whether PostgreSQL answered, asked once per session; None until asked.
_pg_reachable: list[str | None] = []


async def _reset_postgres(url: str) -> str | None:
    """Drop every table of the test database; the reason it failed, or None."""
    engine = make_engine(url)
    try:
        async with asyncio.timeout(10), engine.begin() as conn:
            names = (
                await conn.scalars(
                    sa.text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
                )
            ).all()
            if names:
                quote = conn.dialect.identifier_preparer.quote
                await conn.execute(
                    sa.text(f"DROP TABLE IF EXISTS {', '.join(map(quote, names))} CASCADE")
                )
    except (OSError, SQLAlchemyError) as exc:  # TimeoutError is an OSError
        return f"{type(exc).__name__}: {exc}"
    finally:
        await engine.dispose()
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A clean database: a new SQLite file, or the PostgreSQL test database emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/b24gate.db"
    if _pg_reachable and _pg_reachable[0] is not None:
        failure: str | None = _pg_reachable[0]
    else:
        failure = await _reset_postgres(PG_URL)
        if not _pg_reachable:
            _pg_reachable.append(failure)
    if failure is not None:
        shown = make_url(PG_URL).render_as_string(hide_password=True)
        message = f"PostgreSQL at {shown} is unreachable ({failure})"
        if "CI" in os.environ:
            pytest.fail(message)
        pytest.skip(message)
    return PG_URL


@pytest.fixture
def cipher() -> Cipher:
    return Cipher(os.urandom(32))


@pytest.fixture
async def store(database_url: str, cipher: Cipher) -> AsyncIterator[Store]:
    async with await Store.open(database_url, cipher) as store:
        yield store


@pytest.fixture
async def raw(database_url: str, store: Store) -> AsyncIterator[AsyncEngine]:
    """A plain engine on the store's database, for looking under the hood."""
    engine = make_engine(database_url)
    yield engine
    await engine.dispose()


def new_portal(name: str = "demo", **overrides: Any) -> NewPortal:
    portal = NewPortal(
        name=name,
        url=f"https://{name}.bitrix24.ru",
        domain=f"{name}.bitrix24.ru",
        client_id=f"local.{name}",
        client_secret=f"secret-of-{name}-Zq81",
        oauth_url="https://oauth.bitrix.info",
        scope="crm,catalog",
    )
    return dataclasses.replace(portal, **overrides)
