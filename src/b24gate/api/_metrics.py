"""What ``GET /metrics`` serves (docs/monitoring.md): the process's own figures (the queues,
the shared budget) from prometheus_client's registry, and each portal's state and token
times, read from the store at each scrape.

The portal figures are not kept in the global registry: the store is shared, so a portal
another replica connected, or one an administrator removed, is right at the next scrape,
and every replica reports the same values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Final, get_args

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ..bitrix import REFRESH_TOKEN_LIFETIME
from ..core import Gateway
from ..store import PortalState, TokenTimes

log = logging.getLogger(__name__)
_STATES: Final[tuple[PortalState, ...]] = get_args(PortalState)


class PortalFigures(Collector):
    """Gauges of the portals as one store read found them at ``now`` (Unix time)."""

    def __init__(self, portals: Sequence[TokenTimes], now: float) -> None:
        self._portals = portals
        self._now = now

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "b24gate_portal_state",
            "1 for the portal's state (connected, needs_authorization, not_connected), 0 else",
            labels=["portal", "kind", "state"],
        )
        access = GaugeMetricFamily(
            "b24gate_portal_access_token_expires_seconds",
            "When the portal's access token expires (Unix time); a call refreshes it then",
            labels=["portal"],
        )
        age = GaugeMetricFamily(
            "b24gate_portal_refresh_token_age_seconds",
            "Seconds since the portal's refresh token was issued",
            labels=["portal"],
        )
        death = GaugeMetricFamily(
            "b24gate_portal_refresh_token_expires_seconds",
            "When the refresh token dies unused (Unix time; issued + 180 days)",
            labels=["portal"],
        )
        for portal in self._portals:
            for name in _STATES:
                state.add_metric([portal.name, portal.kind, name], float(portal.state == name))
            # Webhook portals, and OAuth portals never connected or disconnected, have none.
            if portal.access_expires_at is None or portal.refresh_obtained_at is None:
                continue
            access.add_metric([portal.name], portal.access_expires_at)
            age.add_metric([portal.name], max(0.0, self._now - portal.refresh_obtained_at))
            death.add_metric([portal.name], portal.refresh_obtained_at + REFRESH_TOKEN_LIFETIME)
        yield from (state, access, age, death)


class StoreUp(Collector):
    """Whether the store answered this scrape's read."""

    def __init__(self, up: bool) -> None:
        self._up = up

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "b24gate_store_up",
            "1 if the store answered this scrape (the portal figures come from it), 0 else",
            value=float(self._up),
        )


async def scrape(gw: Gateway) -> bytes:
    """The whole page: the process's registry, then the portals' figures (one store read).

    A store that does not answer leaves the portal figures out and says so with
    ``b24gate_store_up 0``: the process's own figures are still served, so a running replica
    is not taken for a dead one."""
    portals = CollectorRegistry(auto_describe=False)
    try:
        times = await gw.store.token_times()
    except Exception:  # any failure of the store; the gauge is the report
        log.warning("/metrics: the store did not answer; portal figures left out", exc_info=True)
        portals.register(StoreUp(False))
    else:
        portals.register(StoreUp(True))
        portals.register(PortalFigures(times, time.time()))
    return generate_latest(REGISTRY) + generate_latest(portals)
