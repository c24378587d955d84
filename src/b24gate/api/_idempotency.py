"""``Idempotency-Key`` on ``/api/v1/call``, ``/api/v1/batch`` and ``/rest/`` (docs/http-api.md).

A client that cannot tell whether its write happened (the connection dropped, 1C restarted)
sends it again with the same key, and gets the first answer back instead of a second deal.
The key comes as the ``Idempotency-Key`` header or, for clients that can change only the
URL (1C's exchange modules), the ``idempotency_key`` query parameter; it is the client's own
(one key's space per client key) and is stored only as its SHA-256. The store
(:class:`b24gate.store.IdempotencyStore`) holds one row per key: ``running`` while the first
request is on its way, then ``done`` with its answer, sealed, until ``idempotency_ttl``.

:func:`once` runs a handler's work under a key:

- a stored answer is replayed byte for byte, with ``Idempotent-Replayed: true``;
- the same key with another request (method, path, query, body) is 422;
- a key whose first request still runs waits up to ``idempotency_wait`` for its answer,
  else 409 ``idempotency_key_in_use``;
- a key whose first request died with its gateway is run again only when the request only
  reads; a write gets 409 ``outcome_unknown``: it may have been done;
- a refusal made before anything was sent (the request's own 4xx, a rate limit, a portal
  that needs authorization, a lock) is not kept: the retry with the same key runs afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request
from starlette.responses import Response

from .._php import unquote
from ..core import Gateway
from ..errors import (
    B24GateError,
    CredentialsRejected,
    Forbidden,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IdempotentOutcomeUnknown,
    InvalidIdempotencyKey,
    LockTimeout,
    NeedsAuthorization,
    OAuthError,
    OperationTimeLimit,
    QueryLimitExceeded,
    RateLimited,
    RequestError,
    TokenRejected,
    Unauthorized,
    UnknownClient,
    UnknownPortal,
    UpstreamUnreachable,
)
from ..store import Begun, IdempotencyStore, StoredAnswer
from ._errors import NO_STORE, Shape, error_response
from ._frame import Frame

log = logging.getLogger("b24gate.idempotency")

HEADER = "idempotency-key"
PARAMETER = "idempotency_key"
REPLAYED = "Idempotent-Replayed"
# 1 to 255 printable ASCII characters, no space: what fits any header and any log.
_KEY = re.compile(r"[\x21-\x7e]{1,255}")
# How a waiting request looks at the store again: soon at first, then every POLL_MAX.
POLL_FIRST = 0.05
POLL_MAX = 0.25
# Errors that prove Bitrix24 did nothing, even when a request had left: the refusals of
# the request itself and of the gateway, and Bitrix24's "not executed". Kept, they would
# turn a retry that should run into a replay of a refusal for a day.
_NOT_DONE: tuple[type[B24GateError], ...] = (
    RequestError,
    Unauthorized,
    Forbidden,
    UnknownPortal,
    UnknownClient,
    RateLimited,
    NeedsAuthorization,
    LockTimeout,
    OAuthError,
    TokenRejected,
    CredentialsRejected,
    QueryLimitExceeded,
    OperationTimeLimit,
)

SendHook = Callable[[], Awaitable[None]]
Run = Callable[[SendHook | None], Awaitable[Response]]


@dataclass(frozen=True)
class KeyQuery:
    """A query string with its ``idempotency_key`` pairs taken out."""

    values: tuple[str, ...]  # the parameter's decoded values, in order
    rest: str  # the query without them, as sent
    nested: bool  # a pair `idempotency_key[...]`: an array, which no key is


def split_query(query: str) -> KeyQuery:
    """The ``idempotency_key`` parameter of ``query``, and the query without it. A name is
    matched as PHP reads it (decoded, leading spaces dropped, ``.`` and space as ``_``), so
    that nothing the portal would see as ``idempotency_key`` is left in the query."""
    if PARAMETER[:4] not in query.lower() and "%" not in query:
        return KeyQuery((), query, False)  # the usual case: not a byte decoded
    values: list[str] = []
    kept: list[str] = []
    nested = False
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        php_name, array = _php_name(unquote(name))
        if php_name != PARAMETER:
            kept.append(pair)
        elif array:
            nested = True
        else:
            values.append(unquote(value))
    if not values and not nested:
        return KeyQuery((), query, False)
    return KeyQuery(tuple(values), "&".join(kept), nested)


def _php_name(name: str) -> tuple[str, bool]:
    """The variable a decoded query name sets in PHP, and whether it is an array
    (``name[...]``): leading spaces dropped, ``.`` and space read as ``_``, and an
    unclosed ``[`` as well (``a[b`` is ``a_b``), as :mod:`b24gate._php` reads names."""
    name = name.lstrip(" ")
    open_at = name.find("[")
    if open_at < 0:
        return _mangled(name), False
    if "]" in name[open_at + 1 :]:
        return _mangled(name[:open_at]), True
    return _mangled(name[:open_at]) + "_" + _mangled(name[open_at + 1 :]).replace("[", "_"), False


def _mangled(name: str) -> str:
    return name.replace(" ", "_").replace(".", "_")


def request_key(request: Request, query: KeyQuery) -> str | None:
    """The request's idempotency key (header or query parameter), or ``None``: 400 when it
    is malformed, or when the request carries two different ones."""
    if query.nested:
        raise InvalidIdempotencyKey("`idempotency_key` must be one value, not an array")
    given = [*request.headers.getlist(HEADER), *query.values]
    if not given:
        return None
    key = given[0]
    if any(other != key for other in given[1:]):
        raise InvalidIdempotencyKey("the request carries two different idempotency keys")
    if not _KEY.fullmatch(key):
        raise InvalidIdempotencyKey(
            "an idempotency key is 1 to 255 printable ASCII characters, without spaces"
        )
    return key


def fingerprint(verb: str, path: str, query: str, body: bytes) -> str:
    """What makes two requests the same one: the method, the path, the query's pairs in
    any order (the key's own left out) and the body, each part length-prefixed so that no
    two different requests run together into one text."""
    digest = hashlib.sha256()
    pairs = "&".join(sorted(pair for pair in query.split("&") if pair))
    for part in (verb.upper().encode(), path.encode(), pairs.encode()):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    digest.update(len(body).to_bytes(8, "big"))
    digest.update(body)
    return digest.hexdigest()


@dataclass(frozen=True)
class Keyed:
    """A request's idempotency key, as the store knows it: hashed, with the fingerprint."""

    key_hash: str
    fingerprint: str


def keyed(request: Request, body: bytes, query: KeyQuery | None = None) -> Keyed | None:
    """The :class:`Keyed` of ``request`` (whose body is ``body``), or ``None`` without a key.
    ``query``: the split query when the surface made it already (``/rest/``)."""
    if query is None:
        # The hot path (/api/v1/call) reads the query as it came, without building a URL.
        query = split_query(request.scope.get("query_string", b"").decode("latin-1"))
    key = request_key(request, query)
    if key is None:
        return None
    return Keyed(
        hashlib.sha256(key.encode("ascii")).hexdigest(),
        fingerprint(request.method, request.url.path, query.rest, body),
    )


class _Sending:
    """Whether the request's call has been handed on: its ``on_send`` hook ran. Once the
    request is abandoned before that, the hook refuses, and the call is never sent."""

    __slots__ = ("sent", "stopped")

    def __init__(self) -> None:
        self.sent = False
        self.stopped = False

    async def hook(self) -> None:
        if self.stopped:
            raise B24GateError("the request was abandoned before it was sent")
        self.sent = True


@dataclass(frozen=True)
class _Place:
    """One key's row: where :func:`once` reads and writes it."""

    store: IdempotencyStore
    holder: str  # this process (gw.holder), as the rows it holds name it
    client_id: int
    key: Keyed
    lease: float
    ttl: float

    async def begin(self) -> Begun:
        return await self.store.begin(
            self.client_id,
            self.key.key_hash,
            self.key.fingerprint,
            holder=self.holder,
            now=time.time(),
            lease=self.lease,
            ttl=self.ttl,
        )

    async def take_over(self) -> bool:
        return await self.store.take_over(
            self.client_id, self.key.key_hash, holder=self.holder, now=time.time(), lease=self.lease
        )

    async def keep_renewed(self) -> None:
        """Renew the lease every third of it while the first request runs: a long batch
        outlives one lease, and must not look abandoned."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.store.renew(
                    self.client_id,
                    self.key.key_hash,
                    holder=self.holder,
                    now=time.time(),
                    lease=self.lease,
                )
            except Exception:  # the next round tries again; the lease has two more thirds
                log.warning("could not renew an idempotency key's lease", exc_info=True)

    async def finish(self, answer: StoredAnswer) -> None:
        try:
            await self.store.finish(
                self.client_id,
                self.key.key_hash,
                answer,
                holder=self.holder,
                now=time.time(),
                ttl=self.ttl,
            )
        except Exception:
            # The answer still goes to the client. The row stays `running` until its lease
            # ends; a retry then gets 409 outcome_unknown for a write, never a second one.
            log.exception("could not store an idempotency key's answer")

    async def release(self) -> None:
        try:
            await self.store.release(self.client_id, self.key.key_hash, holder=self.holder)
        except Exception:
            log.exception("could not release an idempotency key")


async def _claim(place: _Place, *, reads: bool, wait: float) -> Begun:
    """The key's state, waiting up to ``wait`` s while its first request runs. ``new``: this
    request holds the row and runs (so does a read whose first request was abandoned)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = POLL_FIRST
    while True:
        begun = await place.begin()
        if begun.kind == "abandoned" and reads:
            if await place.take_over():
                return Begun("new")
            begun = Begun("running")  # another request took it over first: wait for it
        if begun.kind != "running":
            return begun
        left = deadline - loop.time()
        if left <= 0:
            return begun
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, POLL_MAX)


def replayed(answer: StoredAnswer) -> Response:
    """A stored answer as it was first given, marked as a replay."""
    return Response(
        answer.body,
        status_code=answer.status,
        headers={**NO_STORE, "content-type": answer.content_type, REPLAYED: "true"},
    )


def stored(response: Response) -> StoredAnswer:
    return StoredAnswer(
        response.status_code, response.headers.get("content-type", ""), bytes(response.body)
    )


def not_done(error: B24GateError) -> bool:
    """``error`` proves that Bitrix24 did nothing (so the answer is not kept)."""
    if isinstance(error, UpstreamUnreachable):
        return not error.sent
    return isinstance(error, _NOT_DONE)


async def once(
    gw: Gateway,
    frame: Frame,
    shape: Shape,
    key: Keyed | None,
    client_id: int,
    *,
    reads: bool,
    run: Run,
    hooked: bool = True,
) -> Response:
    """``run`` under ``key`` (just ``run`` without one), for the client ``client_id``.

    ``run`` gets an ``on_send`` hook to pass to the dispatcher (``None`` without a key);
    ``hooked=False`` says ``run`` uses none, and raises only before anything is sent (a
    bulk request, admitted as a whole first). ``reads``: every method of the request only
    reads, so that it may run again when its first run was abandoned. ``shape``: the
    surface's words for an error, in which an error answer is stored and replayed.
    """
    if key is None:
        return await run(None)
    settings = gw.settings
    place = _Place(
        gw.store.idempotency,
        gw.holder,
        client_id,
        key,
        settings.job_lease,
        settings.idempotency_ttl,
    )
    begun = await _claim(place, reads=reads, wait=settings.idempotency_wait)
    if begun.kind == "new":
        return await _first(place, frame, shape, run, hooked=hooked)
    if begun.kind == "replay":
        assert begun.answer is not None  # the store gives a replay its answer
        frame.status = begun.answer.status
        return replayed(begun.answer)
    if begun.kind == "mismatch":
        raise IdempotencyKeyReused(
            "this idempotency key was used with another request; a new request needs a new key"
        )
    if begun.kind == "abandoned":
        raise IdempotentOutcomeUnknown(
            "the first request with this idempotency key was on its way when its gateway "
            "stopped; it may have been done, so it is not run again: check the portal, and "
            "send a new request with a new key if it was not"
        )
    busy = error_response(
        IdempotencyKeyInUse(
            "the first request with this idempotency key is still running; "
            "try again later for its answer"
        ),
        shape,
    )
    # error_response advises a wait only for a rate limit or a 503; this one is worth one.
    busy.headers["Retry-After"] = "1"
    frame.status = busy.status_code
    return busy


async def _first(place: _Place, frame: Frame, shape: Shape, run: Run, *, hooked: bool) -> Response:
    """Run the first request of a key, its lease renewed meanwhile, and keep its answer (or
    release the key when nothing was done)."""
    sending = _Sending()
    renewing = asyncio.create_task(place.keep_renewed())
    try:
        response = await run(sending.hook if hooked else None)
    except Exception as exc:
        await _stop(renewing)
        error = frame.known(exc)
        if not sending.sent or not_done(error):
            await place.release()
        else:
            await place.finish(stored(error_response(error, shape)))
        if error is exc:
            raise
        raise error from exc
    except BaseException:
        # Cancelled (the server stops). A call not handed on yet never will be (the hook
        # refuses it), so the key is free; one on its way may be done: the row is left to
        # its lease, after which a write's retry gets outcome_unknown.
        await _stop(renewing)
        sending.stopped = True
        if hooked and not sending.sent:
            await asyncio.shield(place.release())
        raise
    await _stop(renewing)
    await place.finish(stored(response))
    return response


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
