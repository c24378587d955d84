"""The gateway's parts wired together once, from settings: store, upstream session, tokens,
and the path of a call (operating-time budget, forwarder, scheduler, dispatcher)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import aiohttp

from ..bitrix import OAuthClient, RestClient
from ..settings import Settings
from ..store import Cipher, ReadCache, Store, database_url, load_master_key
from ._activity import Activity
from ._connect import Connector
from ._dispatcher import Dispatcher
from ._events import Events
from ._forward import Forwarder
from ._install import Installer
from ._jobs import JobRunner, holder_id
from ._limiter import FallbackLimiter, Limiter, LocalLimiter, RedisLimiter
from ._operating import OperatingBudget
from ._push import Pusher
from ._scheduler import Scheduler
from ._tokens import TokenManager, TokenPolicy

log = logging.getLogger("b24gate")

KEEPALIVE_EVERY = 6 * 3600.0
# How long a stopping gateway waits for the jobs' requests on their way.
JOB_GRACE = 10.0
# A serving process renews its presence in the store this often, for PRESENCE_TTL: `key
# rotate` refuses while one is there (a process that died is forgotten PRESENCE_TTL later).
PRESENCE_EVERY = 10.0
PRESENCE_TTL = 30.0


@dataclass
class Gateway:
    settings: Settings
    store: Store
    session: aiohttp.ClientSession
    tokens: TokenManager
    reads: ReadCache
    limiter: Limiter
    scheduler: Scheduler
    dispatcher: Dispatcher
    connector: Connector
    installer: Installer
    # This process as the store's leases name it, and its worker for jobs.
    holder: str
    jobs: JobRunner
    events: Events
    pusher: Pusher
    activity: Activity
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def open(cls, settings: Settings) -> Gateway:
        key = load_master_key(
            settings.data_dir,
            settings.master_key.get_secret_value() if settings.master_key else None,
            settings.master_key_file,
        )
        store = await Store.open(
            database_url(settings.data_dir, settings.database_url), Cipher(key)
        )
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=300),
            # Nothing of ours rides in cookies; Bitrix24's session cookies must not either.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        oauth = OAuthClient(
            session,
            aiohttp.ClientTimeout(
                total=settings.oauth_timeout, connect=settings.upstream_connect_timeout
            ),
        )
        rest = RestClient(
            session,
            aiohttp.ClientTimeout(
                total=settings.upstream_timeout, connect=settings.upstream_connect_timeout
            ),
        )
        policy = TokenPolicy(
            refresh_skew=settings.refresh_skew,
            keepalive_age=settings.keepalive_days * 24 * 3600,
            attempts=settings.refresh_attempts,
        )
        reads = ReadCache(store)
        tokens = TokenManager(store, oauth, policy, reads=reads)
        # With Redis every replica books from one budget per portal.
        limiter: Limiter = (
            FallbackLimiter(RedisLimiter(settings.redis_url))
            if settings.redis_url
            else LocalLimiter()
        )
        operating = OperatingBudget(max_wait=settings.queue_max_wait)
        forwarder = Forwarder(store, tokens, rest, operating)
        scheduler = Scheduler(
            limiter,
            forwarder,
            operating=operating,
            max_wait=settings.queue_max_wait,
            queue_limit=settings.queue_limit,
            not_batched=frozenset(settings.not_batched),
        )
        forwarder.book = scheduler.book
        dispatcher = Dispatcher(reads, forwarder, scheduler, operating)
        holder = holder_id()
        events = Events(store, reads, dispatcher, settings)
        return cls(
            settings=settings,
            store=store,
            session=session,
            tokens=tokens,
            reads=reads,
            limiter=limiter,
            scheduler=scheduler,
            dispatcher=dispatcher,
            connector=Connector(store, oauth, tokens, settings.public_url),
            installer=Installer(store, oauth, tokens, rest),
            holder=holder,
            jobs=JobRunner(store, dispatcher, settings, holder, reads),
            events=events,
            pusher=Pusher(store, events, session),
            activity=Activity(store),
        )

    def start_background(self) -> None:
        self._tasks.append(asyncio.create_task(self._keep_alive_loop(), name="b24gate-keepalive"))
        self._tasks.append(asyncio.create_task(self.jobs.run(), name="b24gate-jobs"))
        self._tasks.append(asyncio.create_task(self.events.run(), name="b24gate-events"))
        self._tasks.append(asyncio.create_task(self.pusher.run(), name="b24gate-push"))
        self._tasks.append(asyncio.create_task(self.activity.run(), name="b24gate-activity"))
        self._tasks.append(asyncio.create_task(self._presence_loop(), name="b24gate-presence"))

    async def _presence_loop(self) -> None:
        try:
            while True:
                try:
                    await self.store.announce_serving(self.holder, PRESENCE_TTL)
                except Exception:  # the store is away for a moment: the next round retries
                    log.warning("could not renew this process's presence in the store")
                await asyncio.sleep(PRESENCE_EVERY)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.withdraw_serving(self.holder))

    async def _keep_alive_loop(self) -> None:
        while True:
            try:
                await self.tokens.keep_alive()
            except Exception:  # a failed round must not end the loop; the next one retries
                log.exception("keep-alive round failed")
            await asyncio.sleep(KEEPALIVE_EVERY)

    async def close(self) -> None:
        """Idempotent: stop background work, close the upstream session and the store."""
        if self.session.closed:
            return
        # Jobs' commands on their way are answered and recorded first, within JOB_GRACE.
        await self.jobs.stop(JOB_GRACE)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.scheduler.close()
        await self.limiter.close()
        await self.session.close()
        await self.store.close()
