"""Packing cannot leak: a client's text that Bitrix24 would read as a reference never shares
a batch with another client's calls (issue 10, item 4).

On a portal with a request budget the gateway packs calls that wait at the same moment
into one Bitrix24 ``batch``. Inside a batch Bitrix24 replaces
``/\\$(result|next|total|time|error)([^\\s]*)/i`` with parts of earlier commands' answers,
so a ``crm.*`` client posting ``$result_[c0][EMAIL]`` could read another client's
``user.current`` into its own deal. Such calls now go alone, where Bitrix24 replaces
nothing: the text is stored as it was sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .conftest import MakeStack, Stack

REFERENCES = [
    *(f"$result_[c{n}][EMAIL]" for n in range(6)),
    *(f"x $result[c{n}][EMAIL]" for n in range(6)),
    *(f"$RESULT[c{n}]" for n in range(3)),
    *(f"why $error[c{n}][error_description]" for n in range(3)),
    *(f"$total[c{n}]" for n in range(3)),
    *(f"$time[c{n}][start]" for n in range(3)),
    "$result[nothing]",
    "price $total[net]",
]


async def limited(make_stack: MakeStack) -> tuple[Stack, str, str]:
    """A portal whose budget (4 requests/s, 2 at once) makes concurrent calls share batches;
    a victim allowed everything and an attacker limited to ``crm.*``."""
    stack = await make_stack({"rate": 4, "burst": 2})
    await stack.add_portal(rate=4, burst=2)
    await stack.connect()
    await stack.control.post("/_sandbox/limits", json={"reset": True})
    await stack.control.post("/_sandbox/counters/reset")
    victim = await stack.add_client("victim")
    attacker = await stack.add_client("attacker", methods=("crm.*",))
    return stack, victim, attacker


async def test_another_clients_answers_never_reach_the_attackers_deals(
    make_stack: MakeStack,
) -> None:
    stack, victim, attacker = await limited(make_stack)

    def add(title: str) -> Any:
        return stack.call(
            attacker, {"method": "crm.deal.add", "params": {"fields": {"TITLE": title}}}
        )

    calls = []
    for i, text in enumerate(REFERENCES):
        # The victim's reads and the attacker's plain adds are packed together, round robin.
        calls.append(stack.call(victim, {"method": "user.current"}))
        calls.append(add(f"plain {i}"))
        calls.append(add(text))
    responses = await asyncio.wait_for(asyncio.gather(*calls), 60)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    counters = await stack.counters()
    assert counters["batches"] >= 1  # packing did happen on this portal
    assert counters["rest_calls"] < len(calls)

    titles = [deal["TITLE"] for deal in stack.sandbox.portal.tables["crm.deal"].records.values()]
    for text in REFERENCES:
        assert text in titles, text  # stored exactly as sent
    everything = repr(stack.sandbox.portal.tables["crm.deal"].records)
    assert "@sandbox.invalid" not in everything  # no e-mail of the victim's in any deal
    assert "Not found" not in everything


async def test_ordinary_text_with_a_dollar_sign_is_stored_verbatim(make_stack: MakeStack) -> None:
    stack, _, attacker = await limited(make_stack)
    # Packed with each other, "$total[net]" would become Bitrix24's whole map of totals and
    # "$result[c0]" the ID of whichever call went first.
    titles = ["price $total[net]", "$total[net]", "order $result[c0]", "$result[c1]", "costs $5"]
    responses = await asyncio.gather(
        *(
            stack.call(attacker, {"method": "crm.deal.add", "params": {"fields": {"TITLE": t}}})
            for t in titles * 3
        )
    )
    for response in responses:
        assert response.status_code == 200, response.text
    for response, title in zip(responses, titles * 3, strict=True):
        got = await stack.call(
            attacker,
            {"method": "crm.deal.get", "params": {"id": response.json()["data"]["result"]}},
        )
        assert got.json()["data"]["result"]["TITLE"] == title
