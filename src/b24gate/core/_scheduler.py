"""The per-portal scheduler: calls wait their turn instead of tripping Bitrix24's limit.

Each portal has one lane: a queue per client, served round robin, so one bulk import
cannot starve another client's single call. Whenever the portal's budget (the
:mod:`limiter <._limiter>`) has room for a request, the lane sends everything waiting, up
to 50 calls: one call alone, several as one ``batch`` (``halt=0``), and each caller gets
its own result or error. A call on a quiet portal goes at once, even alone; a request
that would leave part-filled waits briefly for company, as :meth:`Scheduler._drain` says.
Only calls whose parameters survive the query-string encoding of ``batch`` commands are
packed (:func:`~b24gate.bitrix.batchable`), and never one whose text Bitrix24 could read
as a reference to another command's answer: in a batch shared with other clients, that
would hand it their results.

If Bitrix24 refuses a request anyway (``QUERY_LIMIT_EXCEEDED``: another application shares
the bucket), nothing was executed: the lane pauses, slows down for a while and sends the
same calls again. A call whose method Bitrix24 blocked for its operating time while the
call waited gets the block's 429 at its turn (:class:`~._operating.OperatingBudget`).

The gateway builds one scheduler (:mod:`._gateway`) and hands it what it sends through,
an :class:`Upstream` (the :class:`~._forward.Forwarder`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

from ..bitrix import BATCH_LIMIT, BatchAnswer, batchable, encode_batch, names_connector
from ..errors import QueryLimitExceeded, RateLimited
from ..store import Portal
from ._limiter import Limiter
from ._operating import OperatingBudget

log = logging.getLogger("b24gate.scheduler")

# After an unexpected refusal: wait this long, then run at half the rate for a while.
REFUSED_PAUSE = 1.0
SLOW_FOR = 30.0
MAX_REFUSALS = 8
# Under load, how long a part-filled request may wait for company once a request is
# answered: its callers come back with their next calls within a few ms.
LINGER = 0.05
GROWING = BATCH_LIMIT // 5  # calls arriving during one request that can mean a growing load
# What one request may take at Bitrix24, well under its 60 s cap on a request: the calls
# packed into one are as many as the time its commands took lately allows.
REQUEST_TARGET = 20.0

QUEUE_DEPTH = Gauge("b24gate_queue_depth", "Calls waiting per portal", ["portal"])
QUEUE_WAIT = Histogram(
    "b24gate_queue_wait_seconds",
    "Time a call waited for its turn",
    ["portal"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
BATCH_SIZE = Histogram(
    "b24gate_request_calls",
    "Calls carried by one request to Bitrix24",
    ["portal"],
    buckets=(1, 2, 5, 10, 20, 30, 40, 50),
)
# Awaited before a call's request leaves (see _Call.on_send).
SendHook = Callable[[], Awaitable[None]]

REFUSED = Counter("b24gate_limit_refusals_total", "QUERY_LIMIT_EXCEEDED absorbed", ["portal"])


class Upstream(Protocol):
    """Where a lane sends its requests: one call, or several packed as a ``batch``.

    ``send`` returns Bitrix24's answer and raises QUERY_LIMIT_EXCEEDED as it is: the lane
    handles it (pause, slow down, send again).
    """

    async def send(
        self, portal: Portal, method: str, params: Mapping[str, Any]
    ) -> dict[str, Any]: ...


def budget_key(portal: Portal) -> str:
    """Whose budget: Bitrix24 counts per portal, which ``member_id`` names for good."""
    return str(portal.member_id or portal.id)


@dataclass(frozen=True)
class Plan:
    """A portal's request budget: Bitrix24 drains ``rate``/s from a bucket of ``burst``."""

    rate: float
    burst: int


def portal_plan(portal: Portal) -> Plan:
    """The budget an administrator gave the portal."""
    return Plan(portal.rate, portal.burst)


@dataclass
class _Call:
    client: str
    method: str
    params: Mapping[str, Any]
    future: asyncio.Future[dict[str, Any]]
    enqueued: float
    packable: bool
    refusals: int = 0
    # Awaited right before the request carrying the call leaves (a job's command is marked
    # sent in the store first: after a crash it must not be sent blindly again).
    on_send: SendHook | None = None


@dataclass
class _Lane:
    portal: Portal
    queues: OrderedDict[str, deque[_Call]] = field(default_factory=OrderedDict)
    pending: int = 0
    alone: int = 0  # pending calls that cannot be packed: a request each
    worker: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    slow_until: float = 0.0
    linger_until: float = 0.0  # the load is heavy or growing: more calls are on their way
    # Calls answered under such a load whose callers have not sent their next one yet.
    returning: int = 0
    arrived: int = 0  # calls submitted so far (for telling a growing load)
    sending: set[asyncio.Task[None]] = field(default_factory=set)
    packed_in_flight: int = 0  # requests of several calls (a `batch` each) on their way
    command_time: float = 0.0  # what one packed call took Bitrix24 lately, in seconds
    batch_time: float = 0.0  # the operating time one packed request was charged lately

    def packing_limit(self) -> int:
        """The calls one request may carry: :data:`BATCH_LIMIT`, fewer when Bitrix24 has
        lately taken so long per call that a full request would pass :data:`REQUEST_TARGET`."""
        if self.command_time <= 0:
            return BATCH_LIMIT
        return max(1, min(BATCH_LIMIT, int(REQUEST_TARGET / self.command_time)))

    def learn(self, body: Mapping[str, Any], answer: BatchAnswer) -> None:
        """A packed request's ``time`` blocks: the request's operating time, and what its
        calls took each (their own blocks, without the request's share)."""
        timing = body.get("time")
        spent = timing.get("processing") if isinstance(timing, Mapping) else None
        if isinstance(spent, int | float) and spent >= 0:
            self.batch_time = _smooth(self.batch_time, float(spent))
        each = [
            t["processing"]
            for t in answer.times.values()
            if isinstance(t, Mapping) and isinstance(t.get("processing"), int | float)
        ]
        if each:
            self.command_time = _smooth(self.command_time, max(0.0, sum(each) / len(each)))

    def oldest(self) -> float:
        """When the longest-waiting call was submitted (``inf`` when none waits)."""
        return min((queue[0].enqueued for queue in self.queues.values() if queue), default=math.inf)

    def finished(self, task: asyncio.Task[None]) -> None:
        self.sending.discard(task)
        self.wake.set()

    def part_filled(self) -> bool:
        """Whether the calls that can be packed would leave with room to spare."""
        return self.pending - self.alone < self.packing_limit()

    async def linger(self) -> None:
        """Wait for a full request's worth of calls and for the callers just answered
        (:attr:`returning`), at most until ``linger_until``; a call that must go alone ends
        the wait (it goes at once, as nothing can join it)."""
        loop = asyncio.get_running_loop()
        while (self.part_filled() or self.returning > 0) and not self.alone:
            left = self.linger_until - loop.time()
            if left <= 0:
                self.returning = 0
                return
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), left)
            except TimeoutError:
                return

    def take_alone(self) -> list[_Call]:
        """The longest-waiting call that must go alone, by itself."""
        oldest: tuple[deque[_Call], _Call] | None = None
        for queue in self.queues.values():
            for call in queue:
                if not call.packable:
                    if oldest is None or call.enqueued < oldest[1].enqueued:
                        oldest = (queue, call)
                    break
        if oldest is None:
            return []
        queue, call = oldest
        queue.remove(call)
        self.pending -= 1
        self.alone -= 1
        return [call]

    def fail_all(self, exc: Exception) -> None:
        """Every waiting caller gets ``exc``; the queue is left empty."""
        for queue in self.queues.values():
            for call in queue:
                if not call.future.done():
                    call.future.set_exception(exc)
        self.queues.clear()
        self.pending = self.alone = 0

    def push(self, call: _Call, *, front: bool = False) -> None:
        self.arrived += not front
        if not front and self.returning:
            self.returning -= 1
        queue = self.queues.setdefault(call.client, deque())
        if front:
            queue.appendleft(call)
            self.queues.move_to_end(call.client, last=False)
        else:
            queue.append(call)
        self.pending += 1
        self.alone += not call.packable

    def take(self, limit: int) -> list[_Call]:
        """Round robin: one call from each client in turn, up to ``limit``.

        A call that cannot be packed goes alone, and only as the first of a request.
        """
        taken: list[_Call] = []
        while self.pending and len(taken) < limit:
            progressed = False
            for client in list(self.queues):
                queue = self.queues[client]
                if not queue:
                    del self.queues[client]
                    continue
                call = queue[0]
                if call.future.done():  # the caller gave up
                    queue.popleft()
                    self.pending -= 1
                    self.alone -= not call.packable
                    progressed = True
                    continue
                if not call.packable and taken:
                    continue
                queue.popleft()
                self.pending -= 1
                self.alone -= not call.packable
                self.queues.move_to_end(client)  # the next request starts with someone else
                taken.append(call)
                progressed = True
                if not call.packable or len(taken) >= limit:
                    return taken
            if not progressed:
                break
        return taken


class Scheduler:
    def __init__(
        self,
        limiter: Limiter,
        upstream: Upstream,
        *,
        operating: OperatingBudget | None = None,
        plan: Callable[[Portal], Plan] = portal_plan,
        max_wait: float = 60.0,
        queue_limit: int = 10_000,
        not_batched: frozenset[str] = frozenset(),
    ) -> None:
        """``limiter``: the portals' request budgets; ``upstream``: what requests are sent
        through; ``operating``: checked when a call's turn comes (a method Bitrix24 blocked
        meanwhile is not sent); ``plan``: a portal's budget (its own, but in tests)."""
        self._limiter = limiter
        self._upstream = upstream
        self._operating = operating
        self._plan = plan
        self._max_wait = max_wait
        self._queue_limit = queue_limit
        self._not_batched = frozenset(m.lower() for m in not_batched) | {"batch"}
        self._lanes: dict[int, _Lane] = {}

    async def submit(
        self,
        portal: Portal,
        client: str,
        method: str,
        params: Mapping[str, Any],
        *,
        on_send: SendHook | None = None,
    ) -> dict[str, Any]:
        plan = self._plan(portal)
        lane = self._lanes.get(portal.id)
        if lane is None:
            lane = self._lanes[portal.id] = _Lane(portal)
        lane.portal = portal
        if lane.pending >= self._queue_limit:
            raise RateLimited(
                f"portal {portal.name!r} has {lane.pending} calls waiting", 1.0 / plan.rate
            )
        if plan.rate > 0:
            # Requests ahead of this one: a request per unpackable call, one per 50 others;
            # the first few fit in the bucket at once, the rest drain at `rate` a second.
            ahead = lane.alone + (lane.pending - lane.alone) // BATCH_LIMIT + 1
            estimate = max(0.0, (ahead - max(1, plan.burst - 2)) / plan.rate)
            if estimate > self._max_wait:
                raise RateLimited(
                    f"portal {portal.name!r} is busy: the wait would be about {estimate:.0f} s",
                    estimate,
                )
        # A call naming its own auth_connector goes alone: inside a batch Bitrix24 reads
        # only the batch's (the portal's, docs/events.md).
        packable = (
            method.lower() not in self._not_batched
            and (not params or batchable(params))
            and not names_connector(params)
        )
        call = _Call(
            client,
            method,
            params,
            asyncio.get_running_loop().create_future(),
            asyncio.get_running_loop().time(),
            packable,
            on_send=on_send,
        )
        lane.push(call)
        QUEUE_DEPTH.labels(portal.name).set(lane.pending)
        lane.wake.set()
        if lane.worker is None or lane.worker.done():
            lane.worker = asyncio.create_task(self._run(lane, plan), name=f"lane-{portal.name}")
        return await asyncio.shield(call.future)

    def queue(self, portal_id: int) -> tuple[int, int]:
        """A portal's queue right now, in this process: calls waiting, requests on their way."""
        lane = self._lanes.get(portal_id)
        return (0, 0) if lane is None else (lane.pending, len(lane.sending))

    async def book(self, portal: Portal) -> None:
        """A slot of the portal's budget for a call that goes alone, outside the lanes (a
        REST 3.0 call): wait for it, or 429 when that would take longer than ``max_wait``."""
        plan = self._plan(portal)
        if plan.rate <= 0:
            return
        wait = await self._limiter.reserve(
            budget_key(portal), plan.rate, plan.burst, self._max_wait
        )
        if wait is None:
            raise RateLimited(f"portal {portal.name!r} is busy", self._max_wait)
        if wait:
            await asyncio.sleep(wait)

    async def _run(self, lane: _Lane, plan: Plan) -> None:
        try:
            await self._drain(lane, plan)
        except Exception as exc:  # a caller must never wait for a lane that has stopped
            log.exception("portal=%s the queue stopped", lane.portal.name)
            lane.fail_all(exc)
            QUEUE_DEPTH.labels(lane.portal.name).set(0)

    async def _drain(self, lane: _Lane, plan: Plan) -> None:
        """Send what waits, a request at a time, as the portal's budget allows.

        Each request spends a slot of the budget whether it carries 1 call or 50, so a
        part-filled request is held back in two cases only: while another request is on
        its way (until that request is answered, the calls that arrive meanwhile joining
        this one, and for one drain interval at most: on a slow portal a request takes
        seconds, and a call's wait must not grow with it), and, under a heavy or growing
        load, for at most :data:`LINGER` after a request was answered that was full or
        saw more calls arrive than it carried, and more than :data:`GROWING` (its callers
        come back with their next calls). A call on a quiet portal goes at once.

        As many requests are on their way at once as the budget allows: a full queue is
        sent at the bucket's pace whatever each request takes. Packed requests are billed
        to the method ``batch`` as a whole: while the ones on their way would take
        ``batch`` near its operating-time budget (:meth:`_batch_wait`), calls go one a
        request, each billed to its own method, until part of that budget frees up.
        """
        key = budget_key(lane.portal)
        loop = asyncio.get_running_loop()
        while lane.pending:
            rate = plan.rate / 2 if loop.time() < lane.slow_until else plan.rate
            if lane.sending and lane.part_filled() and not lane.alone:
                held = lane.oldest() + (1 / rate if rate > 0 else 0.0) - loop.time()
                if held > 0:
                    lane.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lane.wake.wait(), held)
                    continue
            wait = await self._limiter.reserve(key, rate, plan.burst, math.inf)
            if wait:
                await asyncio.sleep(wait)
            await lane.linger()
            gathering = lane.sending or loop.time() < lane.linger_until
            if lane.alone and lane.part_filled() and gathering:
                # The packed calls keep gathering; the one that cannot join them goes now.
                calls = lane.take_alone()
            elif self._batch_wait(lane) > 0:
                # `batch` is near its operating-time budget: a call a request, billed to
                # its own method, until part of the budget frees up.
                calls = lane.take(1)
            else:
                calls = lane.take(lane.packing_limit())
            QUEUE_DEPTH.labels(lane.portal.name).set(lane.pending)
            if not calls:
                continue
            task = asyncio.create_task(self._send(lane, calls))
            lane.sending.add(task)
            task.add_done_callback(lane.finished)

    async def _send(self, lane: _Lane, calls: list[_Call]) -> None:
        portal = lane.portal
        calls = self._unblocked(portal, calls)
        calls = await _announced(calls)
        if not calls:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        arrived = lane.arrived
        waits = [now - call.enqueued for call in calls]
        for wait in waits:
            QUEUE_WAIT.labels(portal.name).observe(wait)
        BATCH_SIZE.labels(portal.name).observe(len(calls))
        # The queue's figures in the log, one line per request to Bitrix24 (not per call).
        log.info(
            "portal=%s request calls=%d longest_wait_ms=%.0f still_queued=%d",
            portal.name,
            len(calls),
            max(waits) * 1000,
            lane.pending,
        )
        try:
            if len(calls) == 1:
                body = await self._upstream.send(portal, calls[0].method, calls[0].params)
                _resolve(calls[0], body)
                return
            packed = encode_batch({f"c{i}": (c.method, c.params) for i, c in enumerate(calls)})
            lane.packed_in_flight += 1
            try:
                body = await self._upstream.send(portal, "batch", packed)
            finally:
                lane.packed_in_flight -= 1
            answer = BatchAnswer.of(body)
            lane.learn(body, answer)
            refused = _split(calls, answer)
            if refused:
                await self._refused(lane, refused)
        except QueryLimitExceeded:
            await self._refused(lane, calls)
        except Exception as exc:  # every caller of this request gets the request's error
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(exc)
        finally:
            # Under load, the callers just answered are about to send their next calls: a
            # full request means a heavy load; more arrivals meanwhile than it carried, a
            # growing one. A few arrivals are a light load's noise, not growth.
            grew = lane.arrived - arrived > max(len(calls), GROWING)
            if len(calls) >= BATCH_LIMIT or grew:
                # Each caller answered comes back with its next call. Waiting for all of
                # them (linger) rather than sending the first 50 back keeps the quickest
                # callers from lapping the others: the last requests would then carry
                # only the laggards' calls, part-filled, each a slot of the budget.
                lingering = loop.time() < lane.linger_until
                lane.returning = (lane.returning if lingering else 0) + len(calls)
                lane.linger_until = loop.time() + LINGER

    def _batch_wait(self, lane: _Lane) -> float:
        """How long until a packed request fits ``batch``'s operating-time budget (0: now):
        the requests on their way will each be charged about what the last ones were."""
        if self._operating is None or lane.pending - lane.alone < 2:
            return 0.0
        charged = (lane.packed_in_flight + 1) * lane.batch_time
        return self._operating.wait_for_room(lane.portal, "batch", charged)

    def _unblocked(self, portal: Portal, calls: list[_Call]) -> list[_Call]:
        """The calls still to send: one whose method Bitrix24 blocked (or nearly) for its
        operating time while the call waited gets the block's 429 instead."""
        if self._operating is None:
            return calls
        kept = []
        for call in calls:
            blocked = self._operating.refusal(portal, call.method)
            if blocked is None:
                kept.append(call)
            elif not call.future.done():
                call.future.set_exception(blocked)
        return kept

    async def _refused(self, lane: _Lane, calls: list[_Call]) -> None:
        """Not executed: pause, slow down, and put the calls back at the front of their queues."""
        portal = lane.portal
        REFUSED.labels(portal.name).inc()
        log.warning(
            "portal=%s Bitrix24 refused a request (QUERY_LIMIT_EXCEEDED); slowing down",
            portal.name,
        )
        lane.slow_until = asyncio.get_running_loop().time() + SLOW_FOR
        plan = self._plan(portal)
        try:
            # Bitrix24's bucket is full: count ours full, and send nothing for a moment.
            # (At the slowed rate the lane books at next, so the pause lasts what it says.)
            await self._limiter.pause(budget_key(portal), plan.rate / 2, plan.burst, REFUSED_PAUSE)
        except Exception:  # the calls go back in the queue all the same
            log.exception("portal=%s could not pause the request budget", portal.name)
        for call in reversed(calls):
            call.refusals += 1
            if call.future.done():
                continue
            if call.refusals > MAX_REFUSALS:
                call.future.set_exception(
                    RateLimited(
                        "Bitrix24 keeps refusing requests: another application drains the budget",
                        SLOW_FOR,
                    )
                )
            else:
                lane.push(call, front=True)
        QUEUE_DEPTH.labels(portal.name).set(lane.pending)
        if lane.pending and (lane.worker is None or lane.worker.done()):
            lane.worker = asyncio.create_task(self._run(lane, plan))

    async def close(self) -> None:
        for lane in self._lanes.values():
            if lane.worker is not None:
                lane.worker.cancel()
            for task in list(lane.sending):
                task.cancel()


def _smooth(old: float, new: float) -> float:
    """A running figure that follows the latest values and forgets an odd one."""
    return new if old <= 0 else 0.5 * old + 0.5 * new


async def _announced(calls: list[_Call]) -> list[_Call]:
    """Run the calls' :attr:`_Call.on_send` hooks, all at once (a job's marks of one request
    become one write): the calls whose hook failed get its error and are not sent."""
    hooked = [call for call in calls if call.on_send is not None]
    if not hooked:
        return calls
    done = await asyncio.gather(
        *(call.on_send() for call in hooked if call.on_send is not None), return_exceptions=True
    )
    failed: set[int] = set()
    for call, outcome in zip(hooked, done, strict=True):
        if isinstance(outcome, BaseException):
            failed.add(id(call))
            if not call.future.done():
                call.future.set_exception(outcome)
    return [call for call in calls if id(call) not in failed]


def _resolve(call: _Call, body: dict[str, Any]) -> None:
    if not call.future.done():
        call.future.set_result(body)


def _split(calls: list[_Call], answer: BatchAnswer) -> list[_Call]:
    """Give each caller of a batch what Bitrix24 answered for its command; return the calls
    whose commands Bitrix24 refused unexecuted (``QUERY_LIMIT_EXCEEDED``), to send again."""
    refused: list[_Call] = []
    for i, call in enumerate(calls):
        if call.future.done():
            continue
        outcome = answer.outcome(f"c{i}")
        if isinstance(outcome, QueryLimitExceeded):
            refused.append(call)
        elif isinstance(outcome, Exception):
            call.future.set_exception(outcome)
        else:
            call.future.set_result(outcome)
    return refused
