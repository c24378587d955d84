"""Bitrix24's operating-time budget as the gateway keeps it: a method near its limit waits
(or gets 429) instead of being sent to be blocked for every application of the portal."""

from __future__ import annotations

import asyncio
import time

import pytest

from b24gate.bitrix import OPERATING_LIMIT, encode_batch
from b24gate.core import OPERATING_WAIT, OperatingBudget
from b24gate.errors import OperationTimeLimit, RateLimited

from ._lanes import a_portal

NOW = 1_000_000.0


def _near(seconds_to_reset: float, operating: float = OPERATING_LIMIT - 5) -> dict[str, object]:
    return {"time": {"operating": operating, "operating_reset_at": NOW + seconds_to_reset}}


async def test_a_method_near_its_limit_waits_until_part_of_its_budget_frees_up() -> None:
    budget = OperatingBudget(max_wait=5, clock=lambda: NOW)
    portal = a_portal()
    budget.record(portal, "crm.deal.add", _near(0.2))
    started = time.monotonic()
    await asyncio.wait_for(budget.hold(portal, "CRM.DEAL.ADD"), 2)  # any case: one method
    assert time.monotonic() - started >= 0.2
    # Other methods and other portals are not held.
    assert budget.refusal(portal, "crm.deal.list") is None
    assert budget.refusal(a_portal(2), "crm.deal.add") is None


async def test_a_wait_longer_than_the_queues_is_429_with_the_time_to_wait() -> None:
    budget = OperatingBudget(max_wait=5, clock=lambda: NOW)
    budget.record(a_portal(), "crm.deal.add", _near(120))
    with pytest.raises(RateLimited) as caught:
        await asyncio.wait_for(budget.hold(a_portal(), "crm.deal.add"), 1)
    assert caught.value.retry_after == 120


def test_a_late_answer_with_a_lower_figure_does_not_lift_the_hold() -> None:
    budget = OperatingBudget(clock=lambda: NOW)
    portal = a_portal()
    budget.record(portal, "crm.deal.add", _near(60))
    # An answer to a request sent earlier comes back last, with the older, lower figure.
    budget.record(portal, "crm.deal.add", _near(60, operating=10))
    assert budget.refusal(portal, "crm.deal.add") is not None


def test_a_block_that_does_not_say_until_when_lasts_a_minute() -> None:
    budget = OperatingBudget(clock=lambda: NOW)
    portal = a_portal()
    # Inside a batch, OPERATION_TIME_LIMIT comes without `operating_reset_at`.
    answer = budget.blocked(
        portal, "crm.deal.add", OperationTimeLimit(429, "OPERATION_TIME_LIMIT", "blocked")
    )
    assert answer.retry_after == OPERATING_WAIT
    refused = budget.refusal(portal, "crm.deal.add")
    assert refused is not None
    assert refused.retry_after == OPERATING_WAIT


def test_a_command_blocked_inside_a_batch_gets_the_429_the_budget_keeps() -> None:
    # An export's batch of pages: the budget knew from an earlier answer when the method's
    # budget frees up (in 30 s), and the block inside the batch does not say. The page's
    # 429 and the next call's both wait those 30 s: one source for Retry-After.
    budget = OperatingBudget(clock=lambda: NOW)
    portal = a_portal()
    budget.record(portal, "crm.deal.list", _near(30, operating=100))
    params = encode_batch({"p0": ("crm.deal.list", {}), "p1": ("crm.deal.list", {"start": 50})})
    body = {
        "result": {
            "result": {"p0": []},
            "result_error": {
                "p1": {"error": "OPERATION_TIME_LIMIT", "error_description": "blocked"}
            },
        }
    }
    refusals = budget.blocked_commands(portal, params, body)
    assert list(refusals) == ["p1"]
    assert refusals["p1"].retry_after == 30
    assert refusals["p1"].code == "rate_limited"
    refused = budget.refusal(portal, "crm.deal.list")
    assert refused is not None
    assert refused.retry_after == 30


def test_a_portal_that_blocks_below_480_s_has_its_smaller_budget_learned() -> None:
    """The budget is the portal's configuration: one that blocks a method at 300 s is
    taken at its word, and its other methods are held near 300 s from then on."""
    budget = OperatingBudget(clock=lambda: NOW)
    portal = a_portal()
    budget.record(portal, "crm.deal.add", _near(60, operating=300))
    budget.blocked(portal, "crm.deal.add", OperationTimeLimit(429, "OPERATION_TIME_LIMIT", "x"))
    assert budget.limit(portal) == 300
    budget.record(portal, "crm.deal.update", _near(60, operating=290))
    assert budget.refusal(portal, "crm.deal.update") is not None
    # Another portal keeps the documented figure.
    assert budget.limit(a_portal(2)) == OPERATING_LIMIT
    budget.record(a_portal(2), "crm.deal.update", _near(60, operating=290))
    assert budget.refusal(a_portal(2), "crm.deal.update") is None


def test_room_for_what_the_requests_on_their_way_will_be_charged() -> None:
    budget = OperatingBudget(clock=lambda: NOW)
    portal = a_portal()
    budget.record(portal, "batch", _near(45, operating=400))
    assert budget.wait_for_room(portal, "batch", 10) == 0
    assert budget.wait_for_room(portal, "batch", 70) == 45  # would come near 480: wait
