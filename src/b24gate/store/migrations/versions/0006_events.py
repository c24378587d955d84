"""Bitrix24's events (docs/events.md): subscriptions, each portal's ordered log and its
head, consumers' cursors and pushes; ``clients.events`` (what a key may read) and
``portals.auth_connector`` (the channel the gateway's own writes carry).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _portal_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["portal_id"], ["portals.id"], name=f"fk_{table}_portal_id_portals", ondelete="CASCADE"
    )


def upgrade() -> None:
    with op.batch_alter_table("portals") as batch:
        batch.add_column(sa.Column("auth_connector", sa.String(64), nullable=True))
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("events", sa.Text, nullable=False, server_default=""))
    op.create_table(
        "event_subscriptions",
        sa.Column("portal_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        _portal_fk("event_subscriptions"),
        sa.PrimaryKeyConstraint("portal_id", "event", name="pk_event_subscriptions"),
    )
    op.create_table(
        "event_heads",
        sa.Column("portal_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("purged_seq", sa.BigInteger, nullable=False),
        sa.Column("handler_hash", sa.String(64), nullable=True),
        sa.Column("handler_secret", sa.LargeBinary, nullable=True),
        _portal_fk("event_heads"),
        sa.PrimaryKeyConstraint("portal_id", name="pk_event_heads"),
        sa.UniqueConstraint("handler_hash", name="uq_event_heads_handler_hash"),
    )
    op.create_table(
        "events",
        sa.Column("portal_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("ts", sa.Float, nullable=True),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("origin", sa.String(128), nullable=True),
        sa.Column("received_at", sa.Float, nullable=False),
        _portal_fk("events"),
        sa.PrimaryKeyConstraint("portal_id", "seq", name="pk_events"),
        sa.UniqueConstraint("portal_id", "origin", name="uq_events_portal_id_origin"),
    )
    op.create_index("ix_events_received_at", "events", ["received_at"], unique=False)
    op.create_table(
        "event_cursors",
        sa.Column("client_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("portal_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name="fk_event_cursors_client_id_clients",
            ondelete="CASCADE",
        ),
        _portal_fk("event_cursors"),
        sa.PrimaryKeyConstraint("client_id", "portal_id", name="pk_event_cursors"),
    )
    op.create_table(
        "event_pushes",
        sa.Column("client_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("portal_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("url", sa.String(512), nullable=False),
        sa.Column("secret", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name="fk_event_pushes_client_id_clients",
            ondelete="CASCADE",
        ),
        _portal_fk("event_pushes"),
        sa.PrimaryKeyConstraint("client_id", "portal_id", name="pk_event_pushes"),
    )


def downgrade() -> None:
    op.drop_table("event_pushes")
    op.drop_table("event_cursors")
    op.drop_index("ix_events_received_at", table_name="events")
    op.drop_table("events")
    op.drop_table("event_heads")
    op.drop_table("event_subscriptions")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("events")
    with op.batch_alter_table("portals") as batch:
        batch.drop_column("auth_connector")
