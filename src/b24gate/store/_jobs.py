"""Durable jobs: a job's commands, each with its state, and who works on them (docs/jobs.md).

A replica holds (``holder``, ``lease_until``) the commands it works on and renews the lease
while it lives; a command whose lease ran out is free for any replica. Taking commands is
one statement whose subquery locks what it takes with PostgreSQL's ``FOR UPDATE SKIP
LOCKED`` (concurrent takers skip each other's rows) and runs inside SQLite's write lock
(``BEGIN IMMEDIATE``): two replicas never hold one command.

A command's states: ``pending`` (not sent; maybe held), ``sent`` (marked, committed, right
before its request left), then ``ok``, ``error`` or ``unknown``; or ``cancelled``. Its
parameters and its result are sealed like every other secret-bearing column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..errors import StoreConflict
from ._crypto import Cipher
from ._engine import Dialect, write_transaction
from ._schema import job_commands as commands
from ._schema import jobs

STATES = ("pending", "sent", "ok", "error", "unknown", "cancelled")
# Rows inserted by one statement when a job is created.
INSERT_CHUNK = 1000


@dataclass(frozen=True)
class NewJob:
    id: str
    client_id: int
    portal_id: int
    commands: Sequence[tuple[str, Mapping[str, Any]]]
    external_id: str | None = None
    address: str | None = None  # where it was submitted from: its commands run as from there


@dataclass(frozen=True)
class JobInfo:
    id: str
    client_id: int
    portal_id: int
    state: str
    total: int
    counts: Mapping[str, int]  # per command state, every state present
    external_id: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    expires_at: float | None


@dataclass(frozen=True)
class JobCommand:
    """A command as a replica holds it."""

    job_id: str
    seq: int
    method: str
    params: dict[str, Any]
    state: str
    sent_at: float | None


@dataclass(frozen=True)
class JobResult:
    """A command as the results show it."""

    seq: int
    method: str
    state: str
    result: dict[str, Any] | None


@dataclass(frozen=True)
class Runnable:
    """What a replica needs to run a job's commands."""

    id: str
    client_id: int
    portal_id: int
    external_id: str | None
    address: str | None = None


class JobStore:
    def __init__(self, engine: AsyncEngine, cipher: Cipher, dialect: Dialect) -> None:
        self._engine = engine
        self._cipher = cipher
        self._dialect = dialect

    # -- sealing ---------------------------------------------------------------------

    def _seal(self, job_id: str, seq: int, column: str, value: Mapping[str, Any]) -> bytes:
        return self._cipher.encrypt(
            orjson.dumps(value).decode(), table="job_commands", row=f"{job_id}:{seq}", column=column
        )

    def _open(self, job_id: str, seq: int, column: str, sealed: bytes) -> dict[str, Any]:
        opened: dict[str, Any] = orjson.loads(
            self._cipher.decrypt(sealed, table="job_commands", row=f"{job_id}:{seq}", column=column)
        )
        return opened

    def _writing(self) -> Any:
        return write_transaction(self._engine, notify=False)

    # -- the caller's side -----------------------------------------------------------

    async def create(self, job: NewJob, *, now: float) -> JobInfo:
        """Store a job and its commands, all or nothing."""
        _check_lengths(job)
        rows = [
            {
                "job_id": job.id,
                "seq": seq,
                "method": method,
                "params": self._seal(job.id, seq, "params", params),
                "state": "pending",
            }
            for seq, (method, params) in enumerate(job.commands)
        ]
        try:
            return await self._insert(job, rows, now)
        except IntegrityError:
            raise StoreConflict(f"a job {job.id} exists already") from None

    async def _insert(self, job: NewJob, rows: list[dict[str, Any]], now: float) -> JobInfo:
        async with self._writing() as conn:
            await conn.execute(
                jobs.insert().values(
                    id=job.id,
                    client_id=job.client_id,
                    portal_id=job.portal_id,
                    state="queued",
                    external_id=job.external_id,
                    address=job.address,
                    total=len(rows),
                    created_at=now,
                    updated_at=now,
                )
            )
            for start in range(0, len(rows), INSERT_CHUNK):
                await conn.execute(commands.insert(), rows[start : start + INSERT_CHUNK])
            info = await self._info(conn, job.id, None)
        assert info is not None
        return info

    async def get(self, job_id: str, client_id: int | None = None) -> JobInfo | None:
        """A job with its counts; None when missing or (``client_id`` given) another's."""
        async with self._engine.connect() as conn:
            return await self._info(conn, job_id, client_id)

    async def latest(self, limit: int = 50) -> list[JobInfo]:
        """The newest jobs of every client, newest first (the admin page)."""
        async with self._engine.connect() as conn:
            ids = (
                await conn.execute(
                    sa.select(jobs.c.id).order_by(jobs.c.created_at.desc()).limit(limit)
                )
            ).scalars()
            found = [await self._info(conn, job_id, None) for job_id in list(ids)]
        return [info for info in found if info is not None]

    async def results(self, job_id: str, *, after: int, limit: int) -> list[JobResult]:
        """The commands after index ``after``, in order, at most ``limit``."""
        query = (
            sa.select(commands.c.seq, commands.c.method, commands.c.state, commands.c.result)
            .where(commands.c.job_id == job_id, commands.c.seq > after)
            .order_by(commands.c.seq)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            JobResult(
                row.seq,
                row.method,
                row.state,
                None if row.result is None else self._open(job_id, row.seq, "result", row.result),
            )
            for row in rows
        ]

    async def cancel(
        self, job_id: str, client_id: int, *, now: float, retention: float
    ) -> JobInfo | None:
        """Cancel what was not sent; what was sent finishes as it will."""
        async with self._writing() as conn:
            found = await conn.scalar(
                sa.select(jobs.c.state).where(jobs.c.id == job_id, jobs.c.client_id == client_id)
            )
            if found is None:
                return None
            await conn.execute(
                commands.update()
                .where(commands.c.job_id == job_id, commands.c.state == "pending")
                .values(state="cancelled", holder=None, lease_until=None, done_at=now)
            )
            await conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.state.in_(("queued", "running")))
                .values(state="cancelled", updated_at=now)
            )
            await self._end_if_complete(conn, job_id, now, retention)
            return await self._info(conn, job_id, client_id)

    # -- the workers' side -----------------------------------------------------------

    async def runnable(self, *, now: float, limit: int = 100) -> list[Runnable]:
        """Jobs with a command no live replica holds, oldest first."""
        free = sa.exists().where(
            commands.c.job_id == jobs.c.id,
            commands.c.state == "pending",
            sa.or_(commands.c.holder.is_(None), commands.c.lease_until < now),
        )
        query = (
            sa.select(jobs)
            .where(jobs.c.state.in_(("queued", "running")), free)
            .order_by(jobs.c.created_at)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [_runnable(row) for row in (await conn.execute(query)).all()]

    async def claim(
        self, job_id: str, *, holder: str, now: float, lease: float, limit: int
    ) -> list[JobCommand]:
        """Hold up to ``limit`` of the job's free pending commands, lowest index first."""
        free = (
            sa.select(commands.c.seq)
            .where(
                commands.c.job_id == job_id,
                commands.c.state == "pending",
                sa.or_(commands.c.holder.is_(None), commands.c.lease_until < now),
            )
            .order_by(commands.c.seq)
            .limit(limit)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite holds its write lock
        )
        # Two statements, not UPDATE ... WHERE seq IN (that SELECT): PostgreSQL may run the
        # subquery again for every row of a nested-loop semi-join, each run skipping the
        # rows the UPDATE itself has just changed, and so hold the whole job, not `limit`.
        async with self._writing() as conn:
            seqs = list((await conn.scalars(free)).all())
            if not seqs:
                return []
            take = (
                commands.update()
                .where(commands.c.job_id == job_id, commands.c.seq.in_(seqs))
                .values(holder=holder, lease_until=now + lease)
                .returning(commands.c.seq, commands.c.method, commands.c.params, commands.c.sent_at)
            )
            rows = (await conn.execute(take)).all()
            await conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.state == "queued")
                .values(state="running", updated_at=now)
            )
        return sorted(
            (
                JobCommand(
                    job_id,
                    row.seq,
                    row.method,
                    self._open(job_id, row.seq, "params", row.params),
                    "pending",
                    row.sent_at,
                )
                for row in rows
            ),
            key=lambda command: command.seq,
        )

    async def mark_sent(
        self, job_id: str, seqs: Sequence[int], *, holder: str, now: float
    ) -> list[int]:
        """Mark held pending commands sent, committed on return; the indexes marked (a
        command cancelled or taken over meanwhile is not, and must not be sent)."""
        update = (
            commands.update()
            .where(
                commands.c.job_id == job_id,
                commands.c.seq.in_(list(seqs)),
                commands.c.holder == holder,
                commands.c.state == "pending",
            )
            .values(state="sent", sent_at=now)
            .returning(commands.c.seq)
        )
        async with self._writing() as conn:
            return [row.seq for row in (await conn.execute(update)).all()]

    async def record(
        self,
        job_id: str,
        outcomes: Sequence[tuple[int, str, Mapping[str, Any]]],
        *,
        holder: str,
        now: float,
        retention: float,
    ) -> None:
        """Keep held commands' outcomes (``ok``, ``error``, ``unknown``); the job ends when
        nothing of it is left to send or to answer."""
        if not outcomes:
            return
        update = (
            commands.update()
            .where(
                commands.c.job_id == job_id,
                commands.c.seq == sa.bindparam("b_seq"),
                commands.c.holder == holder,
            )
            .values(
                state=sa.bindparam("b_state"),
                result=sa.bindparam("b_result"),
                holder=None,
                lease_until=None,
                done_at=now,
            )
        )
        values = [
            {"b_seq": seq, "b_state": state, "b_result": self._seal(job_id, seq, "result", result)}
            for seq, state, result in outcomes
        ]
        async with self._writing() as conn:
            await conn.execute(update, values)
            await self._end_if_complete(conn, job_id, now, retention)

    async def requeue(self, job_id: str, seqs: Sequence[int], *, holder: str) -> None:
        """Held commands back to the queue, for any replica: a read to repeat, a write
        proven not done, a command refused unexecuted."""
        await self._update_held(
            job_id,
            seqs,
            holder,
            {"state": "pending", "holder": None, "lease_until": None, "sent_at": None},
        )

    async def renew(self, *, holder: str, now: float, lease: float) -> None:
        """Extend the lease on everything ``holder`` holds."""
        async with self._writing() as conn:
            await conn.execute(
                commands.update()
                .where(commands.c.holder == holder, commands.c.state.in_(("pending", "sent")))
                .values(lease_until=now + lease)
            )

    async def holders(self, *, now: float) -> list[str]:
        """The replicas holding commands under a live lease."""
        query = (
            sa.select(commands.c.holder)
            .where(commands.c.holder.is_not(None), commands.c.lease_until >= now)
            .distinct()
        )
        async with self._engine.connect() as conn:
            return [str(h) for h in (await conn.scalars(query)).all()]

    async def expire_holder(self, holder: str) -> None:
        """End a replica's leases now: its process is known to be gone."""
        async with self._writing() as conn:
            await conn.execute(
                commands.update().where(commands.c.holder == holder).values(lease_until=0.0)
            )

    async def orphans(self, *, now: float, limit: int = 1000) -> list[tuple[Runnable, JobCommand]]:
        """Commands sent by a replica whose lease ran out before it recorded their answers."""
        query = (
            sa.select(commands, jobs.c.client_id, jobs.c.portal_id, jobs.c.external_id)
            .add_columns(jobs.c.address)
            .join(jobs, jobs.c.id == commands.c.job_id)
            .where(commands.c.state == "sent", commands.c.lease_until < now)
            .order_by(commands.c.job_id, commands.c.seq)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            (
                Runnable(row.job_id, row.client_id, row.portal_id, row.external_id, row.address),
                JobCommand(
                    row.job_id,
                    row.seq,
                    row.method,
                    self._open(row.job_id, row.seq, "params", row.params),
                    row.state,
                    row.sent_at,
                ),
            )
            for row in rows
        ]

    async def adopt(self, job_id: str, seq: int, *, holder: str, now: float, lease: float) -> bool:
        """Hold one orphan; of racing replicas, one wins."""
        update = (
            commands.update()
            .where(
                commands.c.job_id == job_id,
                commands.c.seq == seq,
                commands.c.state == "sent",
                commands.c.lease_until < now,
            )
            .values(holder=holder, lease_until=now + lease)
        )
        async with self._writing() as conn:
            return int((await conn.execute(update)).rowcount) == 1

    async def purge(self, now: float) -> int:
        """Delete the jobs kept past their retention, with their commands; how many."""
        expired = sa.select(jobs.c.id).where(jobs.c.expires_at < now)
        async with self._writing() as conn:
            await conn.execute(
                commands.delete().where(commands.c.job_id.in_(expired.scalar_subquery()))
            )
            deleted = await conn.execute(jobs.delete().where(jobs.c.expires_at < now))
            return int(deleted.rowcount)

    # -- internals -------------------------------------------------------------------

    async def _update_held(
        self, job_id: str, seqs: Sequence[int], holder: str, values: Mapping[str, Any]
    ) -> None:
        async with self._writing() as conn:
            await conn.execute(
                commands.update()
                .where(
                    commands.c.job_id == job_id,
                    commands.c.seq.in_(list(seqs)),
                    commands.c.holder == holder,
                    commands.c.state.in_(("pending", "sent")),
                )
                .values(**values)
            )

    async def _end_if_complete(
        self, conn: AsyncConnection, job_id: str, now: float, retention: float
    ) -> None:
        # The job's row locked first (PostgreSQL; SQLite's writers take turns anyway): two
        # replicas recording the job's last two commands at once each count the other's as
        # still open, and neither would end the job. Locked, the second counts after the
        # first has committed.
        await conn.execute(sa.select(jobs.c.id).where(jobs.c.id == job_id).with_for_update())
        open_ = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(commands)
            .where(commands.c.job_id == job_id, commands.c.state.in_(("pending", "sent")))
        )
        values: dict[str, Any] = {"updated_at": now}
        if not open_:
            values.update(
                state=sa.case((jobs.c.state == "cancelled", "cancelled"), else_="done"),
                finished_at=now,
                expires_at=now + retention,
            )
        await conn.execute(
            jobs.update().where(jobs.c.id == job_id, jobs.c.finished_at.is_(None)).values(values)
        )

    async def _info(
        self, conn: AsyncConnection, job_id: str, client_id: int | None
    ) -> JobInfo | None:
        query = sa.select(jobs).where(jobs.c.id == job_id)
        if client_id is not None:
            query = query.where(jobs.c.client_id == client_id)
        row = (await conn.execute(query)).first()
        if row is None:
            return None
        counts = dict.fromkeys(STATES, 0)
        by_state = (
            sa.select(commands.c.state, sa.func.count())
            .where(commands.c.job_id == job_id)
            .group_by(commands.c.state)
        )
        for state, count in (await conn.execute(by_state)).all():
            counts[state] = int(count)
        return JobInfo(
            id=row.id,
            client_id=row.client_id,
            portal_id=row.portal_id,
            state=row.state,
            total=row.total,
            counts=counts,
            external_id=row.external_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            finished_at=row.finished_at,
            expires_at=row.expires_at,
        )


def _check_lengths(job: NewJob) -> None:
    """PostgreSQL would refuse an over-long string (a DataError mid-insert) and SQLite would
    keep it: refused here, the same way on both (as store/_store.py does for its tables)."""
    limits = (
        ("method", commands.c.method, max((len(m) for m, _ in job.commands), default=0)),
        ("external_id", jobs.c.external_id, len(job.external_id or "")),
        ("address", jobs.c.address, len(job.address or "")),
    )
    for name, column, length in limits:
        allowed = column.type.length if isinstance(column.type, sa.String) else None
        if allowed is not None and length > allowed:
            raise ValueError(f"{name} is longer than {allowed} characters")


def _runnable(row: sa.Row[Any]) -> Runnable:
    return Runnable(row.id, row.client_id, row.portal_id, row.external_id, row.address)
