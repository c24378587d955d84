"""Writes counted per external id (``/_sandbox/writes``), and finding a record by it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import rest

EMPTY = {"by_external_id": {}, "doubled": [], "total": 0}


async def result(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["result"]


async def writes(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/_sandbox/writes")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def add_deal(http: httpx.AsyncClient, token: str, **fields: Any) -> int:
    deal_id: int = await result(await rest(http, "crm.deal.add", token, fields=fields))
    return deal_id


async def find(http: httpx.AsyncClient, token: str, flt: dict[str, Any]) -> list[int]:
    rows = await result(await rest(http, "crm.deal.list", token, filter=flt, select=["ID"]))
    return [int(row["ID"]) for row in rows]


async def test_every_add_is_counted_under_the_external_ids_it_carries(
    client: httpx.AsyncClient, token: str
) -> None:
    assert await writes(client) == EMPTY
    await add_deal(client, token, TITLE="a", ORIGIN_ID="1c-001")
    await add_deal(client, token, TITLE="b", ORIGIN_ID=2)
    await add_deal(client, token, TITLE="no external id")
    await result(await rest(client, "crm.contact.add", token, fields={"ORIGIN_ID": "1c-001"}))
    both = {"TITLE": "c", "ORIGIN_ID": "o-1", "XML_ID": "x-1"}
    await result(await rest(client, "crm.company.add", token, fields=both))
    product = {"iblockId": 1, "name": "Widget", "xmlId": "sku-1"}
    await result(await rest(client, "catalog.product.add", token, fields=product))

    assert await writes(client) == {
        "by_external_id": {
            "catalog.product:xmlId:sku-1": 1,
            "crm.company:ORIGIN_ID:o-1": 1,
            "crm.company:XML_ID:x-1": 1,
            "crm.contact:ORIGIN_ID:1c-001": 1,
            "crm.deal:ORIGIN_ID:1c-001": 1,
            "crm.deal:ORIGIN_ID:2": 1,
        },
        "doubled": [],
        # One write carrying two ids is one write; one carrying none is not counted.
        "total": 5,
    }


async def test_a_batchs_commands_count_as_direct_calls_do(
    client: httpx.AsyncClient, token: str
) -> None:
    cmd = {
        "a": "crm.deal.add?fields[TITLE]=a&fields[ORIGIN_ID]=b-1",
        "b": "crm.deal.add?fields[TITLE]=b&fields[ORIGIN_ID]=b-2",
        # Refused (a product needs iblockId and name): nothing was written, nothing counted.
        "bad": "catalog.product.add?fields[xmlId]=sku-9",
    }
    inner = await result(await rest(client, "batch", token, cmd=cmd))
    assert set(inner["result"]) == {"a", "b"}
    assert set(inner["result_error"]) == {"bad"}
    assert await writes(client) == {
        "by_external_id": {"crm.deal:ORIGIN_ID:b-1": 1, "crm.deal:ORIGIN_ID:b-2": 1},
        "doubled": [],
        "total": 2,
    }


async def test_a_write_sent_twice_is_two_deals_and_shows_as_doubled(
    client: httpx.AsyncClient, token: str
) -> None:
    # Bitrix24 does not refuse a second record with the same ORIGIN_ID; the count shows it.
    first = await add_deal(client, token, TITLE="x", ORIGIN_ID="dup")
    cmd = ["crm.deal.add?fields[TITLE]=x&fields[ORIGIN_ID]=dup"]
    await result(await rest(client, "batch", token, cmd=cmd))
    await add_deal(client, token, TITLE="y", ORIGIN_ID="once")

    assert await find(client, token, {"=ORIGIN_ID": "dup"}) == [first, first + 1]
    assert await writes(client) == {
        "by_external_id": {"crm.deal:ORIGIN_ID:dup": 2, "crm.deal:ORIGIN_ID:once": 1},
        "doubled": ["crm.deal:ORIGIN_ID:dup"],
        "total": 3,
    }


async def test_only_writes_the_portal_did_are_counted(
    client: httpx.AsyncClient, token: str
) -> None:
    await client.post("/_sandbox/faults", json={"kind": "500"})
    refused = await rest(client, "crm.deal.add", token, fields={"ORIGIN_ID": "lost"})
    assert refused.status_code == 500
    # Done, but the answer never arrived: the caller cannot tell; the count can.
    await client.post("/_sandbox/faults", json={"kind": "drop-after"})
    with pytest.raises(httpx.RemoteProtocolError):
        await rest(client, "crm.deal.add", token, fields={"ORIGIN_ID": "unanswered"})
    assert (await writes(client))["by_external_id"] == {"crm.deal:ORIGIN_ID:unanswered": 1}


async def test_reset_clears_the_counts_and_counting_goes_on(
    client: httpx.AsyncClient, token: str
) -> None:
    await add_deal(client, token, ORIGIN_ID="r")
    await add_deal(client, token, ORIGIN_ID="r")
    reset = await client.post("/_sandbox/writes/reset")
    assert reset.status_code == 200, reset.text
    assert reset.json() == EMPTY
    assert await writes(client) == EMPTY
    # The deals stay; only the count starts again.
    assert await find(client, token, {"ORIGIN_ID": "r"}) == [1, 2]
    await add_deal(client, token, ORIGIN_ID="r")
    assert await writes(client) == {
        "by_external_id": {"crm.deal:ORIGIN_ID:r": 1},
        "doubled": [],
        "total": 1,
    }


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/_sandbox/writes/reset", {"entity": "crm.deal"}),
        ("POST", "/_sandbox/writes/reset", ["crm.deal"]),
        ("POST", "/_sandbox/writes/reset", "not json"),
        ("GET", "/_sandbox/writes", {"doubled": True}),
    ],
)
async def test_the_endpoints_refuse_parameters_and_change_nothing(
    client: httpx.AsyncClient, token: str, method: str, path: str, body: Any
) -> None:
    await add_deal(client, token, ORIGIN_ID="kept")
    content = body if isinstance(body, str) else None
    json = None if isinstance(body, str) else body
    response = await client.request(method, path, json=json, content=content)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.json()["error_description"]
    assert (await writes(client))["by_external_id"] == {"crm.deal:ORIGIN_ID:kept": 1}


# -- finding a record by its external id ------------------------------------------------


@pytest.mark.parametrize("key", ["ORIGIN_ID", "=ORIGIN_ID"])
async def test_a_deal_is_found_by_origin_id_with_or_without_the_equals_sign(
    client: httpx.AsyncClient, token: str, key: str
) -> None:
    await add_deal(client, token, TITLE="other", ORIGIN_ID="1c-0001")
    wanted = await add_deal(client, token, TITLE="it", ORIGINATOR_ID="1c", ORIGIN_ID="1c-0002")
    await add_deal(client, token, TITLE="no id")

    select = ["ID", "ORIGINATOR_ID", "ORIGIN_ID"]
    rows = await result(
        await rest(client, "crm.deal.list", token, filter={key: "1c-0002"}, select=select)
    )
    assert rows == [{"ID": str(wanted), "ORIGINATOR_ID": "1c", "ORIGIN_ID": "1c-0002"}]
    got = await result(await rest(client, "crm.deal.get", token, id=wanted))
    assert (got["ORIGINATOR_ID"], got["ORIGIN_ID"]) == ("1c", "1c-0002")
    assert await find(client, token, {key: "1c-0003"}) == []


async def test_an_external_id_is_compared_as_text(client: httpx.AsyncClient, token: str) -> None:
    # ORIGIN_ID is a string column: "007" is not "7", as a number would be.
    seven = await add_deal(client, token, ORIGIN_ID="7")
    padded = await add_deal(client, token, ORIGIN_ID="007")
    assert await find(client, token, {"=ORIGIN_ID": "007"}) == [padded]
    assert await find(client, token, {"ORIGIN_ID": 7}) == [seven]
    assert await find(client, token, {"@ORIGIN_ID": ["7", "8"]}) == [seven]
    assert await find(client, token, {"!=ORIGIN_ID": "7"}) == [padded]
    # The amount stays a number: 10 finds "10.00".
    amount = await add_deal(client, token, OPPORTUNITY="10.00")
    assert await find(client, token, {"OPPORTUNITY": 10}) == [amount]


async def test_a_filter_on_a_field_the_entity_lacks_is_ignored_as_bitrix24_does(
    client: httpx.AsyncClient, token: str
) -> None:
    # Deals have no XML_ID: it is dropped on add, and a filter on it filters nothing, so a
    # lookup by it would "find" any deal. Use ORIGIN_ID (docs/sandbox.md, "External ids").
    first = await add_deal(client, token, TITLE="a", XML_ID="x-1")
    second = await add_deal(client, token, TITLE="b")
    assert await find(client, token, {"=XML_ID": "x-1"}) == [first, second]
    assert await find(client, token, {"=XML_ID": "x-1", "TITLE": "b"}) == [second]
    row = await result(await rest(client, "crm.deal.get", token, id=first))
    assert "XML_ID" not in row


async def test_a_like_pattern_uses_the_callers_wildcards(
    client: httpx.AsyncClient, token: str
) -> None:
    a = await add_deal(client, token, TITLE="Alpha")
    b = await add_deal(client, token, TITLE="Beta")
    assert await find(client, token, {"=%TITLE": "%a"}) == [a, b]
    assert await find(client, token, {"%=TITLE": "al%"}) == [a]
    assert await find(client, token, {"=%TITLE": "b_ta"}) == [b]
    assert await find(client, token, {"!=%TITLE": "%ph%"}) == [b]
