"""`POST /api/v1/batch` and `POST /api/v1/list` against the sandbox."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from .conftest import Stack


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def seed(stack: Stack, count: int, entity: str = "crm.deal") -> None:
    response = await stack.control.post("/_sandbox/seed", json={"entity": entity, "count": count})
    assert response.status_code == 200, response.text


async def reset_counters(stack: Stack) -> None:
    await stack.control.post("/_sandbox/counters/reset")


async def export(
    stack: Stack, key: str, body: dict[str, Any], id_field: str = "ID"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The records of an NDJSON export, read line by line as they arrive, and its last line."""
    records: list[dict[str, Any]] = []
    last: dict[str, Any] | None = None
    async with stack.http.stream("POST", "/api/v1/list", headers=auth(key), json=body) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        async for line in response.aiter_lines():
            if not line:
                continue
            assert last is None, "nothing may follow the last line"
            item = json.loads(line)
            if id_field in item:
                records.append(item)
            else:
                last = item
    assert last is not None, "the stream ended without its last line"
    return records, last


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    assert body["code"] == code
    assert body["status"] == status
    return body


# -- /api/v1/batch ----------------------------------------------------------------------


async def test_a_batch_of_130_commands_answers_each_in_order(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    await seed(stack, 5)
    await reset_counters(stack)
    commands: list[dict[str, Any]] = []
    for i in range(129):
        if i % 3 == 0:
            commands.append(
                {"method": "crm.deal.add", "params": {"fields": {"TITLE": f"bulk {i}"}}}
            )
        elif i % 3 == 1:
            commands.append({"method": "crm.deal.get", "params": {"id": i % 5 + 1}})
        else:
            commands.append({"method": "crm.deal.get", "params": {"id": 900_000 + i}})
    commands.append({"method": "crm.deal.list", "params": {"select": ["ID"]}})

    response = await stack.http.post(
        "/api/v1/batch", headers=auth(key), json={"portal": "demo", "commands": commands}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    results = body["results"]
    assert len(results) == 130
    added: dict[int, str] = {}
    for i, entry in enumerate(results[:129]):
        if i % 3 == 0:
            assert set(entry) == {"result"}
            added[entry["result"]] = f"bulk {i}"
        elif i % 3 == 1:
            assert entry["result"]["ID"] == str(i % 5 + 1)
        else:
            assert entry == {
                "error": {
                    "error": "Bitrix24 answered 400 (no code): Not found",
                    "code": "bitrix_error",
                    "status": 400,
                    "bitrix": {"error": "", "error_description": "Not found"},
                }
            }
    assert isinstance(results[129]["result"], list)
    assert isinstance(results[129]["total"], int)
    assert len(added) == 43
    # Every add happened exactly once, with its own title.
    records, last = await export(
        stack,
        key,
        {"method": "crm.deal.list", "params": {"filter": {"%TITLE": "bulk "}, "select": ["TITLE"]}},
    )
    assert {int(r["ID"]): r["TITLE"] for r in records} == added
    assert last == {"count": 43}
    # The per-portal scheduler packs the concurrent commands into batches of 50, so this is
    # far below 130; the scheduler's own tests hold the exact figure.
    assert (await stack.counters())["rest_calls"] <= 130


async def test_a_command_the_key_may_not_call_refuses_the_whole_batch(
    connected: tuple[Stack, str],
) -> None:
    stack, _ = connected
    key = await stack.add_client("importer", methods=("crm.deal.*",))
    await reset_counters(stack)
    commands = [
        {"method": "crm.deal.add", "params": {"fields": {"TITLE": "x"}}},
        {"method": "crm.deal.add", "params": {"fields": {"TITLE": "y"}}},
        {"method": "user.current"},
    ]
    response = await stack.http.post(
        "/api/v1/batch", headers=auth(key), json={"commands": commands}
    )
    body = error_of(response, 403, "method_forbidden")
    assert body["error"].startswith("commands[2]: ")
    assert (await stack.counters())["rest_calls"] == 0  # nothing half done


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "invalid_json"),
        (b"[]", "invalid_json"),
        (b"{}", "invalid_request"),
        (b'{"commands": []}', "invalid_request"),
        (b'{"commands": {"method": "profile"}}', "invalid_request"),
        (b'{"commands": [1]}', "invalid_request"),
        (b'{"commands": [{"params": {}}]}', "invalid_request"),
        (b'{"commands": [{"method": "profile", "extra": 1}]}', "invalid_request"),
        (b'{"commands": [{"method": "profile", "params": [1]}]}', "invalid_request"),
        (b'{"commands": [{"method": "profile"}], "extra": 1}', "invalid_request"),
        (
            b'{"commands": [{"method": "profile"}], "portal": "demo", "domain": "x"}',
            "invalid_request",
        ),
        (b'{"commands": [{"method": "profile"}, {"method": "crm.deal/list"}]}', "invalid_method"),
        (
            b'{"commands": [{"method": "batch", "params": {"cmd": {"a": "profile"}}}]}',
            "invalid_request",
        ),
    ],
)
async def test_a_bad_batch_body_is_refused_before_anything_is_sent(
    connected: tuple[Stack, str], body: bytes, code: str
) -> None:
    stack, key = connected
    await reset_counters(stack)
    response = await stack.http.post("/api/v1/batch", headers=auth(key), content=body)
    error_of(response, 400, code)
    assert (await stack.counters())["rest_calls"] == 0


async def test_a_batch_has_a_maximum_length(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    commands = [{"method": "profile"}] * 10_001
    response = await stack.http.post(
        "/api/v1/batch", headers=auth(key), json={"commands": commands}
    )
    assert "10000" in error_of(response, 400, "invalid_request")["error"]


async def test_batch_errors_of_the_whole_request(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    commands = [{"method": "profile"}]
    no_key = await stack.http.post("/api/v1/batch", json={"commands": commands})
    error_of(no_key, 401, "unauthorized")
    unknown = await stack.http.post(
        "/api/v1/batch", headers=auth(key), json={"portal": "elsewhere", "commands": commands}
    )
    error_of(unknown, 404, "unknown_portal")


# -- /api/v1/list: the NDJSON stream -----------------------------------------------------


async def test_an_export_of_10500_deals_gives_each_once_in_id_order(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    await seed(stack, 10_500)
    await reset_counters(stack)
    expected = 1
    last: dict[str, Any] | None = None
    async with stack.http.stream(
        "POST",
        "/api/v1/list",
        headers=auth(key),
        json={"portal": "demo", "method": "crm.deal.list", "params": {"select": ["TITLE"]}},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        # Line by line as it arrives: the whole body is never held.
        async for line in response.aiter_lines():
            if not line:
                continue
            item = json.loads(line)
            if "ID" not in item:
                last = item
                continue
            assert last is None
            assert item == {"ID": str(expected), "TITLE": f"Deal {expected}"}
            expected += 1
    assert expected == 10_501
    assert last == {"count": 10_500}
    # 50 pages of 50 a request: four full batches, then one whose 11th page is empty.
    assert (await stack.counters())["rest_calls"] == 5


async def test_an_export_honours_the_filter_like_bitrix24s_own_paging(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    await seed(stack, 1_200)
    params = {"filter": {">OPPORTUNITY": 5000}, "select": ["TITLE", "OPPORTUNITY"]}
    paged: list[dict[str, Any]] = []
    start: int | None = 0
    while start is not None:
        page = await stack.call(
            key,
            {
                "method": "crm.deal.list",
                "params": {**params, "select": ["ID", "TITLE", "OPPORTUNITY"], "start": start},
            },
        )
        paged.extend(page.json()["data"]["result"])
        start = page.json()["data"].get("next")
    assert len(paged) == 499

    records, last = await export(stack, key, {"method": "crm.deal.list", "params": params})

    assert records == paged
    assert last == {"count": 499}


@pytest.mark.parametrize(
    ("flt", "first", "last"),
    [
        ({">ID": "1100"}, 1101, 1200),
        # Ranges in flight keep it too: tests/core/test_export.py.
        ({">ID": 100, "<=ID": "1000"}, 101, 1000),
    ],
)
async def test_the_clients_own_id_bounds_are_where_the_export_starts_and_ends(
    connected: tuple[Stack, str], flt: dict[str, Any], first: int, last: int
) -> None:
    stack, key = connected
    await seed(stack, 1_200)
    records, end = await export(stack, key, {"method": "crm.deal.list", "params": {"filter": flt}})
    assert [int(r["ID"]) for r in records] == list(range(first, last + 1))
    assert end == {"count": last - first + 1}


async def test_parameters_a_batch_cannot_carry_go_one_page_a_request(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    await seed(stack, 1_200)
    batched, _ = await export(
        stack, key, {"method": "crm.deal.list", "params": {"filter": {">OPPORTUNITY": 5000}}}
    )
    await reset_counters(stack)
    # JSON null does not survive a batch command's query string: sent as JSON, page by page.
    alone, last = await export(
        stack,
        key,
        {
            "method": "crm.deal.list",
            "params": {"filter": {">OPPORTUNITY": 5000, "COMPANY_ID": None}},
        },
    )
    assert alone == batched
    assert last == {"count": 499}
    # The first page alone, then the highest ID (a request of its own, no batch can carry
    # it here), then 8 full pages and one of 49, several at once.
    assert (await stack.counters())["rest_calls"] == 11


async def test_catalog_products_are_exported_by_their_lowercase_id(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    await seed(stack, 120, entity="catalog.product")
    records, last = await export(
        stack,
        key,
        {
            "method": "catalog.product.list",
            "params": {"select": ["iblockId", "name"], "filter": {"iblockId": 1}},
        },
        id_field="id",
    )
    assert [r["id"] for r in records] == list(range(1, 121))
    assert records[0] == {"id": 1, "iblockId": 1, "name": "Product 1"}
    assert last == {"count": 120}


async def test_a_refusal_of_the_first_request_is_a_plain_error(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    response = await stack.http.post(
        "/api/v1/list", headers=auth(key), json={"method": "crm.nothing.list"}
    )
    body = error_of(response, 404, "bitrix_error")
    assert body["bitrix"]["error"] == "ERROR_METHOD_NOT_FOUND"


async def test_a_failure_mid_stream_ends_it_with_an_error_line(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    await seed(stack, 10_000)
    # Bitrix24 bills a batch to the method `batch` as a whole: 480 s a batch spends the
    # whole budget with the first request, and every request after it is blocked.
    await stack.control.post("/_sandbox/method-cost", json={"method": "batch", "seconds": 480})
    records, last = await export(stack, key, {"method": "crm.deal.list"})
    # The first request's 49 pages (its 50th command found the highest ID), then nothing
    # from the ranges after it, however many were in flight.
    assert [int(r["ID"]) for r in records] == list(range(1, 2_451))
    error = last["error"]
    assert error["code"] == "rate_limited"
    assert error["status"] == 429
    assert error["retry_after"] >= 1
    # The wait is the one the gateway's operating-time budget keeps for `batch` (when
    # Bitrix24 said its budget frees up), not a guess: the next export is told the same.
    again = await stack.http.post(
        "/api/v1/list", headers=auth(key), json={"method": "crm.deal.list"}
    )
    refused = error_of(again, 429, "rate_limited")
    assert abs(refused["retry_after"] - error["retry_after"]) <= 2


# -- /api/v1/list: pages behind a cursor -------------------------------------------------


async def page(stack: Stack, key: str, body: dict[str, Any]) -> httpx.Response:
    return await stack.http.post("/api/v1/list", headers=auth(key), json=body)


@pytest.mark.parametrize("size", [50, 500, 617])
async def test_cursor_pages_go_through_the_same_records(
    connected: tuple[Stack, str], size: int
) -> None:
    stack, key = connected
    await seed(stack, 1_234)
    request: dict[str, Any] = {"method": "crm.deal.list", "params": {"select": ["ID"]}}
    ids: list[int] = []
    cursor: str | None = None
    for _ in range(100):
        response = await page(stack, key, {**request, "page_size": size, "cursor": cursor})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is True
        assert len(body["items"]) <= size
        ids.extend(int(item["ID"]) for item in body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert len(body["items"]) == size
    assert cursor is None
    assert ids == list(range(1, 1_235))


async def test_a_cursor_takes_no_more_requests_than_its_pages_need(
    connected: tuple[Stack, str],
) -> None:
    stack, key = connected
    await seed(stack, 1_234)
    await reset_counters(stack)
    request = {"method": "crm.deal.list", "page_size": 5_000}
    body = (await page(stack, key, request)).json()
    assert len(body["items"]) == 1_234
    assert body["next_cursor"] is None
    assert (await stack.counters())["rest_calls"] == 1  # 24 full pages and one of 34


async def test_a_tampered_or_foreign_cursor_is_refused(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    await seed(stack, 200)
    request: dict[str, Any] = {"method": "crm.deal.list", "params": {}, "page_size": 50}
    cursor = (await page(stack, key, request)).json()["next_cursor"]
    assert isinstance(cursor, str)
    flipped = cursor[:10] + ("A" if cursor[10] != "A" else "B") + cursor[11:]
    other_query = {**request, "params": {"filter": {"STAGE_ID": "WON"}}}
    for body in (
        {**request, "cursor": flipped},
        {**request, "cursor": cursor[:-3]},
        {**request, "cursor": "not a cursor"},
        {**request, "cursor": "x" * 1000},
        {**other_query, "cursor": cursor},
    ):
        error_of(await page(stack, key, body), 400, "invalid_request")
    assert (await page(stack, key, {**request, "cursor": cursor})).status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"method": "crm.deal.get"}, "invalid_request"),
        ({"method": "batch"}, "invalid_request"),
        ({"method": "crm.deal/list"}, "invalid_method"),
        ({"method": "crm.deal.list?auth=x.list"}, "invalid_method"),
        ({}, "invalid_request"),
        ({"method": "crm.deal.list", "extra": 1}, "invalid_request"),
        ({"method": "crm.deal.list", "params": [1]}, "invalid_request"),
        ({"method": "crm.deal.list", "params": {"start": 50}}, "invalid_request"),
        (
            {"method": "crm.deal.list", "params": {"order": {"DATE_CREATE": "DESC"}}},
            "invalid_request",
        ),
        ({"method": "crm.deal.list", "params": {"order": {"ID": "DESC"}}}, "invalid_request"),
        ({"method": "crm.deal.list", "params": {"filter": [1]}}, "invalid_request"),
        ({"method": "crm.deal.list", "params": {"filter": {">ID": "x"}}}, "invalid_request"),
        ({"method": "crm.deal.list", "params": {"filter": {"<=ID": 1.5}}}, "invalid_request"),
        ({"method": "crm.deal.list", "params": {"select": "ID"}}, "invalid_request"),
        ({"method": "crm.deal.list", "params": {"filter": {}, "FILTER": {}}}, "invalid_request"),
        ({"method": "crm.deal.list", "page_size": 0}, "invalid_request"),
        ({"method": "crm.deal.list", "page_size": 5_001}, "invalid_request"),
        ({"method": "crm.deal.list", "page_size": True}, "invalid_request"),
        ({"method": "crm.deal.list", "page_size": "10"}, "invalid_request"),
        ({"method": "crm.deal.list", "cursor": "abc"}, "invalid_request"),
    ],
)
async def test_a_bad_list_request_is_refused_before_anything_is_sent(
    connected: tuple[Stack, str], body: dict[str, Any], code: str
) -> None:
    stack, key = connected
    await reset_counters(stack)
    error_of(await page(stack, key, body), 400, code)
    assert (await stack.counters())["rest_calls"] == 0


async def test_an_id_ascending_order_is_accepted(connected: tuple[Stack, str]) -> None:
    stack, key = connected
    await seed(stack, 3)
    records, last = await export(
        stack, key, {"method": "crm.deal.list", "params": {"order": {"ID": "asc"}}}
    )
    assert [r["ID"] for r in records] == ["1", "2", "3"]
    assert last == {"count": 3}


async def test_an_export_needs_the_list_method_in_the_keys_patterns(
    connected: tuple[Stack, str],
) -> None:
    stack, _ = connected
    await seed(stack, 3)
    key = await stack.add_client("deals-only", methods=("crm.deal.*",))
    records, _ = await export(stack, key, {"method": "crm.deal.list"})
    assert len(records) == 3
    await reset_counters(stack)
    refused = await page(stack, key, {"method": "crm.contact.list"})
    error_of(refused, 403, "method_forbidden")
    assert (await stack.counters())["rest_calls"] == 0


async def test_both_routes_are_described_for_swagger_ui(stack: Stack) -> None:
    schema = (await stack.http.get("/openapi.json")).json()
    assert "$defs" not in json.dumps(schema)  # every reference resolves inside the document
    for path, fields in (
        ("/api/v1/batch", {"portal", "domain", "commands"}),
        ("/api/v1/list", {"portal", "domain", "method", "params", "page_size", "cursor"}),
    ):
        operation = schema["paths"][path]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert set(body["properties"]) == fields
        assert operation["security"] == [{"clientKey": []}]
    listing = schema["paths"]["/api/v1/list"]["post"]["responses"]["200"]["content"]
    assert "application/x-ndjson" in listing
