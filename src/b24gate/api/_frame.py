"""The frame a client's request runs in, and who the caller is.

Every route that serves a client (``/api/v1/*``, ``/rest/``, ``/bitrix/install``) runs its
work inside a :class:`Frame`: the timer starts, an error becomes the answer in the surface's
shape (:func:`._errors.error_response`), and the one log line per call is written, whatever
happened. Who calls comes from :func:`caller`: the gateway's reads are brought up to date
first (a key revoked a moment ago is refused at once), then the key is checked and the
address taken, ``X-Forwarded-For`` counting only from a trusted proxy.

    with Frame("api", "/api/v1/call") as frame:
        who = await caller(request, gw)
        frame.who = who.client.name
        ...
        frame.served(result)
        return json_response(...)
    return frame.refusal

The frame is a plain (synchronous) context manager: on the hot path it costs two method
calls and no await.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from fastapi import Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from .._logs import fields_text
from ..core import (
    CALL_PORTAL,
    Activity,
    Gateway,
    authenticate,
    bearer,
    mask_keys,
    peer_address,
)
from ..errors import B24GateError
from ..store import Client
from ._errors import Shape, error_response, gateway_shape
from ._parse import too_deep

call_log = logging.getLogger("b24gate.calls")
# The status a call's line carries when the client closed the connection first (nginx's).
CLIENT_CLOSED = 499


@dataclass(slots=True)
class _Seen:
    """What :func:`caller` learnt of the request, for the frame's record of the call
    (:class:`b24gate.core.Activity`): where the record goes, the address, the client."""

    activity: Activity
    address: str | None
    client_id: int | None = None


# Set by caller(), read when the frame ends: a frame reaches its gateway only through it.
_SEEN: ContextVar[_Seen | None] = ContextVar("b24gate_seen", default=None)


class Measured(Protocol):
    """What served a call: the portal it went to and the time spent waiting for Bitrix24."""

    @property
    def portal(self) -> str: ...

    @property
    def upstream_ms(self) -> float: ...


class Frame:
    """One request's frame: the timer, the error mapping, the one log line.

    ``surface`` names the surface in the log line (``api``, ``rest``); ``None`` writes no
    line (an install event is no client's call). ``route`` names the route where an
    unexpected error is logged, on ``log``. After the ``with`` block has swallowed an error,
    :attr:`refusal` is the answer to return.
    """

    __slots__ = (
        "_deferred",
        "_log",
        "_shape",
        "_started",
        "code",
        "method",
        "refusal",
        "route",
        "source",
        "status",
        "surface",
        "who",
    )

    refusal: Response

    def __init__(
        self,
        surface: str | None,
        route: str,
        shape: Shape = gateway_shape,
        *,
        log: logging.Logger = call_log,
    ) -> None:
        self._started = time.perf_counter()
        self._shape = shape
        self._log = log
        self._deferred = False
        self.surface = surface
        self.route = route
        self.who = "-"
        self.method = "-"
        self.status = 500
        self.code: str | None = None
        self.source: Measured | None = None
        # A request's frame starts with nothing known of its caller or portal.
        _SEEN.set(None)
        CALL_PORTAL.set(None)

    def __enter__(self) -> Frame:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        # An Exception becomes the answer; anything else (the task cancelled, the server
        # stopping) goes on up, with the line written as a 500 as it stands.
        if isinstance(exc, ClientDisconnect):
            # The client hung up before its body was in: nobody reads an answer, and it is
            # no fault of the gateway (no traceback, which anyone could make it write by
            # the thousand). The line says 499, nginx's "client closed request".
            self.refusal = Response(status_code=CLIENT_CLOSED)
            self.status = CLIENT_CLOSED
        elif isinstance(exc, Exception):
            known = self.known(exc)
            self.code = known.code
            self.refusal = error_response(known, self._shape)
            self.status = self.refusal.status_code
        if not self._deferred:
            self._line()
        return isinstance(exc, Exception)

    def served(self, source: Measured) -> None:
        """The call succeeded: a 200, with ``source``'s portal and upstream time."""
        self.source = source
        self.status = 200

    def known(self, exc: Exception) -> B24GateError:
        """``exc`` as an error of the tree. RecursionError is the client's: the parsers cap
        nesting, and should anything still recurse this deep, the input did it (a 400, not
        a 500 with a traceback per request). Anything else unexpected is logged, with its
        traceback, and answered as the gateway's own 500."""
        if isinstance(exc, B24GateError):
            return exc
        if isinstance(exc, RecursionError):
            return too_deep("a parameter")
        # The client chose its name and the method: escaped, as in the call line.
        where = {"route": self.route, "client": self.who, "method": self.method}
        self._log.error("unexpected error: %s", fields_text(where), exc_info=exc)
        return B24GateError("internal error; see the gateway's log")

    def later(self) -> Callable[[int], None]:
        """Leave the log line to a streamed answer, which calls the function returned with
        the status it ended with, once it has ended."""
        self._deferred = True

        def finish(status: int) -> None:
            self.status = status
            self._line()

        return finish

    def _line(self) -> None:
        """The one log line per call: who, where, what, how it ended and how long it took.

        Never the parameters, a token or a key. The client chose its name and the method, so
        each value is escaped (:func:`b24gate._logs.fields_text`) and JSON lines get them as
        fields.
        """
        if self.surface is None:
            return
        source = self.source
        fields = {
            "client": self.who,
            "portal": "-" if source is None else source.portal,
            "method": mask_keys(self.method),
            "status": self.status,
            "total_ms": round((time.perf_counter() - self._started) * 1000, 1),
            "upstream_ms": 0.0 if source is None else round(source.upstream_ms, 1),
            "surface": self.surface,
        }
        call_log.info("%s", fields_text(fields), extra={"fields": fields})
        seen = _SEEN.get()
        if seen is not None and self.status != CLIENT_CLOSED:
            seen.activity.seen(
                surface=self.surface,
                status=self.status,
                code=self.code,
                client_id=seen.client_id,
                client=None if self.who == "-" else self.who,
                portal=source.portal if source is not None else CALL_PORTAL.get(),
                method=None if self.method == "-" else self.method,
                address=seen.address,
            )


@dataclass(frozen=True, slots=True)
class Caller:
    """A request's authenticated client and its address."""

    client: Client
    address: str | None


async def caller(request: Request, gw: Gateway, key: str | None = None) -> Caller:
    """Who sends ``request``: the client of ``key`` (a key the surface found itself, as
    ``/rest/`` does in a path, query or body), else of its ``Authorization: Bearer``."""
    seen = _Seen(gw.activity, peer(request, gw))
    _SEEN.set(seen)
    await gw.reads.refresh()
    if key is None:
        key = bearer(request.headers.get("authorization"))
    client = await authenticate(gw.reads, key)
    seen.client_id = client.id
    return Caller(client, seen.address)


def peer(request: Request, gw: Gateway) -> str | None:
    """The address ``request`` comes from (``X-Forwarded-For`` only from a trusted proxy)."""
    return peer_address(
        request.client.host if request.client else None,
        request.headers.getlist("x-forwarded-for"),
        gw.settings.trusted_proxies,
    )
