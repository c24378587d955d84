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

log = logging.getLogger("b24gate.limiter")

# Stay one request under Bitrix24's threshold. A request that arrives late cannot
# overfill the bucket (it only drains longer), but one nobody booked can: the resend after
# a token refresh, or another application's occasional call on the same portal.
SAFETY = 1


def tolerance(rate: float, burst: int) -> float:
    return max(0, burst - SAFETY - 1) / rate


class Limiter(Protocol):
    async def reserve(self, key: str, rate: float, burst: int, max_wait: float) -> float | None:
        """Book the next request slot: the seconds to wait for it, or None (nothing booked)
        when that would be more than ``max_wait``."""

    async def pause(self, key: str, seconds: float) -> None:
        """Book nothing for ``seconds`` (Bitrix24 refused a request: someone else shares it)."""

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

    async def pause(self, key: str, seconds: float) -> None:
        self._tat[key] = max(self._tat.get(key, 0.0), asyncio.get_running_loop().time() + seconds)

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

_PAUSE = """
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


class RedisLimiter:
    """One budget per portal for all replicas: Redis's clock and one atomic script."""

    def __init__(self, url: str, prefix: str = "b24gate:bucket:") -> None:
        self._redis: Any = aioredis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        self._prefix = prefix
        self._reserve = self._redis.register_script(_RESERVE)
        self._pause = self._redis.register_script(_PAUSE)

    async def reserve(self, key: str, rate: float, burst: int, max_wait: float) -> float | None:
        if rate <= 0:
            return 0.0
        limit = max_wait if math.isfinite(max_wait) else -1
        booked, wait = await self._reserve(
            keys=[self._prefix + key], args=[1 / rate, tolerance(rate, burst), limit]
        )
        return float(wait) if int(booked) else None

    async def pause(self, key: str, seconds: float) -> None:
        await self._pause(keys=[self._prefix + key], args=[seconds])

    async def close(self) -> None:
        await self._redis.aclose()


class FallbackLimiter:
    """A shared limiter that, when it cannot be reached (Redis down), books from this
    process's own budget instead of failing the calls, and says so in the log. Bitrix24's
    503s, if replicas then overrun the portal's budget, are absorbed by the scheduler."""

    def __init__(self, shared: Limiter, local: Limiter | None = None) -> None:
        self._shared = shared
        self._local = local or LocalLimiter()
        self._down = False
        self._retry_at = 0.0  # while down, the shared one is asked again after this

    async def reserve(self, key: str, rate: float, burst: int, max_wait: float) -> float | None:
        if self._down and asyncio.get_running_loop().time() < self._retry_at:
            return await self._local.reserve(key, rate, burst, max_wait)
        try:
            wait = await self._shared.reserve(key, rate, burst, max_wait)
        except (aioredis.RedisError, OSError) as exc:
            self._went_down(exc)
            return await self._local.reserve(key, rate, burst, max_wait)
        self._came_back()
        return wait

    async def pause(self, key: str, seconds: float) -> None:
        await self._local.pause(key, seconds)
        if self._down:
            return
        try:
            await self._shared.pause(key, seconds)
        except (aioredis.RedisError, OSError) as exc:
            self._went_down(exc)

    def _went_down(self, exc: Exception) -> None:
        self._retry_at = asyncio.get_running_loop().time() + SHARED_RETRY
        if not self._down:
            self._down = True
            log.warning(
                "the shared request budget is unreachable (%s: %s); booking from this "
                "replica's own budget until it answers again",
                type(exc).__name__,
                exc,
            )

    def _came_back(self) -> None:
        if self._down:
            self._down = False
            log.warning("the shared request budget answers again")

    async def close(self) -> None:
        await self._shared.close()
        await self._local.close()
