"""What ``GET /metrics`` serves (docs/monitoring.md): the process's own figures (the queues,
the shared budget) from prometheus_client's registry, and each portal's state and token
times, read from the store at each scrape.

The portal figures are not kept in the global registry: the store is shared, so a portal
another replica connected, or one an administrator removed, is right at the next scrape,
and every replica reports the same values.
"""

from __future__ import annotations

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


async def scrape(gw: Gateway) -> bytes:
    """The whole page: the process's registry, then the portals' figures (one store read)."""
    portals = CollectorRegistry(auto_describe=False)
    portals.register(PortalFigures(await gw.store.token_times(), time.time()))
    return generate_latest(REGISTRY) + generate_latest(portals)
