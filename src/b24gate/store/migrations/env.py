"""Alembic's entry point: runs the migrations on the connection that ``upgrade()`` hands over.

Migrations run only through :func:`b24gate.store._engine.upgrade`, which holds the lock that
serialises concurrent starts; the ``alembic`` command line is not wired up.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from b24gate.store._schema import metadata


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run b24gate's migrations through b24gate.store.upgrade()")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        render_as_batch=True,  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
