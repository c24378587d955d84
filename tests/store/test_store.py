"""The store's methods on both backends, and the encryption of what they keep."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from b24gate.errors import ConfigError, UnknownPortal
from b24gate.store import Cipher, Grant, Portal, Store, StoreConflict, make_engine

from .conftest import new_portal

GRANT = Grant(
    access_token="access-Xk29-token",
    refresh_token="refresh-Pq77-token",
    access_expires_at=1_780_003_600.0,
    refresh_obtained_at=1_780_000_000.0,
    user_id=1,
    server_endpoint="https://oauth.bitrix.info/rest/",
)

# -- portals ---------------------------------------------------------------------------


async def test_portal_round_trip(store: Store) -> None:
    added = await store.add_portal(new_portal("demo", domain="Demo.Bitrix24.ru"))
    assert added.name == "demo"
    assert added.domain == "demo.bitrix24.ru"
    assert added.client_secret == "secret-of-demo-Zq81"
    assert (added.scope, added.token_method, added.state) == (
        "crm,catalog",
        "POST",
        "not_connected",
    )
    assert (added.member_id, added.client_endpoint, added.granted_scope) == (None, None, None)
    assert added.created_at == added.updated_at > 0
    assert "secret-of-demo" not in repr(added)
    assert await store.portal("demo") == added
    assert await store.portal_by_domain("DEMO.bitrix24.ru") == added
    assert await store.portal("nope") is None
    assert await store.portal_by_domain("evil.example") is None
    await store.add_portal(new_portal("alpha"))
    assert [p.name for p in await store.portals()] == ["alpha", "demo"]


async def test_a_taken_name_or_domain_is_a_conflict(store: Store) -> None:
    await store.add_portal(new_portal("demo"))
    with pytest.raises(StoreConflict, match="a portal named 'demo' already exists"):
        await store.add_portal(new_portal("demo", domain="other.bitrix24.ru"))
    with pytest.raises(StoreConflict, match="portal 'demo' already has the domain"):
        await store.add_portal(new_portal("other", domain="DEMO.bitrix24.ru"))
    assert [p.name for p in await store.portals()] == ["demo"]


async def test_values_too_long_or_invalid_are_refused_on_both_backends(store: Store) -> None:
    with pytest.raises(ValueError, match="name is longer than 64"):
        await store.add_portal(new_portal("x" * 65))
    with pytest.raises(ValueError, match="token_method"):
        await store.add_portal(new_portal(token_method="PUT"))
    assert await store.portals() == []


async def test_update_portal(store: Store) -> None:
    before = await store.add_portal(new_portal("demo"))
    await store.add_portal(new_portal("taken"))
    after = await store.update_portal(
        "demo",
        domain="New.bitrix24.ru",
        url="https://new.bitrix24.ru",
        client_secret="rotated-secret",
        token_method="GET",
        member_id="m1",
        state="needs_authorization",
        state_reason="refresh token expired",
    )
    assert after.domain == "new.bitrix24.ru"
    assert after.client_secret == "rotated-secret"
    assert (after.token_method, after.member_id, after.state) == (
        "GET",
        "m1",
        "needs_authorization",
    )
    assert after.state_reason == "refresh token expired"
    assert after.updated_at >= before.updated_at
    assert await store.portal("demo") == after
    cleared = await store.update_portal("demo", member_id=None)
    assert cleared.member_id is None
    with pytest.raises(UnknownPortal):
        await store.update_portal("nope", scope="crm")
    with pytest.raises(StoreConflict, match="domain"):
        await store.update_portal("demo", domain="taken.bitrix24.ru")
    with pytest.raises(ValueError, match="state must be one of"):
        await store.update_portal("demo", state="broken")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot be empty"):
        await store.update_portal("demo", url=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot change name"):
        await store.update_portal("demo", name="x")  # type: ignore[call-arg]
    assert await store.portal("demo") == cleared


# -- grants ----------------------------------------------------------------------------


async def test_save_grant_stores_tokens_connects_the_portal_and_counts_versions(
    store: Store,
) -> None:
    portal = await store.add_portal(new_portal())
    assert await store.grant(portal) is None
    saved = await store.save_grant(
        portal,
        GRANT,
        member_id="m-1",
        client_endpoint="https://demo.bitrix24.ru/rest/",
        granted_scope="crm",
    )
    assert saved == dataclasses.replace(GRANT, version=1)
    assert await store.grant(portal) == saved
    assert await store.grant(portal.id) == saved
    connected = await store.portal("demo")
    assert connected is not None
    assert (connected.state, connected.state_reason) == ("connected", None)
    assert connected.member_id == "m-1"
    assert connected.client_endpoint == "https://demo.bitrix24.ru/rest/"
    assert connected.granted_scope == "crm"

    await store.mark_portal("demo", "needs_authorization", "the refresh failed")
    newer = dataclasses.replace(GRANT, access_token="access-2", refresh_token="refresh-2")
    again = await store.save_grant(portal, newer)
    assert again.version == 2
    assert await store.grant(portal) == again
    reconnected = await store.portal("demo")
    assert reconnected is not None
    assert (reconnected.state, reconnected.state_reason) == ("connected", None)
    assert reconnected.member_id == "m-1"  # fields not given are kept
    assert "access-2" not in repr(again)


async def test_save_grant_for_a_deleted_portal_is_refused(store: Store) -> None:
    ghost = Portal(**{**dataclasses.asdict(await store.add_portal(new_portal())), "id": 999})
    with pytest.raises(UnknownPortal):
        await store.save_grant(ghost, GRANT)


async def test_mark_portal(store: Store) -> None:
    portal = await store.add_portal(new_portal())
    await store.save_grant(portal, GRANT)
    await store.mark_portal("demo", "needs_authorization", "invalid_grant")
    marked = await store.portal("demo")
    assert marked is not None
    assert (marked.state, marked.state_reason) == ("needs_authorization", "invalid_grant")
    assert await store.grant(portal) is not None  # kept: a refresh may still be retried
    await store.mark_portal("demo", "not_connected", "disconnected by the administrator")
    assert await store.grant(portal) is None
    with pytest.raises(UnknownPortal):
        await store.mark_portal("nope", "not_connected", None)
    with pytest.raises(ValueError, match="state"):
        await store.mark_portal("demo", "gone", None)  # type: ignore[arg-type]


# -- clients ---------------------------------------------------------------------------


async def test_client_round_trip_and_revocation(store: Store) -> None:
    await store.add_portal(new_portal("demo"))
    await store.add_portal(new_portal("alpha"))
    added = await store.add_client(
        "erp",
        "kid-1",
        "hash-of-the-key",
        ["demo", "alpha", "demo"],
        ["crm.*", "catalog.*"],
        ips=["10.0.0.0/8"],
        allow_url_key=True,
    )
    assert added.portals == ("alpha", "demo")
    assert (added.methods, added.ips, added.allow_url_key) == (
        ("crm.*", "catalog.*"),
        ("10.0.0.0/8",),
        True,
    )
    assert added.revoked_at is None
    assert "hash-of-the-key" not in repr(added)
    assert await store.client_by_key_id("kid-1") == added
    assert await store.client_by_key_id("kid-2") is None

    plain = await store.add_client("shop", "kid-2", "h2", ["demo"])
    assert (plain.methods, plain.ips, plain.allow_url_key) == ((), (), False)
    assert await store.clients() == [added, plain]

    assert await store.revoke_client("erp") is True
    assert await store.revoke_client("erp") is False
    assert await store.revoke_client("nobody") is False
    assert await store.client_by_key_id("kid-1") is None
    erp, shop = await store.clients()
    assert erp.revoked_at is not None
    assert shop == plain


async def test_client_conflicts(store: Store) -> None:
    await store.add_portal(new_portal("demo"))
    await store.add_client("erp", "kid-1", "h", ["demo"])
    with pytest.raises(StoreConflict, match="a client named 'erp' already exists"):
        await store.add_client("erp", "kid-9", "h", ["demo"])
    with pytest.raises(StoreConflict, match="key id"):
        await store.add_client("other", "kid-1", "h", ["demo"])
    with pytest.raises(StoreConflict, match="no portal named 'ghost', 'zombie'"):
        await store.add_client("other", "kid-2", "h", ["demo", "zombie", "ghost"])
    with pytest.raises(ValueError, match="at least one portal"):
        await store.add_client("other", "kid-2", "h", [])
    with pytest.raises(ValueError, match="without commas"):
        await store.add_client("other", "kid-2", "h", ["demo"], methods=["crm.*,user.*"])
    assert [c.name for c in await store.clients()] == ["erp"]


# -- tickets and OAuth states ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["ticket", "state"])
async def test_one_time_tokens_are_spent_once(store: Store, kind: str) -> None:
    add, use = (
        (store.add_ticket, store.use_ticket)
        if kind == "ticket"
        else (store.add_state, store.use_state)
    )
    portal = await store.add_portal(new_portal())
    await add("h-once", portal.id, 2000.0)
    await add("h-force", portal.id, 2000.0, True)
    await add("h-expired", portal.id, 1000.0)
    assert await use("h-once", 1500.0) == (portal.id, False)
    assert await use("h-once", 1500.0) is None
    assert await use("h-force", 1999.0) == (portal.id, True)
    assert await use("h-expired", 1000.0) is None
    assert await use("h-unknown", 0.0) is None
    with pytest.raises(StoreConflict, match="already stored"):
        await add("h-once", portal.id, 3000.0)
    with pytest.raises(StoreConflict, match="no portal with id 999"):
        await add("h-new", 999, 3000.0)


async def test_tickets_and_states_are_separate(store: Store) -> None:
    portal = await store.add_portal(new_portal())
    await store.add_ticket("h", portal.id, 2000.0)
    assert await store.use_state("h", 1000.0) is None
    assert await store.use_ticket("h", 1000.0) == (portal.id, False)


async def test_exactly_one_of_concurrent_uses_wins(store: Store) -> None:
    portal = await store.add_portal(new_portal())
    await store.add_ticket("h", portal.id, 2000.0)
    results = await asyncio.gather(*(store.use_ticket("h", 1000.0) for _ in range(10)))
    assert sorted(results, key=lambda r: r is None) == [(portal.id, False)] + [None] * 9


# -- encryption at rest ----------------------------------------------------------------

SECRETS = ("secret-of-demo-Zq81", GRANT.access_token, GRANT.refresh_token)


async def test_secrets_are_encrypted_at_rest(
    store: Store, raw: AsyncEngine, database_url: str
) -> None:
    portal = await store.add_portal(new_portal())
    await store.save_grant(portal, GRANT)
    async with raw.connect() as conn:
        blobs = list(
            (
                await conn.execute(
                    sa.text(
                        "SELECT client_secret, access_token, refresh_token FROM portals"
                        " JOIN grants ON grants.portal_id = portals.id"
                    )
                )
            ).one()
        )
    for blob, plaintext in zip(blobs, SECRETS, strict=True):
        assert bytes(blob).startswith(b"\x01")
        assert plaintext.encode() not in bytes(blob)
    if store.dialect == "sqlite":
        await store.close()
        db_file = Path(database_url.removeprefix("sqlite:///"))
        files = list(db_file.parent.glob(db_file.name + "*"))
        on_disk = b"".join(f.read_bytes() for f in files)
        assert b"demo.bitrix24.ru" in on_disk  # the search would find plaintext
        for plaintext in SECRETS:
            assert plaintext.encode() not in on_disk


async def test_same_secret_is_stored_differently(store: Store, raw: AsyncEngine) -> None:
    await store.add_portal(new_portal("a", client_secret="same"))
    await store.add_portal(new_portal("b", client_secret="same"))
    async with raw.connect() as conn:
        blobs = (await conn.scalars(sa.text("SELECT client_secret FROM portals"))).all()
    assert len(set(map(bytes, blobs))) == 2


async def test_a_ciphertext_copied_to_another_row_fails(store: Store, raw: AsyncEngine) -> None:
    a = await store.add_portal(new_portal("a"))
    b = await store.add_portal(new_portal("b"))
    await store.save_grant(a, GRANT)
    await store.save_grant(b, dataclasses.replace(GRANT, access_token="b-access"))
    async with raw.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE portals SET client_secret ="
                " (SELECT client_secret FROM portals WHERE name = 'a') WHERE name = 'b'"
            )
        )
        await conn.execute(
            sa.text(
                "UPDATE grants SET access_token ="
                " (SELECT access_token FROM grants WHERE portal_id = :a) WHERE portal_id = :b"
            ),
            {"a": a.id, "b": b.id},
        )
    message = re.escape("the master key does not match this store")
    with pytest.raises(ConfigError, match=message):
        await store.portal("b")
    with pytest.raises(ConfigError, match=message):
        await store.grant(b.id)
    intact = await store.portal("a")
    assert intact is not None
    assert intact.client_secret == a.client_secret
    assert (await store.grant(a.id)) == dataclasses.replace(GRANT, version=1)


async def test_another_master_key_is_refused_at_open(database_url: str, store: Store) -> None:
    with pytest.raises(ConfigError, match=r"^the master key does not match this store$"):
        await Store.open(database_url, Cipher(os.urandom(32)))


async def test_a_rotated_key_still_opens_the_store(database_url: str, cipher: Cipher) -> None:
    old = os.urandom(32)
    async with await Store.open(database_url, Cipher(old)) as store:
        await store.add_portal(new_portal())
    async with await Store.open(database_url, Cipher({"new": os.urandom(32), "old": old})) as store:
        portal = await store.portal("demo")
    assert portal is not None
    assert portal.client_secret == "secret-of-demo-Zq81"


# -- health ----------------------------------------------------------------------------


async def test_ping(store: Store, cipher: Cipher) -> None:
    await store.ping()
    unreachable = Store(make_engine("postgresql://postgres@127.0.0.1:1/none"), cipher)
    with pytest.raises(OSError, match="Connect call failed"):
        await unreachable.ping()
    await unreachable.close()


async def test_an_unreachable_database_is_a_config_error(cipher: Cipher) -> None:
    with pytest.raises(ConfigError, match="cannot open the store at postgresql://u:\\*\\*\\*@"):
        await Store.open("postgresql://u:hunter2@127.0.0.1:1/none", cipher)
