"""Webhook-backed portals and the install event's application token, on both backends:
what the store keeps, what it refuses, how it seals them, and migration 0002."""

from __future__ import annotations

import dataclasses
import re

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from b24gate.errors import ConfigError
from b24gate.store import (
    MIGRATIONS_DIR,
    Cipher,
    Grant,
    NewPortal,
    Store,
    make_engine,
    write_transaction,
)

from .conftest import new_portal

HOOK = "https://hook.bitrix24.ru/rest/1/webhookcodeQz71xx/"
APP_TOKEN = "apptoken0123456789abcdefZ9"
GRANT = Grant(
    access_token="access-Hk29-token",
    refresh_token="refresh-Hq77-token",
    access_expires_at=1_780_003_600.0,
    refresh_obtained_at=1_780_000_000.0,
)


def webhook_portal(name: str = "hook", url: str = HOOK) -> NewPortal:
    return new_portal(
        name,
        url=f"https://{name}.bitrix24.ru",
        client_id="",
        client_secret="",
        oauth_url="",
        kind="webhook",
        webhook_url=url,
    )


async def test_a_webhook_portal_is_connected_from_the_start(store: Store) -> None:
    added = await store.add_portal(webhook_portal())
    assert (added.kind, added.state, added.state_reason) == ("webhook", "connected", None)
    assert added.webhook_url == HOOK
    assert (added.client_id, added.client_secret) == ("", "")
    assert "webhookcode" not in repr(added)
    assert await store.portal("hook") == added
    assert await store.grant(added) is None  # no tokens, nothing to refresh
    oauth = await store.add_portal(new_portal("demo"))
    assert (oauth.kind, oauth.webhook_url, oauth.application_token) == ("oauth", None, None)
    assert oauth.state == "not_connected"


async def test_kind_and_webhook_url_must_agree(store: Store) -> None:
    with pytest.raises(ValueError, match="needs its webhook URL"):
        await store.add_portal(new_portal("a", kind="webhook"))
    with pytest.raises(ValueError, match="has no webhook URL"):
        await store.add_portal(new_portal("b", webhook_url=HOOK))
    with pytest.raises(ValueError, match="kind must be one of"):
        await store.add_portal(new_portal("c", kind="ftp"))
    assert await store.portals() == []
    before = await store.add_portal(new_portal("demo"))
    with pytest.raises(ValueError, match="needs its webhook URL"):
        await store.update_portal("demo", kind="webhook")
    assert await store.portal("demo") == before  # rolled back


async def test_update_portal_replaces_the_webhook_and_the_application_token(
    store: Store,
) -> None:
    await store.add_portal(webhook_portal())
    await store.mark_portal("hook", "needs_authorization", "the webhook was refused")
    other = HOOK.replace("webhookcodeQz71xx", "newcodeWq55")
    after = await store.update_portal(
        "hook", webhook_url=other, state="connected", state_reason=None
    )
    assert (after.webhook_url, after.state) == (other, "connected")
    demo = await store.add_portal(new_portal("demo"))
    with_token = await store.update_portal("demo", application_token=APP_TOKEN)
    assert with_token.application_token == APP_TOKEN
    assert APP_TOKEN not in repr(with_token)
    cleared = await store.update_portal("demo", application_token=None)
    assert cleared.application_token is None
    assert cleared.client_secret == demo.client_secret


async def test_the_install_grant_keeps_the_application_token_until_uninstall(
    store: Store,
) -> None:
    portal = await store.add_portal(new_portal())
    await store.save_grant(portal, GRANT, member_id="m-1", application_token=APP_TOKEN)
    connected = await store.portal("demo")
    assert connected is not None
    assert (connected.state, connected.application_token) == ("connected", APP_TOKEN)
    await store.save_grant(portal, dataclasses.replace(GRANT, access_token="access-2"))
    kept = await store.portal("demo")
    assert kept is not None
    assert kept.application_token == APP_TOKEN  # a refresh does not touch it
    await store.mark_portal("demo", "not_connected", "disconnected by the administrator")
    still = await store.portal("demo")
    assert still is not None
    assert still.application_token == APP_TOKEN
    await store.save_grant(portal, GRANT)
    await store.mark_portal(
        "demo", "not_connected", "the application was uninstalled", forget_application_token=True
    )
    gone = await store.portal("demo")
    assert gone is not None
    assert (gone.state, gone.state_reason, gone.application_token) == (
        "not_connected",
        "the application was uninstalled",
        None,
    )
    assert await store.grant(portal) is None


async def test_the_webhook_url_and_application_token_are_sealed_to_their_row(
    store: Store, raw: AsyncEngine
) -> None:
    await store.add_portal(webhook_portal())
    await store.add_portal(webhook_portal("other", HOOK.replace("Qz71", "Ab12")))
    await store.update_portal("hook", application_token=APP_TOKEN)
    async with raw.connect() as conn:
        row = (
            await conn.execute(
                sa.text("SELECT webhook_url, application_token FROM portals WHERE name = 'hook'")
            )
        ).one()
    for blob, plaintext in zip(row, (HOOK, APP_TOKEN), strict=True):
        assert bytes(blob).startswith(b"\x01")
        assert b"webhookcode" not in bytes(blob)
        assert plaintext.encode() not in bytes(blob)
    async with raw.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE portals SET webhook_url ="
                " (SELECT webhook_url FROM portals WHERE name = 'hook') WHERE name = 'other'"
            )
        )
        await conn.execute(
            sa.text("UPDATE portals SET application_token = webhook_url WHERE name = 'hook'")
        )
    message = re.escape("the master key does not match this store")
    for name in ("other", "hook"):
        with pytest.raises(ConfigError, match=message):
            await store.portal(name)


def _upgrade_to(conn: Connection, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    (command.downgrade if down else command.upgrade)(config, revision)


async def test_migration_0002_keeps_existing_portals_as_oauth_and_reverts(
    database_url: str, cipher: Cipher
) -> None:
    engine = make_engine(database_url)
    try:
        async with write_transaction(engine) as conn:
            await conn.run_sync(_upgrade_to, "0001")
            sealed = cipher.encrypt(
                "old-secret", table="portals", row="old", column="client_secret"
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO portals (name, url, domain, client_id, client_secret, oauth_url,"
                    " created_at, updated_at) VALUES ('old', 'https://old.bitrix24.ru',"
                    " 'old.bitrix24.ru', 'local.old', :secret, 'https://oauth.bitrix.info', 1, 1)"
                ),
                {"secret": sealed},
            )
        async with await Store.open(database_url, cipher) as store:
            old = await store.portal("old")
            assert old is not None
            assert (old.kind, old.webhook_url, old.application_token) == ("oauth", None, None)
            assert old.client_secret == "old-secret"
        async with write_transaction(engine) as conn:
            await conn.run_sync(_upgrade_to, "0001", down=True)
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("portals")}
            )
        assert {"kind", "webhook_url", "application_token"}.isdisjoint(columns)
        assert "client_secret" in columns
    finally:
        await engine.dispose()
