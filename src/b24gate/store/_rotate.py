"""Master-key rotation: every sealed value of the store opened with the old key and sealed
again with the new one, in one transaction, so that the store is on one key or the other.

Rows are read in chunks in primary-key order (keyset pages), so a big events or jobs table
never has to fit in memory. The columns are :data:`~b24gate.store._schema.SEALED`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..errors import ConfigError
from ._crypto import Cipher, blob_key_id
from ._engine import Dialect, write_transaction
from ._schema import SEALED, Sealed

# Rows read, sealed again and written back at a time.
CHUNK_ROWS: Final = 500


@dataclass(frozen=True)
class Rotation:
    """What a rotation did: the key ids (never the keys) and how many values it sealed."""

    old_key_id: str
    new_key_id: str
    values: int


async def reseal(
    engine: AsyncEngine,
    dialect: Dialect,
    old: Cipher,
    new: Cipher,
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> Rotation:
    """Seal every sealed value again with ``new``'s current key; all or nothing.

    Raises :class:`ConfigError` when ``new`` is ``old``'s key, or when a value does not open
    with ``old``; the store is then unchanged.
    """
    if new.current_key_id == old.current_key_id:
        raise ConfigError("the new master key is the current one: nothing to rotate")
    count = 0
    async with write_transaction(engine) as conn:
        if dialect == "postgresql":
            # Writers wait until the commit instead of changing a row between its read and
            # its write here (SQLite: BEGIN IMMEDIATE holds the write lock already).
            names = ", ".join(conn.dialect.identifier_preparer.quote(s.table.name) for s in SEALED)
            await conn.execute(sa.text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))
        for sealed in SEALED:
            count += await _reseal_table(conn, sealed, old, new, chunk_rows)
    return Rotation(old.current_key_id, new.current_key_id, count)


async def _reseal_table(
    conn: AsyncConnection, sealed: Sealed, old: Cipher, new: Cipher, chunk_rows: int
) -> int:
    table = sealed.table
    keys = list(table.primary_key.columns)
    page = (
        sa.select(*keys, *(table.c[c] for c in sealed.columns), *sealed.names)
        .order_by(*keys)
        .limit(chunk_rows)
    )
    # Bound names apart from the columns' own: SQLAlchemy reserves those for the SET.
    update = (
        sa.update(table)
        .where(*(key == sa.bindparam(f"key_{key.name}") for key in keys))
        .values({c: sa.bindparam(f"new_{c}") for c in sealed.columns})
    )
    count = 0
    after: tuple[Any, ...] | None = None
    while True:
        query = page if after is None else page.where(sa.tuple_(*keys) > sa.tuple_(*after))
        rows = (await conn.execute(query)).all()
        if not rows:
            return count
        changes = []
        for row in rows:
            values = row._mapping
            change = {f"key_{key.name}": values[key.name] for key in keys}
            for column in sealed.columns:
                blob = values[column]
                if blob is None:
                    change[f"new_{column}"] = None
                else:
                    change[f"new_{column}"] = _reseal(
                        blob, table.name, sealed.row(row), column, old, new
                    )
                    count += 1
            changes.append(change)
        await conn.execute(update, changes)
        after = tuple(rows[-1]._mapping[key.name] for key in keys)


def _reseal(blob: bytes, table: str, row: str, column: str, old: Cipher, new: Cipher) -> bytes:
    try:
        plaintext = old.decrypt(blob, table=table, row=row, column=column)
    except ConfigError:
        raise ConfigError(
            f"a value of {table}.{column} does not open with the current master key "
            f"(sealed with key {blob_key_id(blob)}): nothing was changed"
        ) from None
    return new.encrypt(plaintext, table=table, row=row, column=column)
