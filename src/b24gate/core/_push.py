"""Events pushed to a consumer's own HTTP service (a 1C HTTP service), signed, in order,
each page until the service accepts it (docs/events.md#push).

A push is the consumer's long poll turned around: the page after the key's cursor that
the key may see goes as one POST; a 2xx answer acknowledges it (the key's cursor moves),
anything else is tried again after a growing pause (1 s doubling to 5 min). The body is
signed with the push's secret: ``X-B24gate-Signature: sha256=<hex>`` over
``<X-B24gate-Timestamp>.<body>``, so that the service can refuse forgeries and replays.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import orjson

from ..bitrix import is_loopback
from ..errors import InvalidSetting, LockTimeout, UnknownClient, UnknownPortal
from ..store import Push, Store
from ._events import Events, event_allowed, event_view

log = logging.getLogger("b24gate.events")

PAGE = 100
PUSH_TIMEOUT = 10.0
FIRST_PAUSE = 1.0
MAX_PAUSE = 300.0
# How often the pusher looks for events other replicas kept.
LOOK_EVERY = 1.0
# The longest a replica pushes one consumer in a round (the push lock's lease is 300 s).
PUSH_SPELL = 60.0
SIGNATURE = "X-B24gate-Signature"
TIMESTAMP = "X-B24gate-Timestamp"


def push_url(url: str, *, allow_http: bool = False) -> str:
    """A push target: https, or http on loopback, or any http with ``allow_http`` (a
    service inside the company's network)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname or len(url) > 512:
        raise InvalidSetting("url", "the push URL must be an http(s) URL of at most 512 characters")
    if parts.scheme == "http" and not allow_http and not is_loopback(parts.hostname):
        raise InvalidSetting(
            "url", "the push URL must be https (or pass --allow-http for a service on your network)"
        )
    return url.strip()


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


@dataclass
class _Backoff:
    pause: float = 0.0
    until: float = 0.0


class Pusher:
    def __init__(
        self,
        store: Store,
        events: Events,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._events = events
        self._session = session
        self._clock = clock
        self._backoff: dict[tuple[int, int], _Backoff] = {}

    async def configure(
        self, client_name: str, portal_name: str, url: str, *, allow_http: bool = False
    ) -> str:
        """Push ``client_name``'s events of ``portal_name`` to ``url``; the new secret."""
        target = push_url(url, allow_http=allow_http)
        client = await self._store.client_by_name(client_name)
        if client is None:
            raise UnknownClient(f"no active client named {client_name!r}")
        portal = await self._store.portal(portal_name)
        if portal is None or portal.name not in client.portals:
            raise UnknownPortal(f"client {client_name!r} may not use a portal {portal_name!r}")
        secret = secrets.token_hex(32)
        await self._store.events.set_push(client.id, portal.id, target, secret, time.time())
        return secret

    async def remove(self, client_name: str, portal_name: str) -> bool:
        # A revoked key's push may be removed too.
        client = next((c for c in await self._store.clients() if c.name == client_name), None)
        portal = await self._store.portal(portal_name)
        if client is None or portal is None:
            return False
        return await self._store.events.remove_push(client.id, portal.id)

    async def run(self) -> None:
        while True:
            try:
                await self.round()
            except Exception:  # a failed round must not end the loop; the next one retries
                log.exception("the event push round failed")
            await self._events.any_arrival(LOOK_EVERY)

    async def round(self) -> int:
        """Push what each consumer has not acknowledged yet; pages accepted."""
        accepted = 0
        for push in await self._store.events.pushes():
            key = (push.client_id, push.portal_id)
            backoff = self._backoff.setdefault(key, _Backoff())
            if self._clock() < backoff.until:
                continue
            try:
                async with self._store.events.push_lock(push.client_id, push.portal_id):
                    accepted += await self._push(push, backoff)
            except LockTimeout:
                continue  # another replica pushes this one
        return accepted

    async def _push(self, push: Push, backoff: _Backoff) -> int:
        client = await self._store.client_by_id(push.client_id)
        portal = next((p for p in await self._store.portals() if p.id == push.portal_id), None)
        if client is None or portal is None or not client.events:
            return 0  # a revoked key, or one without events: nothing leaves
        accepted = 0
        # Within a share of the push lock's lease (a lease row on SQLite is not renewed):
        # a long backlog goes on in the next round.
        until = self._clock() + PUSH_SPELL
        while self._clock() < until:
            cursor = await self._store.events.cursor(client.id, portal.id) or 0
            rows = await self._store.events.read(portal.id, cursor, PAGE)
            if not rows:
                return accepted
            seen = [e for e in rows if event_allowed(client.events, e.event)]
            following = rows[-1].seq
            if seen:
                body = orjson.dumps(
                    {
                        "portal": portal.name,
                        "events": [event_view(e) for e in seen],
                        "next": following,
                        # Purged before they were pushed (the service was away too long).
                        "missed": rows[0].seq - cursor - 1,
                    }
                )
                failure = await self._post(push, body)
                if failure is not None:
                    backoff.pause = min(MAX_PAUSE, max(FIRST_PAUSE, backoff.pause * 2))
                    backoff.until = self._clock() + backoff.pause
                    log.warning(
                        "events of portal=%s for client=%s not pushed (%s); again in %g s",
                        portal.name,
                        client.name,
                        failure,
                        backoff.pause,
                    )
                    return accepted
                backoff.pause = 0.0
                accepted += 1
            if not await self._store.events.advance(
                client.id, portal.id, cursor, following, time.time()
            ):
                return accepted  # the cursor moved meanwhile (the key read or acknowledged)
        return accepted

    async def _post(self, push: Push, body: bytes) -> str | None:
        """None when the service accepted the page; else why not (no URL, no secret)."""
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP: stamp,
            SIGNATURE: signature(push.secret, stamp, body),
        }
        try:
            async with self._session.post(
                push.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=PUSH_TIMEOUT),
                allow_redirects=False,
            ) as answer:
                if 200 <= answer.status < 300:
                    return None
                return f"HTTP {answer.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__
