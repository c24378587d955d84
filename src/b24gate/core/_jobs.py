"""Durable jobs (docs/jobs.md): many commands handed over at once, worked through at the
portal's pace by whichever replica is alive, every result kept until the caller collects it.

Each gateway process runs one :class:`JobRunner`. It holds (leases) a few requests' worth of
a job's commands at a time in the store, sends them through the dispatcher like any other
call (the scheduler packs them, fairly with interactive callers), and records each answer.

**The crash rule.** A command is marked ``sent`` in the store, committed, right before the
request that carries it leaves (the dispatcher's ``on_send`` hook; one write for the whole
request). A replica that dies leaves its held commands to the others once its lease ends:

- a command never marked sent is simply sent (it never reached Bitrix24);
- a command sent whose answer was not recorded is repeated only when it reads. A write
  becomes ``unknown`` (``outcome_unknown`` to the caller), unless the job names an external
  id field (``external_id``, e.g. ``ORIGIN_ID``) and the command is an ``….add`` carrying
  it: then the record is looked up (``….list`` filtered on that field) once
  :attr:`~b24gate.settings.Settings.job_settle_after` has passed since it was sent, so that
  a request still running at Bitrix24 is seen. Found, the command is ``ok`` with the record's
  ID (``"settled": true``); not found, it is sent.

The same rule holds inside a live process: a write whose request failed in a way that
leaves its outcome open (a timeout, a dropped connection, a 5xx) is settled or ``unknown``;
one that Bitrix24 refused unexecuted (``QUERY_LIMIT_EXCEEDED``, an operating-time block) or
that never left (429 from our own queue, a portal to re-authorize) goes back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from ..bitrix import is_read
from ..errors import (
    B24GateError,
    BitrixError,
    Forbidden,
    IdempotentOutcomeUnknown,
    LockTimeout,
    NeedsAuthorization,
    OperationTimeLimit,
    QueryLimitExceeded,
    RateLimited,
    RequestError,
    UnknownClient,
    UnknownPortal,
    UpstreamUnreachable,
)
from ..settings import Settings
from ..store import Client, JobCommand, Portal, ReadCache, Runnable, Store
from ._bulk import window
from ._dispatcher import Dispatcher

log = logging.getLogger("b24gate.jobs")

MAX_JOB_COMMANDS = 50_000
# How often an idle runner looks for work another replica left or submitted.
POLL = 1.0
# The longest pause before a command refused unexecuted is tried again.
MAX_PAUSE = 30.0
REVOKED = "the job's client key was revoked"
# How often a lookup refused unexecuted is tried before the write is left unknown.
LOOKUP_ATTEMPTS = 5
# Recorded answers are written together: at most this many, or after this long.
RECORD_BATCH = 200
RECORD_EVERY = 0.1

# How often expired jobs and idempotency keys are deleted.
PURGE_EVERY = 60.0

Verdict = Literal["retry", "error", "unsure"]


def holder_id() -> str:
    """This process, as the store's leases name it: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def dead_on_this_host(holder: str) -> bool:
    """True when ``holder`` names another process of this host that no longer runs: its
    leases need not be waited out. (Only for SQLite, whose replicas share one machine.)"""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def failure(exc: B24GateError) -> dict[str, Any]:
    """A command's error as its result keeps it: what ``/api/v1/batch`` shows for one."""
    body: dict[str, Any] = {"error": exc.message, "code": exc.code, "status": exc.status}
    if isinstance(exc, BitrixError):
        body["bitrix"] = {"error": exc.error, "error_description": exc.description}
    return {"error": body}


def success(answer: Mapping[str, Any]) -> dict[str, Any]:
    """A command's answer as its result keeps it: ``result`` and, for a list, its paging."""
    entry = {"result": answer.get("result")}
    for extra in ("total", "next"):
        if extra in answer:
            entry[extra] = answer[extra]
    return entry


def verdict(exc: BaseException, *, sent: bool) -> Verdict:
    """What a command's failure means: ``retry`` (it did not run: send it again later),
    ``error`` (a final answer: record it) or ``unsure`` (it may have run)."""
    if isinstance(exc, QueryLimitExceeded | OperationTimeLimit | RateLimited):
        return "retry"  # Bitrix24 (or our queue) refused it unexecuted
    if isinstance(exc, NeedsAuthorization | LockTimeout):
        return "retry"  # no token to send it with yet
    if isinstance(exc, UpstreamUnreachable) and not exc.sent:
        return "retry"
    if isinstance(exc, BitrixError):
        return "error"  # Bitrix24 answered it
    if isinstance(exc, Forbidden | UnknownPortal | UnknownClient | RequestError):
        return "error"  # refused at admission: it never will run
    return "unsure" if sent else "retry"


class _Marks:
    """Marks commands sent, one store write for all those of one request: the scheduler
    runs the ``on_send`` hooks of a request's calls together, so they arrive in one turn of
    the loop and the first one's write carries them all."""

    def __init__(
        self, store: Store, job_id: str, holder: str, allowed: Callable[[], Awaitable[bool]]
    ) -> None:
        self._store = store
        self._allowed = allowed
        self._job_id = job_id
        self._holder = holder
        self._waiting: list[int] = []
        self._flush: asyncio.Future[set[int]] | None = None
        self.sent: dict[int, float] = {}

    async def mark(self, seq: int) -> None:
        """Mark ``seq`` sent, or raise :class:`NotMarked` (it must not be sent)."""
        self._waiting.append(seq)
        if self._flush is None:
            self._flush = asyncio.ensure_future(self._write())
        if seq not in await asyncio.shield(self._flush):
            raise NotMarked(f"command {seq} was cancelled or taken over")

    async def _write(self) -> set[int]:
        await asyncio.sleep(0)  # the other hooks of the request join
        seqs, self._waiting, self._flush = self._waiting, [], None
        # The key as it is now, once a request: a key revoked mid-job sends nothing more.
        if not await self._allowed():
            raise Forbidden(REVOKED)
        # A request Bitrix24 refused unexecuted (QUERY_LIMIT_EXCEEDED) is sent again: its
        # commands are marked already, and still held by this process.
        again = {seq for seq in seqs if seq in self.sent}
        fresh = [seq for seq in seqs if seq not in again]
        if not fresh:
            return again
        now = time.time()
        marked = await self._store.jobs.mark_sent(self._job_id, fresh, holder=self._holder, now=now)
        for seq in marked:
            self.sent[seq] = now
        return again | set(marked)


class NotMarked(Exception):
    """A command the store would not mark sent: cancelled, or its lease lost to another
    replica. It is not sent, and this replica records nothing for it."""


@dataclass
class _Recorder:
    """Answers written in batches (one transaction per :data:`RECORD_BATCH`)."""

    store: Store
    job_id: str
    holder: str
    retention: float
    pending: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, seq: int, state: str, result: dict[str, Any]) -> None:
        self.pending.append((seq, state, result))
        if len(self.pending) >= RECORD_BATCH:
            self.wake.set()

    async def flush(self) -> None:
        """Write what is waiting; what fails to be written stays, for the next try."""
        while self.pending:
            batch = self.pending[: RECORD_BATCH * 5]
            await self.store.jobs.record(
                self.job_id, batch, holder=self.holder, now=time.time(), retention=self.retention
            )
            del self.pending[: len(batch)]

    async def close(self) -> None:
        """Write everything left, however long the store takes to come back: until then the
        commands stay held (and renewed) by this process, never lost or sent twice."""
        while True:
            try:
                await self.flush()
                return
            except Exception:
                log.exception("job=%s could not record answers; retrying", self.job_id)
                await asyncio.sleep(1.0)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), RECORD_EVERY)
            self.wake.clear()
            try:
                await self.flush()
            except Exception:  # the store is down: keep the answers and try again
                log.exception("job=%s could not record answers; retrying", self.job_id)
                await asyncio.sleep(1.0)


class JobRunner:
    """This process's worker: claims jobs' commands, sends them, records the answers, and
    applies the crash rule to what a dead replica left behind."""

    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        settings: Settings,
        holder: str,
        reads: ReadCache,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._reads = reads
        self._lease = settings.job_lease
        self._retention = settings.job_retention
        self._settle_after = settings.job_settle_after
        self._holder = holder
        self._clock = clock
        self._wake = asyncio.Event()
        self._drives: dict[str, asyncio.Task[None]] = {}
        self._settling: set[asyncio.Task[None]] = set()
        self._reap_dead = store.dialect == "sqlite"
        self._stopping = False
        self._next_purge = 0.0

    @property
    def holder(self) -> str:
        return self._holder

    async def stop(self, grace: float) -> None:
        """Take no more commands and give those on their way up to ``grace`` seconds to be
        answered and recorded (a command cut off is ``sent`` with no answer: after the
        restart it would be repeated, settled or ``outcome_unknown``)."""
        self._stopping = True
        drives = [task for task in self._drives.values() if not task.done()]
        if drives:
            await asyncio.wait(drives, timeout=grace)

    def notify(self) -> None:
        """A job was submitted here: start on it now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """The loop: keep leases alive, pick up orphans and runnable jobs, purge old ones."""
        renewer = asyncio.create_task(self._renew_loop(), name="b24gate-jobs-renew")
        try:
            while True:
                try:
                    await self._round()
                except Exception:  # a failed round must not end the loop; the next one retries
                    log.exception("job round failed")
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL)
        finally:
            renewer.cancel()
            for task in [*self._drives.values(), *self._settling]:
                task.cancel()
            for task in [renewer, *self._drives.values(), *self._settling]:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                await self._store.jobs.renew(
                    holder=self._holder, now=self._clock(), lease=self._lease
                )
            except Exception:  # the next renewal may succeed before the lease ends
                log.exception("could not renew the jobs' lease")

    async def _round(self) -> None:
        if self._stopping:
            return
        now = self._clock()
        jobs = self._store.jobs
        if self._reap_dead:
            for holder in await jobs.holders(now=now):
                if holder != self._holder and dead_on_this_host(holder):
                    log.info("jobs held by %s: its process is gone; taking them over", holder)
                    await jobs.expire_holder(holder)
        # All at once: their lookups share the portal's requests (packed 50 a batch).
        orphans = await jobs.orphans(now=now)
        for failed in await asyncio.gather(
            *(self._orphan(job, command) for job, command in orphans), return_exceptions=True
        ):
            if isinstance(failed, Exception):
                log.error("could not settle a command left behind", exc_info=failed)
        for job_id, task in list(self._drives.items()):
            if task.done():
                del self._drives[job_id]
                if not task.cancelled() and task.exception() is not None:
                    log.error("job=%s stopped early", job_id, exc_info=task.exception())
        for job in await jobs.runnable(now=now):
            running = self._drives.get(job.id)
            if running is None or running.done():
                self._drives[job.id] = asyncio.create_task(
                    self._drive(job), name=f"b24gate-job-{job.id[:8]}"
                )
        if now >= self._next_purge:
            self._next_purge = now + PURGE_EVERY
            await self._store.idempotency.purge(now)
            await jobs.purge(now)

    async def _context(self, job: Runnable) -> tuple[Client, Portal] | None:
        client = await self._store.client_by_id(job.client_id)
        portal = next((p for p in await self._store.portals() if p.id == job.portal_id), None)
        if client is None or portal is None:
            return None
        return client, portal

    async def _drive(self, job: Runnable) -> None:
        """Work through a job's commands, a window of them in flight, until none is left
        that this replica may take."""
        context = await self._context(job)
        if context is None:
            await self._give_up(job, "the job's client key was revoked or its portal removed")
            return
        client, portal = context
        marks = _Marks(self._store, job.id, self._holder, partial(self._allowed, client))
        recorder = _Recorder(self._store, job.id, self._holder, self._retention)
        writer = asyncio.create_task(recorder.run())
        held: list[JobCommand] = []
        claiming = asyncio.Lock()
        pause_until = 0.0

        async def next_command() -> JobCommand | None:
            nonlocal client
            async with claiming:
                if self._stopping:
                    return None
                if not held:
                    wait = pause_until - self._clock()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    # Each claim as the key is now: a key revoked mid-job stops the job.
                    current = await self._store.client_by_id(job.client_id)
                    if current is None:
                        await self._give_up(job, REVOKED)
                        return None
                    client = current
                    held.extend(
                        reversed(
                            await self._store.jobs.claim(
                                job.id,
                                holder=self._holder,
                                now=self._clock(),
                                lease=self._lease,
                                limit=width,
                            )
                        )
                    )
                return held.pop() if held else None

        async def worker() -> None:
            nonlocal pause_until
            while (command := await next_command()) is not None:
                try:
                    pause = await self._one(job, client, portal, command, marks, recorder)
                except Exception:  # the store failed: the lease hands the command on
                    log.exception("job=%s command %d could not be handled", job.id, command.seq)
                    pause = 1.0
                if pause:
                    pause_until = max(pause_until, self._clock() + pause)

        width = window(portal)
        try:
            await asyncio.gather(*(worker() for _ in range(width)))
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await recorder.close()

    async def _allowed(self, client: Client) -> bool:
        """Whether ``client``'s key is still valid (the gateway's cached reads, refreshed
        whenever the store changed)."""
        await self._reads.refresh()
        return await self._reads.client_by_key_id(client.key_id) is not None

    async def _one(
        self,
        job: Runnable,
        client: Client,
        portal: Portal,
        command: JobCommand,
        marks: _Marks,
        recorder: _Recorder,
    ) -> float:
        """Send one command and record its answer; the pause to take before claiming more
        (when it was refused unexecuted), else 0."""
        try:
            done = await self._dispatcher.call(
                client,
                command.method,
                command.params,
                portal_name=portal.name,
                address=job.address,
                on_send=lambda: marks.mark(command.seq),
                queue=f"{client.name} (jobs)",
            )
        except NotMarked:
            return 0.0
        except Exception as exc:
            sent = command.seq in marks.sent
            outcome = verdict(exc, sent=sent)
            error = exc if isinstance(exc, B24GateError) else B24GateError("internal error")
            if not isinstance(exc, B24GateError):
                log.exception("job=%s command %d failed unexpectedly", job.id, command.seq)
            if outcome == "error":
                recorder.add(command.seq, "error", failure(error))
                return 0.0
            if outcome == "retry" or is_read(command.method, command.params):
                self._requeue(job.id, command.seq)
                return pause_after(exc)
            # The lookup waits from now, when this process stopped waiting for the answer:
            # the request may still run at Bitrix24.
            self._settle_later(job, client, portal, command, self._clock(), error, recorder)
            return 0.0
        recorder.add(command.seq, "ok", success(done.body))
        return 0.0

    def _requeue(self, job_id: str, seq: int) -> None:
        """Hand a command back to the queue, trying until the store takes it: a command
        held by this live process would otherwise wait for its restart."""

        async def back() -> None:
            while True:
                try:
                    await self._store.jobs.requeue(job_id, [seq], holder=self._holder)
                    return
                except Exception:
                    log.exception("job=%s could not requeue command %d; retrying", job_id, seq)
                    await asyncio.sleep(1.0)

        self._background(back())

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    def _settle_later(
        self,
        job: Runnable,
        client: Client,
        portal: Portal,
        command: JobCommand,
        since: float,
        error: B24GateError,
        recorder: _Recorder,
    ) -> None:
        """A write whose outcome is open: look it up (external id) ``job_settle_after``
        after ``since``, when it cannot still be running at Bitrix24, or record it
        ``unknown``."""
        if lookup_of(job, command) is None:
            recorder.add(command.seq, "unknown", failure(error))
            return

        async def later() -> None:
            await asyncio.sleep(max(0.0, since + self._settle_after - self._clock()))
            await self._settle(job, client, portal, command, error)

        self._background(later())

    async def _orphan(self, job: Runnable, command: JobCommand) -> None:
        """A command a dead replica sent and never recorded."""
        now = self._clock()
        reads = is_read(command.method, command.params)
        settles = not reads and lookup_of(job, command) is not None
        if settles and (command.sent_at or 0.0) + self._settle_after > now:
            return  # may still be running at Bitrix24: look it up at a later round
        jobs = self._store.jobs
        if not await jobs.adopt(
            job.id, command.seq, holder=self._holder, now=now, lease=self._lease
        ):
            return  # another replica took it
        if reads:
            await jobs.requeue(job.id, [command.seq], holder=self._holder)
            return
        lost = IdempotentOutcomeUnknown(
            "the gateway stopped after sending this command and before recording its answer"
        )
        if not settles:
            await self._record(job, command.seq, "unknown", failure(lost))
            return
        context = await self._context(job)
        if context is None:
            await self._record(job, command.seq, "unknown", failure(lost))
            return
        await self._settle(job, *context, command, lost)

    async def _settle(
        self,
        job: Runnable,
        client: Client,
        portal: Portal,
        command: JobCommand,
        error: B24GateError,
    ) -> None:
        """Look a write up by its external id: found, it is ``ok``; not found, it goes back
        to the queue; the lookup failing, it is ``unknown``."""
        query = lookup_of(job, command)
        assert query is not None
        assert job.external_id is not None
        method, params = query
        value = params["filter"][f"={job.external_id}"]
        for attempt in range(1, LOOKUP_ATTEMPTS + 1):
            try:
                found = await self._dispatcher.call(
                    client, method, params, portal_name=portal.name, address=job.address
                )
                record_id = found_id(found.body.get("result"), job.external_id, value)
                break
            except Exception as exc:
                # A lookup refused unexecuted (the budget, a token being renewed) is tried
                # again; one that cannot answer (no permission, an entity it cannot
                # search) leaves the outcome unknown.
                if attempt < LOOKUP_ATTEMPTS and verdict(exc, sent=True) == "retry":
                    await asyncio.sleep(pause_after(exc))
                    continue
                log.warning(
                    "job=%s command %d: the external-id lookup failed (%s); outcome unknown",
                    job.id,
                    command.seq,
                    type(exc).__name__,
                )
                await self._record(job, command.seq, "unknown", failure(error))
                return
        if record_id is None:
            await self._store.jobs.requeue(job.id, [command.seq], holder=self._holder)
            self.notify()
            return
        await self._record(job, command.seq, "ok", {"result": record_id, "settled": True})

    async def _record(self, job: Runnable, seq: int, state: str, result: dict[str, Any]) -> None:
        await self._store.jobs.record(
            job.id,
            [(seq, state, result)],
            holder=self._holder,
            now=self._clock(),
            retention=self._retention,
        )

    async def _give_up(self, job: Runnable, reason: str) -> None:
        """A job that can no longer run (its key revoked, its portal removed): each command
        left gets that error, so the job ends and says why."""
        error = failure(Forbidden(reason))
        while commands := await self._store.jobs.claim(
            job.id, holder=self._holder, now=self._clock(), lease=self._lease, limit=1000
        ):
            await self._store.jobs.record(
                job.id,
                [(c.seq, "error", error) for c in commands],
                holder=self._holder,
                now=self._clock(),
                retention=self._retention,
            )


def pause_after(exc: BaseException) -> float:
    """How long to wait before trying again what was refused unexecuted: Bitrix24's (or our
    queue's) ``retry_after``; long for a portal that waits for an administrator."""
    wait = getattr(exc, "retry_after", None)
    if isinstance(wait, int | float) and wait > 0:
        return min(MAX_PAUSE, float(wait))
    return MAX_PAUSE if isinstance(exc, NeedsAuthorization) else 1.0


def lookup_of(job: Runnable, command: JobCommand) -> tuple[str, dict[str, Any]] | None:
    """The ``….list`` call that finds what ``command`` (an ``….add``) would have made, by the
    job's external id field; None when the job names none or the command does not carry it."""
    field_name = job.external_id
    if field_name is None or not command.method.lower().endswith(".add"):
        return None
    fields = next(
        (v for k, v in command.params.items() if k.lower() == "fields" and isinstance(v, dict)),
        None,
    )
    value = None if fields is None else fields.get(field_name)
    if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
        return None
    params = {k: v for k, v in command.params.items() if k.lower() != "fields"}
    params.update({"filter": {f"={field_name}": value}, "select": ["ID", field_name]})
    return command.method[: -len(".add")] + ".list", params


class Unsettled(Exception):
    """The lookup's answer proves nothing: its records do not carry the value looked for
    (Bitrix24 ignores a filter on a field the entity does not have, such as ``XML_ID`` on
    a CRM deal, and lists everything)."""


def found_id(result: Any, field_name: str, value: str | int) -> int | str | None:
    """The ID of the record a lookup found; None when it found none; :class:`Unsettled`
    when what it listed does not carry ``value`` in ``field_name`` (compared as text)."""
    items = result.get("items") if isinstance(result, dict) else result
    if not isinstance(items, list):
        raise Unsettled("the lookup's answer is not a list")
    if not items:
        return None
    record = items[0]
    if not isinstance(record, dict) or str(record.get(field_name)) != str(value):
        raise Unsettled(f"the lookup's records do not carry {field_name}")
    found = record.get("ID", record.get("id"))
    if isinstance(found, str) and found.isdigit():
        return int(found)
    if not isinstance(found, int | str):
        raise Unsettled("the lookup's record has no ID")
    return found
