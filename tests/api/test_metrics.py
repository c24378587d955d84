"""/metrics shows each portal's state and token times as the store has them, and the alert
rules of docs/monitoring.md use only metrics the page serves."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

from b24gate.bitrix import REFRESH_TOKEN_LIFETIME

from .conftest import MakeStack, Stack

ADMIN = "admin-token-for-tests"
MONITORING = Path(__file__).parents[2] / "docs" / "monitoring.md"


async def scrape(stack: Stack) -> dict[str, float]:
    """The page's ``b24gate_portal_*`` samples, by name and labels."""
    page = await stack.http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert page.status_code == 200, page.text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in page.text.splitlines()
        if line.startswith("b24gate_portal_")
    }


async def connected_stack(make_stack: MakeStack) -> Stack:
    stack = await make_stack(admin_token=ADMIN)
    await stack.add_portal()
    assert (await stack.connect()).status_code == 200
    return stack


async def test_a_connected_portal_shows_its_state_and_token_times(
    make_stack: MakeStack,
) -> None:
    stack = await connected_stack(make_stack)
    # Registered, never authorized.
    await stack.add_portal("later", url="https://later.bitrix24.ru", domain="later.bitrix24.ru")
    figures = await scrape(stack)
    now = time.time()
    assert figures['b24gate_portal_state{kind="oauth",portal="demo",state="connected"}'] == 1
    assert figures['b24gate_portal_state{kind="oauth",portal="demo",state="not_connected"}'] == 0
    needs = 'b24gate_portal_state{kind="oauth",portal="demo",state="needs_authorization"}'
    assert figures[needs] == 0
    assert figures['b24gate_portal_state{kind="oauth",portal="later",state="not_connected"}'] == 1
    # The sandbox's access tokens live an hour; the refresh token was issued just now.
    expires = figures['b24gate_portal_access_token_expires_seconds{portal="demo"}']
    assert now + 3500 < expires <= now + 3600
    age = figures['b24gate_portal_refresh_token_age_seconds{portal="demo"}']
    assert 0 <= age < 60
    death = figures['b24gate_portal_refresh_token_expires_seconds{portal="demo"}']
    assert abs(death - (now - age + REFRESH_TOKEN_LIFETIME)) < 1
    # A portal without a grant has no token times.
    assert not any('portal="later"' in name and "token" in name for name in figures)


async def test_a_portal_whose_grant_died_shows_needs_authorization(
    make_stack: MakeStack,
) -> None:
    stack = await connected_stack(make_stack)
    key = await stack.add_client()
    await stack.control.post("/_sandbox/revoke-refresh-tokens")
    await stack.control.post("/_sandbox/expire-access-tokens")
    refused = await stack.call(key, {"method": "profile"})
    assert refused.json()["code"] == "needs_authorization"
    figures = await scrape(stack)
    needs = 'b24gate_portal_state{kind="oauth",portal="demo",state="needs_authorization"}'
    assert figures[needs] == 1
    assert figures['b24gate_portal_state{kind="oauth",portal="demo",state="connected"}'] == 0
    # The administrator authorizes again: the next scrape says so, with a new refresh token.
    assert (await stack.connect(force=True)).status_code == 200
    figures = await scrape(stack)
    assert figures['b24gate_portal_state{kind="oauth",portal="demo",state="connected"}'] == 1
    assert figures[needs] == 0


def alert_rules() -> list[dict[str, object]]:
    """The rules of the ```yaml block in docs/monitoring.md."""
    blocks = re.findall(r"```yaml\n(.*?)```", MONITORING.read_text(), re.DOTALL)
    assert len(blocks) == 1
    document = yaml.safe_load(blocks[0])
    rules: list[dict[str, object]] = [r for g in document["groups"] for r in g["rules"]]
    return rules


async def test_the_documented_alert_rules_use_metrics_the_page_serves(
    make_stack: MakeStack,
) -> None:
    stack = await connected_stack(make_stack)
    page = await stack.http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    served = set(re.findall(r"^# TYPE (\S+) ", page.text, re.MULTILINE))
    rules = alert_rules()
    assert {r["alert"] for r in rules} == {
        "B24GatePortalNeedsAuthorization",
        "B24GateRefreshTokenNearDeath",
    }
    for rule in rules:
        used = set(re.findall(r"\bb24gate_\w+", str(rule["expr"])))
        assert used, rule
        assert used <= served, f"{rule['alert']} uses {used - served}, not on /metrics"


async def test_a_store_that_does_not_answer_leaves_the_rest_of_the_page(
    make_stack: MakeStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = await connected_stack(make_stack)
    assert "b24gate_store_up 1.0" in (await page_text(stack))

    async def down() -> list[object]:
        raise OSError("connection refused")

    monkeypatch.setattr(stack.gateway.store, "token_times", down)
    text = await page_text(stack)
    # The replica still serves its own figures; the portal figures are left out, and say so.
    assert "b24gate_store_up 0.0" in text
    assert "b24gate_portal_state{" not in text
    assert "# TYPE b24gate_queue" in text


async def page_text(stack: Stack) -> str:
    page = await stack.http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert page.status_code == 200, page.text
    return page.text
