"""The initial schema: portals, grants, clients, one-time tickets and states, leases, meta.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _portal_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["portal_id"],
        ["portals.id"],
        name=f"fk_{table}_portal_id_portals",
        ondelete="CASCADE",
    )


def _one_time_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("portal_id", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
        sa.Column("force", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("token_hash", name=f"pk_{name}"),
        _portal_fk(name),
    )


def upgrade() -> None:
    op.create_table(
        "portals",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("url", sa.String(512), nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
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
        sa.PrimaryKeyConstraint("id", name="pk_portals"),
        sa.UniqueConstraint("name", name="uq_portals_name"),
        sa.UniqueConstraint("domain", name="uq_portals_domain"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "grants",
        sa.Column("portal_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("access_token", sa.LargeBinary, nullable=False),
        sa.Column("refresh_token", sa.LargeBinary, nullable=False),
        sa.Column("access_expires_at", sa.Float, nullable=False),
        sa.Column("refresh_obtained_at", sa.Float, nullable=False),
        sa.Column("user_id", sa.Integer, nullable=True),
        sa.Column("server_endpoint", sa.String(512), nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("portal_id", name="pk_grants"),
        _portal_fk("grants"),
    )
    op.create_table(
        "clients",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False),
        sa.Column("methods", sa.Text, nullable=False, server_default=""),
        sa.Column("ips", sa.Text, nullable=False, server_default=""),
        sa.Column("allow_url_key", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_clients"),
        sa.UniqueConstraint("name", name="uq_clients_name"),
        sa.UniqueConstraint("key_id", name="uq_clients_key_id"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "client_portals",
        sa.Column("client_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("portal_id", sa.Integer, nullable=False, autoincrement=False),
        sa.PrimaryKeyConstraint("client_id", "portal_id", name="pk_client_portals"),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name="fk_client_portals_client_id_clients",
            ondelete="CASCADE",
        ),
        _portal_fk("client_portals"),
    )
    _one_time_table("tickets")
    _one_time_table("oauth_states")
    op.create_table(
        "leases",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_meta"),
    )


def downgrade() -> None:
    for table in (
        "meta",
        "leases",
        "oauth_states",
        "tickets",
        "client_portals",
        "clients",
        "grants",
        "portals",
    ):
        op.drop_table(table)
