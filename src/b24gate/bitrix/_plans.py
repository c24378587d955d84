"""Bitrix24's plans and the REST request budget each one gets (docs/limits.md).

Bitrix24 drains a per-portal bucket at ``rate`` requests/s and refuses a request that finds
``burst`` in it: 5/s and 250 on Enterprise plans, 2/s and 50 on every other plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final


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
