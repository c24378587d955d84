"""What the admin page shows of clients' calls: the refused and failed ones, and each
client's calls and errors per hour (migration 0007, docs/admin.md).

Rows come in batches from :class:`b24gate.core.Activity` (never one write per call) and
hold no key, token or parameter; :meth:`ActivityStore.prune` keeps them bounded by age and
by count. The writes are quiet: nothing here is in the read cache.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ._engine import Dialect, write_transaction
from ._schema import client_usage, refused_calls


@dataclass(frozen=True)
class Refusal:
    """A call refused or failed: when, its error code and status, and who asked what."""

    at: float
    code: str
    status: int
    surface: str
    client: str | None = None
    portal: str | None = None
    method: str | None = None
    address: str | None = None


@dataclass(frozen=True)
class HourUsage:
    """One client's calls and errors in one hour (Unix time // 3600)."""

    client_id: int
    hour: int
    calls: int
    errors: int
    last_used: float


# (client id, hour) → (calls, errors, last use): what a process counted since its last flush.
UsageCounts = Mapping[tuple[int, int], tuple[int, int, float]]


# What a caller may put in a method or a portal name that a row cannot hold, or that is no
# text to show: control characters (NUL, which PostgreSQL refuses in text, loses the whole
# batch: every refusal and every client's counts of that second) and lone surrogates (which
# neither driver encodes). Each is written as its escape, so the page shows what was sent.
_UNFIT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _fit(value: str | None) -> str | None:
    """``value`` as text every database holds: control characters and lone surrogates
    escaped (``\\x00``)."""
    return None if value is None else _UNFIT.sub(_escape, value)


def _cut(value: str | None, column: sa.Column[Any]) -> str | None:
    value = _fit(value)
    length = column.type.length if isinstance(column.type, sa.String) else None
    if value is None or length is None or len(value) <= length:
        return value
    return value[: length - 1] + "…"


class ActivityStore:
    def __init__(self, engine: AsyncEngine, dialect: Dialect) -> None:
        self._engine = engine
        self._dialect = dialect

    async def add(self, refusals: Sequence[Refusal], usage: UsageCounts) -> None:
        """Write a batch: the refusals as rows, the usage added to each hour's counts."""
        if not refusals and not usage:
            return
        c = refused_calls.c
        rows = [
            {
                "at": r.at,
                "code": _cut(r.code, c.code),
                "status": r.status,
                "surface": _cut(r.surface, c.surface),
                "client": _cut(r.client, c.client),
                "portal": _cut(r.portal, c.portal),
                "method": _cut(r.method, c.method),
                "address": _cut(r.address, c.address),
            }
            for r in refusals
        ]
        async with write_transaction(self._engine, notify=False) as conn:
            if rows:
                await conn.execute(refused_calls.insert(), rows)
            for (client_id, hour), (calls, errors, last) in sorted(usage.items()):
                insert = (pg_insert if self._dialect == "postgresql" else sqlite_insert)(
                    client_usage
                ).values(client_id=client_id, hour=hour, calls=calls, errors=errors, last_used=last)
                await conn.execute(
                    insert.on_conflict_do_update(
                        index_elements=[client_usage.c.client_id, client_usage.c.hour],
                        set_={
                            "calls": client_usage.c.calls + insert.excluded.calls,
                            "errors": client_usage.c.errors + insert.excluded.errors,
                            "last_used": sa.case(
                                (
                                    insert.excluded.last_used > client_usage.c.last_used,
                                    insert.excluded.last_used,
                                ),
                                else_=client_usage.c.last_used,
                            ),
                        },
                    )
                )

    async def refusals(
        self,
        *,
        code: str | None = None,
        client: str | None = None,
        portal: str | None = None,
        limit: int = 200,
    ) -> list[Refusal]:
        """The latest refusals first, those matching every filter given (exact values)."""
        query = sa.select(refused_calls).order_by(refused_calls.c.id.desc()).limit(limit)
        for column, value in (
            (refused_calls.c.code, code),
            (refused_calls.c.client, client),
            (refused_calls.c.portal, portal),
        ):
            if value:
                # As the rows were written: a NUL in a filter is a question, not an error.
                query = query.where(column == _fit(value))
        async with self._engine.connect() as conn:
            found = (await conn.execute(query)).all()
        return [
            Refusal(r.at, r.code, r.status, r.surface, r.client, r.portal, r.method, r.address)
            for r in found
        ]

    async def usage(self, since_hour: int) -> list[HourUsage]:
        """Every client's hours from ``since_hour`` on."""
        query = sa.select(client_usage).where(client_usage.c.hour >= since_hour)
        async with self._engine.connect() as conn:
            found = (await conn.execute(query)).all()
        return [HourUsage(r.client_id, r.hour, r.calls, r.errors, r.last_used) for r in found]

    async def last_used(self) -> dict[int, float]:
        """Each client's last call that any replica has flushed, however long ago."""
        query = sa.select(client_usage.c.client_id, sa.func.max(client_usage.c.last_used)).group_by(
            client_usage.c.client_id
        )
        async with self._engine.connect() as conn:
            return {int(i): float(t) for i, t in (await conn.execute(query)).all()}

    async def prune(self, *, before: float, keep: int, hours_before: float) -> int:
        """Forget refusals older than ``before``, and past the newest ``keep`` of each kind:
        calls of a known client, and calls with no valid key (anyone can make those, so a
        flood of them must not push out the refusals of the gateway's own clients); and
        hours older than ``hours_before``. How many refusals went."""
        async with write_transaction(self._engine, notify=False) as conn:
            where = refused_calls.c.at < before
            for kind in (refused_calls.c.client.is_(None), refused_calls.c.client.is_not(None)):
                # The id of the newest row of this kind past `keep`: it and older ones go.
                last_kept = await conn.scalar(
                    sa.select(refused_calls.c.id)
                    .where(kind)
                    .order_by(refused_calls.c.id.desc())
                    .offset(keep)
                    .limit(1)
                )
                if last_kept is not None:
                    where = where | (kind & (refused_calls.c.id <= int(last_kept)))
            gone = await conn.execute(refused_calls.delete().where(where))
            await conn.execute(
                client_usage.delete().where(client_usage.c.hour < int(hours_before // 3600))
            )
        return int(gone.rowcount)
