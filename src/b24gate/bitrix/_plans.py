"""Bitrix24's plans and the REST request budget each one gets (docs/limits.md).

Bitrix24 drains a per-portal bucket at ``rate`` requests/s and refuses a request that finds
``burst`` in it: 5/s and 250 on Enterprise plans, 2/s and 50 on every other plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from ..errors import InvalidSetting


@dataclass(frozen=True)
class PlanBudget:
    """A plan's request budget: Bitrix24 drains ``rate`` requests/s from a bucket of ``burst``."""

    rate: float
    burst: int


PLANS: Final[Mapping[str, PlanBudget]] = MappingProxyType(
    {
        "standard": PlanBudget(rate=2.0, burst=50),
        "enterprise": PlanBudget(rate=5.0, burst=250),
    }
)
# Most portals are on a plan other than Enterprise.
DEFAULT_PLAN: Final = "standard"

# The request budgets a portal may have: Bitrix24's plans are 2/s (bucket 50) and 5/s (250);
# an on-premise portal may be given more, within these bounds. Rate 0: no limit.
MAX_RATE: Final = 1000.0
MAX_BURST: Final = 100_000


def check_rate(rate: float) -> float:
    """A portal's request rate, requests/s: 0 (no limit) to :data:`MAX_RATE`; else
    :class:`~b24gate.errors.InvalidSetting` (``rate``)."""
    if not 0 <= rate <= MAX_RATE:  # a chained comparison is False for NaN too
        raise InvalidSetting(
            "rate", f"the rate is between 0 (no limit) and {MAX_RATE:g} requests/s"
        )
    return float(rate)


def check_burst(burst: int) -> int:
    """A portal's bucket size: 1 to :data:`MAX_BURST`; else
    :class:`~b24gate.errors.InvalidSetting` (``burst``)."""
    if isinstance(burst, bool) or not 1 <= burst <= MAX_BURST:
        raise InvalidSetting("burst", f"the burst is between 1 and {MAX_BURST}")
    return int(burst)
