"""Each portal's request budget: ``portals.rate`` (requests/s drained) and ``burst``.

Defaults are Bitrix24's for most plans (2/s, a bucket of 50); Enterprise is 5/s and 250.
A rate of 0 means no limit (an on-premise portal whose administrator set none).

Revision ID: 0003
Revises: 0002
Create Date: 2025-02-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("portals") as batch:
        batch.add_column(sa.Column("rate", sa.Float, nullable=False, server_default="2"))
        batch.add_column(sa.Column("burst", sa.Integer, nullable=False, server_default="50"))


def downgrade() -> None:
    with op.batch_alter_table("portals") as batch:
        batch.drop_column("burst")
        batch.drop_column("rate")
