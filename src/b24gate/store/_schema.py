"""The tables of the store: one MetaData that the migrations (0001-0007) create exactly.

Secret columns (``client_secret``, ``webhook_url``, ``application_token``, ``access_token``,
``refresh_token``, ``meta.value``, and what callers send and get: ``idempotency_keys.response``,
``job_commands.params`` and ``job_commands.result``, ``events.data`` and
``event_heads.handler_secret``, ``event_pushes.secret``) hold blobs sealed by
:class:`~b24gate.store._crypto.Cipher`, each listed in :data:`SEALED`; client keys and
Idempotency-Keys are only hashed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

# Named constraints, so that later migrations (SQLite's batch mode included) can find them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def _portal_fk() -> sa.ForeignKey:
    return sa.ForeignKey("portals.id", ondelete="CASCADE")


def _client_key() -> sa.Column[int]:
    """``client_id`` as the first part of a primary key: the client's rows go with it."""
    return sa.Column(
        "client_id",
        sa.Integer,
        sa.ForeignKey("clients.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    )


portals = sa.Table(
    "portals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("url", sa.String(512), nullable=False),
    sa.Column("domain", sa.String(255), nullable=False, unique=True),
    sa.Column("client_id", sa.String(255), nullable=False),
    sa.Column("client_secret", sa.LargeBinary, nullable=False),
    sa.Column("oauth_url", sa.String(512), nullable=False),
    sa.Column("scope", sa.String(512), nullable=False, server_default=""),
    sa.Column("token_method", sa.String(4), nullable=False, server_default="POST"),
    sa.Column("member_id", sa.String(64), nullable=True),
    sa.Column("client_endpoint", sa.String(512), nullable=True),
    sa.Column("granted_scope", sa.String(512), nullable=True),
    sa.Column("state", sa.String(32), nullable=False, server_default="not_connected"),
    sa.Column("state_reason", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # Migration 0002. "oauth": a local or marketplace app's grant; "webhook": an incoming
    # webhook, whose URL (secret in its path) is sealed in webhook_url, and whose client_id
    # is "" and client_secret a sealed "". application_token: the app's token from its
    # install event, sealed, to check later events (ONAPPUNINSTALL) against.
    sa.Column("kind", sa.String(16), nullable=False, server_default="oauth"),
    sa.Column("webhook_url", sa.LargeBinary, nullable=True),
    sa.Column("application_token", sa.LargeBinary, nullable=True),
    # The portal's request budget as Bitrix24 drains it (migration 0003); rate 0 = no limit.
    sa.Column("rate", sa.Float, nullable=False, server_default="2"),
    sa.Column("burst", sa.Integer, nullable=False, server_default="50"),
    # Migration 0004: the administrator lets the app's install event connect this portal
    # while it has no member_id yet (never connected); off, only `portal authorize` does.
    sa.Column("connect_by_install", sa.Boolean, nullable=False, server_default=sa.false()),
    # Migration 0006: with offline event subscriptions, the channel (auth_connector) that
    # the gateway's own writes carry, so they do not come back through the offline queue.
    sa.Column("auth_connector", sa.String(64), nullable=True),
    # AUTOINCREMENT: an id is never reused, so nothing keyed by a deleted portal's id
    # (an advisory lock, a log line) can be mistaken for a new portal.
    sqlite_autoincrement=True,
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column("portal_id", sa.Integer, _portal_fk(), primary_key=True, autoincrement=False),
    sa.Column("access_token", sa.LargeBinary, nullable=False),
    sa.Column("refresh_token", sa.LargeBinary, nullable=False),
    sa.Column("access_expires_at", sa.Float, nullable=False),
    sa.Column("refresh_obtained_at", sa.Float, nullable=False),
    sa.Column("user_id", sa.Integer, nullable=True),
    sa.Column("server_endpoint", sa.String(512), nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
)

clients = sa.Table(
    "clients",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("key_id", sa.String(32), nullable=False, unique=True),
    sa.Column("key_hash", sa.String(128), nullable=False),
    sa.Column("methods", sa.Text, nullable=False, server_default=""),
    sa.Column("ips", sa.Text, nullable=False, server_default=""),
    sa.Column("allow_url_key", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    # Migration 0006: the event names (patterns) the key may read; empty: none.
    sa.Column("events", sa.Text, nullable=False, server_default=""),
    sqlite_autoincrement=True,
)

client_portals = sa.Table(
    "client_portals",
    metadata,
    _client_key(),
    sa.Column("portal_id", sa.Integer, _portal_fk(), primary_key=True, autoincrement=False),
)


def _one_time_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("portal_id", sa.Integer, _portal_fk(), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
        sa.Column("force", sa.Boolean, nullable=False, server_default=sa.false()),
    )


tickets = _one_time_table("tickets")
oauth_states = _one_time_table("oauth_states")

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
)

# Migration 0005: Idempotency-Key answers and durable jobs. Nothing here is cached, so their
# writes are quiet (store/_engine.py write_transaction(notify=False)).

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    _client_key(),
    sa.Column("key_hash", sa.String(64), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # running | done
    sa.Column("holder", sa.String(128), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
    # Sealed JSON {"status", "content_type", "body"}: the answer replayed.
    sa.Column("response", sa.LargeBinary, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column(
        "client_id", sa.Integer, sa.ForeignKey("clients.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("portal_id", sa.Integer, _portal_fk(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # queued | running | done | cancelled
    sa.Column("external_id", sa.String(64), nullable=True),
    # The address the job was submitted from: its commands run as from there (a key's CIDRs).
    sa.Column("address", sa.String(64), nullable=True),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("expires_at", sa.Float, nullable=True, index=True),
)

job_commands = sa.Table(
    "job_commands",
    metadata,
    sa.Column(
        "job_id",
        sa.String(32),
        sa.ForeignKey("jobs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("method", sa.String(255), nullable=False),
    sa.Column("params", sa.LargeBinary, nullable=False),  # sealed JSON object
    # pending | sent | ok | error | unknown | cancelled
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("holder", sa.String(128), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("sent_at", sa.Float, nullable=True),
    sa.Column("result", sa.LargeBinary, nullable=True),  # sealed JSON
    sa.Column("done_at", sa.Float, nullable=True),
    sa.Index("ix_job_commands_job_state_seq", "job_id", "state", "seq"),
    sa.Index("ix_job_commands_state_lease", "state", "lease_until"),
)

# Migration 0006: Bitrix24's events (docs/events.md). Quiet writes, as for jobs.

event_subscriptions = sa.Table(
    "event_subscriptions",
    metadata,
    sa.Column("portal_id", sa.Integer, _portal_fk(), primary_key=True, autoincrement=False),
    sa.Column("event", sa.String(64), primary_key=True),
    sa.Column("mode", sa.String(8), nullable=False),  # online | offline
    sa.Column("created_at", sa.Float, nullable=False),
)

# A portal's log: the last number handed out (its row is the append lock), the highest
# number purged, and its online handler's secret (sealed; found by its hash).
event_heads = sa.Table(
    "event_heads",
    metadata,
    sa.Column("portal_id", sa.Integer, _portal_fk(), primary_key=True, autoincrement=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("purged_seq", sa.BigInteger, nullable=False),
    sa.Column("handler_hash", sa.String(64), nullable=True, unique=True),
    sa.Column("handler_secret", sa.LargeBinary, nullable=True),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("portal_id", sa.Integer, _portal_fk(), primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),  # sealed JSON
    sa.Column("ts", sa.Float, nullable=True),
    sa.Column("source", sa.String(8), nullable=False),  # online | offline
    sa.Column("origin", sa.String(128), nullable=True),
    sa.Column("received_at", sa.Float, nullable=False, index=True),
    sa.UniqueConstraint("portal_id", "origin", name="uq_events_portal_id_origin"),
)

event_cursors = sa.Table(
    "event_cursors",
    metadata,
    _client_key(),
    sa.Column("portal_id", sa.Integer, _portal_fk(), primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# A consumer's events pushed to its own HTTP service (1C's), signed with its secret.
event_pushes = sa.Table(
    "event_pushes",
    metadata,
    _client_key(),
    sa.Column("portal_id", sa.Integer, _portal_fk(), primary_key=True, autoincrement=False),
    sa.Column("url", sa.String(512), nullable=False),
    sa.Column("secret", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class Sealed:
    """A table's sealed columns, and how a row is named in their associated data (the
    ``row`` the sealing code passes to :meth:`~b24gate.store._crypto.Cipher.encrypt`).

    ``names`` are what ``row`` reads beyond the primary key and the sealed columns.
    """

    table: sa.Table
    columns: tuple[str, ...]
    row: Callable[[sa.Row[Any]], str]
    names: tuple[sa.ColumnElement[Any], ...] = ()


# Every sealed column of the store, in one place: master-key rotation (store/_rotate.py)
# seals again exactly these, and tests/store/test_key_rotate.py fails on a binary column of
# the schema that is missing here. A new sealed column is added here with its table.
SEALED: Final = (
    Sealed(meta, ("value",), lambda r: str(r.key)),
    Sealed(
        portals,
        ("client_secret", "webhook_url", "application_token"),
        lambda r: str(r.name),
        names=(portals.c.name,),
    ),
    Sealed(
        grants,
        ("access_token", "refresh_token"),
        lambda r: str(r.portal_name),
        names=(
            sa.select(portals.c.name)
            .where(portals.c.id == grants.c.portal_id)
            .scalar_subquery()
            .label("portal_name"),
        ),
    ),
    Sealed(idempotency_keys, ("response",), lambda r: f"{r.client_id}:{r.key_hash}"),
    Sealed(job_commands, ("params", "result"), lambda r: f"{r.job_id}:{r.seq}"),
    Sealed(event_heads, ("handler_secret",), lambda r: str(r.portal_id)),
    Sealed(events, ("data",), lambda r: f"{r.portal_id}:{r.seq}"),
    Sealed(event_pushes, ("secret",), lambda r: f"{r.client_id}:{r.portal_id}"),
)

# Migration 0007: what the admin page shows of clients' calls (docs/admin.md). Written in
# batches off the hot path (core/_activity.py), quietly, and pruned; never a key, a token
# or a parameter.

refused_calls = sa.Table(
    "refused_calls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("code", sa.String(64), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("surface", sa.String(8), nullable=False),  # api | rest
    sa.Column("client", sa.String(64), nullable=True),
    sa.Column("portal", sa.String(64), nullable=True),
    sa.Column("method", sa.String(100), nullable=True),
    sa.Column("address", sa.String(64), nullable=True),
    sqlite_autoincrement=True,
)

# A client's calls and errors in one hour (``hour``: Unix time // 3600), summed over replicas.
client_usage = sa.Table(
    "client_usage",
    metadata,
    _client_key(),
    sa.Column("hour", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("calls", sa.Integer, nullable=False),
    sa.Column("errors", sa.Integer, nullable=False),
    sa.Column("last_used", sa.Float, nullable=False),
)
