"""The request budget of each portal, mirrored on our side so Bitrix24 never has to refuse.

Bitrix24 drains a per-portal bucket at ``rate`` requests/s and refuses a request that finds
``burst`` in it. The same limit as GCRA (the generic cell rate algorithm): each request
moves a "theoretical arrival time" (TAT) forward by ``1/rate``; a request may go when TAT
is at most ``(burst - 1)/rate`` ahead of now. :meth:`Limiter.reserve` books the next slot
and says how long to wait for it. :class:`LocalLimiter` keeps TAT in this process;
:class:`RedisLimiter` keeps it in Redis and books with one atomic script, so every replica
shares one budget per portal.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Protocol

import redis.asyncio as aioredis
from prometheus_client import Gauge

log = logging.getLogger("b24gate.limiter")

# How many requests under Bitrix24's threshold to stay. A request that arrives late cannot
# overfill the bucket (it only drains longer), and every request the gateway sends is
# booked, the resend after a token refresh included (Forwarder.book): the whole bucket is
# used. Another application on the same portal gets room from a lower --rate/--burst.
SAFETY = 0


def tolerance(rate: float, burst: int) -> float:
    return max(0, burst - SAFETY - 1) / rate


class Limiter(Protocol):
    async def reserve(self, key: str, rate: float, burst: int, max_wait: float) -> float | None:
        """Book the next request slot: the seconds to wait for it, or None (nothing booked)
        when that would be more than ``max_wait``."""

    async def pause(self, key: str, rate: float, burst: int, seconds: float) -> None:
        """Bitrix24 refused a request, so its bucket is full (someone else shares it): count
        it full, and book nothing for ``seconds``."""

    async def close(self) -> None: ...


class LocalLimiter:
    def __init__(self) -> None:
        self._tat: dict[str, float] = {}

    async def reserve(self, key: str, rate: float, burst: int, max_wait: float) -> float | None:
        if rate <= 0:
            return 0.0
        now = asyncio.get_running_loop().time()  # monotonic, and a test's virtual time
        tat = max(self._tat.get(key, now), now)
        wait = max(0.0, tat - now - tolerance(rate, burst))
        if wait > max_wait:
            return None
        self._tat[key] = tat + 1 / rate
        return wait

    async def pause(self, key: str, rate: float, burst: int, seconds: float) -> None:
        if rate > 0:
            self.book_until(key, seconds + tolerance(rate, burst))

    def book_until(self, key: str, ahead: float) -> None:
        """Count the budget as booked ``ahead`` seconds from now (at least)."""
        until = asyncio.get_running_loop().time() + ahead
        self._tat[key] = max(self._tat.get(key, until), until)

    def booked(self) -> dict[str, float]:
        """How far ahead of now each budget is booked, in seconds (only those that are)."""
        now = asyncio.get_running_loop().time()
        return {key: tat - now for key, tat in self._tat.items() if tat > now}

    async def close(self) -> None:
        return None


# KEYS[1]: the portal's TAT. ARGV: interval (1/rate), tolerance, max wait (-1: none).
# The key lives a minute past its TAT: by then the bucket is empty whatever it held.
# Redis turns Lua numbers into integers, so the wait travels back as a string.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval, tau, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now - tau
if wait < 0 then wait = 0 end
if max_wait >= 0 and wait > max_wait then return {0, tostring(wait)} end
local ttl = math.ceil((tat + interval - now + 60) * 1000)
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', ttl)
return {1, tostring(wait)}
"""

# KEYS[1]: the portal's TAT. ARGV[1]: seconds ahead of now it must be booked, at least.
_BOOK_UNTIL = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < until_ then
  redis.call('SET', KEYS[1], tostring(until_), 'PX', math.ceil((tonumber(ARGV[1]) + 60) * 1000))
end
return 1
"""

# Redis answers at once or not at all: a booking that takes longer finds it gone.
REDIS_TIMEOUT = 2.0
# While the shared budget is unreachable, ask it again this often (seconds).
SHARED_RETRY = 5.0
# What a shared budget that is down or broken raises.
_UNAVAILABLE = (aioredis.RedisError, OSError)

SHARED_UP = Gauge(
    "b24gate_shared_budget_up",
    "1 while the shared request budget (Redis) answers, 0 while replicas book on their own",
)


class RedisLimiter:
    """One budget per portal for all replicas: Redis's clock and one atomic script."""

    def __init__(self, url: str, prefix: str = "b24gate:bucket:") -> None:
        self._redis: Any = aioredis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        self._prefix = prefix
        self._reserve = self._redis.register_script(_RESERVE)
        self._book_until = self._redis.register_script(_BOOK_UNTIL)

    async def reserve(self, key: str, rate: float, burst: int, max_wait: float) -> float | None:
        if rate <= 0:
            return 0.0
        limit = max_wait if math.isfinite(max_wait) else -1
        booked, wait = await self._reserve(
            keys=[self._prefix + key], args=[1 / rate, tolerance(rate, burst), limit]
        )
        return float(wait) if int(booked) else None

    async def pause(self, key: str, rate: float, burst: int, seconds: float) -> None:
        if rate > 0:
            await self.book_until(key, seconds + tolerance(rate, burst))

    async def book_until(self, key: str, ahead: float) -> None:
        await self._book_until(keys=[self._prefix + key], args=[ahead])

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


class SharedLimiter(Limiter, Protocol):
    """A budget shared by replicas (:class:`RedisLimiter`)."""

    async def book_until(self, key: str, ahead: float) -> None: ...

    async def ping(self) -> None: ...


class FallbackLimiter:
    """The shared budget in Redis, with this replica's own budget to fall back on.

    Every booking made in Redis is mirrored locally. When Redis cannot be reached, calls
    are not failed: bookings go to the local budget (which already counts this replica's
    recent requests), one warning goes to the log, and a single background probe asks
    Redis again every :data:`SHARED_RETRY` seconds. When Redis answers, the local bookings
    still ahead are carried into it before it is used again. Bitrix24's 503s, if replicas
    overrun the portal's budget meanwhile, are absorbed by the scheduler.
    """

    def __init__(self, shared: SharedLimiter) -> None:
        self._shared = shared
        self._local = LocalLimiter()
        self._down = False
        self._probe: asyncio.Task[None] | None = None
        SHARED_UP.set(1)

    async def reserve(self, key: str, rate: float, burst: int, max_wait: float) -> float | None:
        if not self._down:
            try:
                wait = await self._shared.reserve(key, rate, burst, max_wait)
            except _UNAVAILABLE as exc:
                self._went_down(exc)
            else:
                if wait is not None:
                    await self._local.reserve(key, rate, burst, math.inf)
                return wait
        return await self._local.reserve(key, rate, burst, max_wait)

    async def pause(self, key: str, rate: float, burst: int, seconds: float) -> None:
        await self._local.pause(key, rate, burst, seconds)
        if not self._down:
            try:
                await self._shared.pause(key, rate, burst, seconds)
            except _UNAVAILABLE as exc:
                self._went_down(exc)

    def _went_down(self, exc: Exception) -> None:
        if self._down:
            return
        self._down = True
        SHARED_UP.set(0)
        if isinstance(exc, aioredis.ConnectionError | aioredis.TimeoutError | OSError):
            why = "is unreachable"
        else:  # Redis answered, with an error: a setting or the server to fix
            why = "failed"
        log.warning(
            "the shared request budget %s (%s: %s); booking from this replica's own budget "
            "until it answers again",
            why,
            type(exc).__name__,
            exc,
        )
        self._probe = asyncio.create_task(self._until_back(), name="shared-budget-probe")

    async def _until_back(self) -> None:
        while True:
            await asyncio.sleep(SHARED_RETRY)
            try:
                await self._shared.ping()
                for key, ahead in self._local.booked().items():
                    await self._shared.book_until(key, ahead)
            except _UNAVAILABLE:
                continue
            self._down = False
            SHARED_UP.set(1)
            log.warning("the shared request budget answers again")
            return

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self._shared.close()
