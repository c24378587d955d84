"""Webhook-backed portals and the install event: ``portals.kind``, ``webhook_url``,
``application_token``.

A webhook portal keeps ``client_id`` "" and ``client_secret`` a sealed "", so those columns
stay NOT NULL and no table has to be copied (SQLite adds columns in place).

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("portals") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="oauth"))
        batch.add_column(sa.Column("webhook_url", sa.LargeBinary, nullable=True))
        batch.add_column(sa.Column("application_token", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("portals") as batch:
        batch.drop_column("application_token")
        batch.drop_column("webhook_url")
        batch.drop_column("kind")
