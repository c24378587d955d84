"""Master-key rotation on SQLite and PostgreSQL: every sealed value of every table opens
with the new key afterwards and with the old one no more, and a rotation that fails half
way leaves the store as it was."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from b24gate.errors import ConfigError
from b24gate.store import (
    SEALED,
    Cipher,
    Grant,
    NewEvent,
    NewJob,
    NewPortal,
    Store,
    StoredAnswer,
    key_id,
    metadata,
    store_key_id,
)

from .conftest import new_portal

JOB = "j" * 32
IDEMPOTENCY_KEY = "k" * 64
EVENTS = 23  # over several chunks of CHUNK
CHUNK = 5
HOOK = "https://hook.bitrix24.ru/rest/1/webhookcodeQz71xx/"


@dataclass(frozen=True)
class Seen:
    """Every secret of a filled store as a user of the gateway would read it."""

    portals: list[Any]
    grant: Grant | None
    answer: StoredAnswer | None
    results: list[Any]
    events: list[Any]
    handler_secret: str
    pushes: list[Any]


async def fill(store: Store) -> None:
    """A value in every sealed column: a portal of each kind, a grant, an Idempotency-Key
    answer, a job with a result, events, a handler secret and a push."""
    now = time.time()
    portal = await store.add_portal(new_portal())
    await store.add_portal(
        NewPortal(
            name="hook",
            url="https://hook.bitrix24.ru",
            domain="hook.bitrix24.ru",
            kind="webhook",
            webhook_url=HOOK,
        )
    )
    grant = Grant("access-Zq81", "refresh-Zq81", now + 3600, now)
    await store.save_grant(portal, grant, application_token="app-token-Zq81")
    client = await store.add_client("erp", "kid-1", "h", ["demo"])
    ids = client.id, portal.id
    await store.idempotency.begin(
        client.id, IDEMPOTENCY_KEY, "f", holder="me", now=now, lease=30, ttl=3600
    )
    answer = StoredAnswer(200, "application/json", b'{"result":"secret-answer"}')
    await store.idempotency.finish(
        client.id, IDEMPOTENCY_KEY, answer, holder="me", now=now, ttl=3600
    )
    commands = [("crm.deal.add", {"fields": {"TITLE": f"secret-{i}"}}) for i in range(3)]
    await store.jobs.create(NewJob(JOB, *ids, commands, None, "10.0.0.1"), now=now)
    await store.jobs.claim(JOB, holder="me", now=now, lease=30, limit=1)
    await store.jobs.mark_sent(JOB, [0], holder="me", now=now)
    await store.jobs.record(JOB, [(0, "ok", {"result": 42})], holder="me", now=now, retention=3600)
    items = [NewEvent("ONCRMDEALADD", {"FIELDS": {"ID": i}}, None, "online") for i in range(EVENTS)]
    await store.events.append(portal.id, items, now)
    await store.events.handler_secret(portal.id, "handler-secret-Zq81")
    await store.events.set_push(*ids, "https://erp.example/push", "push-secret-Zq81", now)


async def seen(store: Store) -> Seen:
    portals = await store.portals()
    demo = await store.portal("demo")
    assert demo is not None
    client = await store.client_by_name("erp")
    assert client is not None
    begun = await store.idempotency.begin(
        client.id, IDEMPOTENCY_KEY, "f", holder="me", now=time.time(), lease=30, ttl=3600
    )
    assert begun.kind == "replay"
    return Seen(
        portals=portals,
        grant=await store.grant(demo),
        answer=begun.answer,
        results=await store.jobs.results(JOB, after=-1, limit=10),
        events=await store.events.read(demo.id, 0, 100),
        handler_secret=await store.events.handler_secret(demo.id, "another"),
        pushes=await store.events.pushes(),
    )


async def blobs(raw: AsyncEngine) -> dict[tuple[str, str], list[bytes]]:
    """Every value of every binary column of every table in the database, found from the
    database's own schema (not from the store's list of sealed columns)."""

    def columns(conn: sa.Connection) -> list[tuple[str, str]]:
        inspector = sa.inspect(conn)
        return [
            (table, column["name"])
            for table in inspector.get_table_names()
            for column in inspector.get_columns(table)
            if isinstance(column["type"], sa.LargeBinary)
        ]

    found: dict[tuple[str, str], list[bytes]] = {}
    async with raw.connect() as conn:
        for table, column in await conn.run_sync(columns):
            query = sa.select(sa.column(column, sa.LargeBinary)).select_from(sa.table(table))
            values = (await conn.scalars(query.order_by(sa.text("1")))).all()
            found[table, column] = [bytes(value) for value in values if value is not None]
    return found


class Filled(NamedTuple):
    """A filled store as a user reads it, and its binary values as they lie in the database."""

    seen: Seen
    blobs: dict[tuple[str, str], list[bytes]]


@pytest.fixture
async def filled(store: Store, raw: AsyncEngine) -> Filled:
    await fill(store)
    return Filled(await seen(store), await blobs(raw))


class FailingCipher(Cipher):
    """A new key whose sealing breaks after ``after`` values: a crash half way."""

    def __init__(self, key: bytes, after: int) -> None:
        super().__init__(key)
        self.left = after

    def encrypt(self, plaintext: str, *, table: str, row: str, column: str) -> bytes:
        if self.left == 0:
            raise RuntimeError("the disk is full")
        self.left -= 1
        return super().encrypt(plaintext, table=table, row=row, column=column)


def test_every_binary_column_of_the_schema_is_sealed_and_rotated() -> None:
    # A binary column holds a sealed secret in this store; one missing from SEALED would
    # keep the old key after a rotation, and the store would not open with the new one.
    binary = {
        (table.name, column.name)
        for table in metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, sa.LargeBinary)
    }
    registered = {(sealed.table.name, column) for sealed in SEALED for column in sealed.columns}
    assert binary == registered


async def test_after_rotation_every_secret_opens_with_the_new_key_only(
    store: Store, database_url: str, raw: AsyncEngine, cipher: Cipher, filled: Filled
) -> None:
    before, old_blobs = filled
    new_key = os.urandom(32)

    rotation = await store.rotate_key(Cipher(new_key), chunk_rows=CHUNK)

    assert (rotation.old_key_id, rotation.new_key_id) == (cipher.current_key_id, key_id(new_key))
    after_blobs = await blobs(raw)
    # Every binary column of the database was filled, and each of its values is now sealed
    # with the new key: a sealed column the rotation forgot would fail here.
    assert all(after_blobs.values()), [name for name, values in after_blobs.items() if not values]
    for (table, column), values in after_blobs.items():
        assert {bytes(v)[1:9].hex() for v in values} == {key_id(new_key)}, (table, column)
        assert len(values) == len(old_blobs[table, column])
    assert rotation.values == sum(map(len, after_blobs.values()))
    assert await store_key_id(database_url) == key_id(new_key)

    async with await Store.open(database_url, Cipher(new_key)) as rotated:
        assert await seen(rotated) == before
        assert len(before.events) == EVENTS
        assert before.grant is not None
        assert before.grant.access_token == "access-Zq81"
    with pytest.raises(ConfigError, match=r"^the master key does not match this store$"):
        await Store.open(database_url, cipher)


async def test_a_rotation_that_fails_half_way_changes_nothing(
    store: Store, database_url: str, raw: AsyncEngine, cipher: Cipher, filled: Filled
) -> None:
    before, old_blobs = filled
    new_key = os.urandom(32)

    with pytest.raises(RuntimeError, match="the disk is full"):
        # Past the first chunks of events: some rows were written back already.
        await store.rotate_key(FailingCipher(new_key, after=15), chunk_rows=CHUNK)

    assert await blobs(raw) == old_blobs
    async with await Store.open(database_url, cipher) as reopened:
        assert await seen(reopened) == before
    with pytest.raises(ConfigError):
        await Store.open(database_url, Cipher(new_key))


async def test_the_current_key_is_refused_as_the_new_one(store: Store, cipher: Cipher) -> None:
    await fill(store)
    with pytest.raises(ConfigError, match="the new master key is the current one"):
        await store.rotate_key(cipher)


async def test_a_value_the_current_key_cannot_open_stops_the_rotation(
    store: Store, database_url: str, raw: AsyncEngine, cipher: Cipher
) -> None:
    await fill(store)
    foreign = Cipher(os.urandom(32)).encrypt("x", table="events", row="1:1", column="data")
    async with raw.begin() as conn:
        await conn.execute(sa.text("UPDATE events SET data = :d WHERE seq = 1"), {"d": foreign})
    old_blobs = await blobs(raw)

    with pytest.raises(ConfigError, match=r"events\.data does not open.*nothing was changed"):
        await store.rotate_key(Cipher(os.urandom(32)))

    assert await blobs(raw) == old_blobs
    assert await store_key_id(database_url) == cipher.current_key_id


async def test_a_process_still_on_the_old_key_says_so_in_its_log(
    store: Store, database_url: str, cipher: Cipher, caplog: pytest.LogCaptureFixture
) -> None:
    # A `serve` left running through a rotation: its next read fails, and the log says why.
    await fill(store)
    demo = await store.portal("demo")
    assert demo is not None
    new_key = os.urandom(32)
    async with await Store.open(database_url, cipher) as rotating:
        await rotating.rotate_key(Cipher(new_key))

    with caplog.at_level(logging.ERROR, logger="b24gate.store"), pytest.raises(ConfigError):
        await store.grant(demo)
    assert f"sealed with master key {key_id(new_key)}" in caplog.text
    assert "restart with the new key" in caplog.text


class HeldCipher(Cipher):
    """A new key whose sealing stops half way until ``go`` is set: a rotation in progress,
    its transaction open (run in a thread of its own, whose event loop it blocks)."""

    def __init__(self, key: bytes, after: int) -> None:
        super().__init__(key)
        self.left = after
        self.holding = threading.Event()
        self.go = threading.Event()

    def encrypt(self, plaintext: str, *, table: str, row: str, column: str) -> bytes:
        self.left -= 1
        if self.left == 0:
            self.holding.set()
            assert self.go.wait(30), "never released"
        return super().encrypt(plaintext, table=table, row=row, column=column)


async def test_a_process_starting_during_a_rotation_is_refused_after_it(
    store: Store, database_url: str, cipher: Cipher
) -> None:
    # A replica that starts while a rotation runs must not pass its key check on the check
    # being replaced: it would then write with a key the store no longer uses.
    await fill(store)
    new = HeldCipher(os.urandom(32), after=10)

    def rotate() -> None:
        async def run() -> None:
            async with await Store.open(database_url, cipher) as rotating:
                await rotating.rotate_key(new)

        asyncio.run(run())

    rotation = asyncio.create_task(asyncio.to_thread(rotate))
    starting: asyncio.Task[Store] | None = None
    try:
        assert await asyncio.to_thread(new.holding.wait, 30)
        starting = asyncio.create_task(Store.open(database_url, cipher))
        await asyncio.sleep(0.5)
        assert not starting.done()  # it waits for the rotation
    finally:
        new.go.set()
        await rotation
        if starting is not None and starting.done() and not starting.exception():
            await starting.result().close()
    with pytest.raises(ConfigError, match=r"^the master key does not match this store$"):
        await starting
