"""What the admin page shows of clients' calls (docs/admin.md): the refused and failed
calls (``refused_calls``: code, client, portal, method, address; never a key, a token or
a parameter), and each client's calls and errors per hour (``client_usage``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "refused_calls",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("surface", sa.String(8), nullable=False),
        sa.Column("client", sa.String(64), nullable=True),
        sa.Column("portal", sa.String(64), nullable=True),
        sa.Column("method", sa.String(100), nullable=True),
        sa.Column("address", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_refused_calls"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_refused_calls_at", "refused_calls", ["at"], unique=False)
    op.create_table(
        "client_usage",
        sa.Column("client_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("hour", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("last_used", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name="fk_client_usage_client_id_clients",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", "hour", name="pk_client_usage"),
    )


def downgrade() -> None:
    op.drop_table("client_usage")
    op.drop_index("ix_refused_calls_at", table_name="refused_calls")
    op.drop_table("refused_calls")
