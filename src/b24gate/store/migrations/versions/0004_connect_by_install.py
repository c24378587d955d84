"""Whether the application's install event may connect a portal that was never connected:
``portals.connect_by_install``, off unless the administrator turns it on.

A marketplace application has one client id on every portal, so an install event for a
portal with no ``member_id`` yet could come from anyone who installed the same application
on a Bitrix24 of their own; only the administrator's explicit opt-in lets such an event
connect the portal (``b24gate portal add/set --connect-by-install``).

Revision ID: 0004
Revises: 0003
Create Date: 2025-02-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("portals") as batch:
        batch.add_column(
            sa.Column("connect_by_install", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("portals") as batch:
        batch.drop_column("connect_by_install")
