"""CRM entities and catalog products: CRUD, ``.fields``, and list paging, filters and order."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from b24gate.sandbox import Clock

from .conftest import rest

INVALID_ID = {"error": "", "error_description": "ID is not defined or invalid."}
NOT_FOUND = {"error": "", "error_description": "Not found"}
CRM = ("crm.deal", "crm.contact", "crm.company")


async def ok(response: httpx.Response) -> Any:
    """The ``result`` of a successful call."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert "error" not in body
    return body["result"]


async def seed(http: httpx.AsyncClient, entity: str, count: int) -> None:
    response = await http.post("/_sandbox/seed", json={"entity": entity, "count": count})
    assert response.status_code == 200, response.text


async def deal_ids(http: httpx.AsyncClient, token: str, **params: Any) -> list[int]:
    rows = await ok(await rest(http, "crm.deal.list", token, **params))
    return [int(row["ID"]) for row in rows]


# -- CRM CRUD ---------------------------------------------------------------------------

CRUD_CASES = [
    pytest.param(
        "crm.deal",
        {
            "TITLE": "Big deal",
            "OPPORTUNITY": 1500,
            "CURRENCY_ID": "RUB",
            "OPENED": True,
            "UF_CRM_SOURCE": "site",
        },
        {
            "TITLE": "Big deal",
            "OPPORTUNITY": "1500",
            "CURRENCY_ID": "RUB",
            "OPENED": "Y",
            "UF_CRM_SOURCE": "site",
        },
        {"TITLE": "Bigger deal", "OPPORTUNITY": 2000.5},
        {"TITLE": "Bigger deal", "OPPORTUNITY": "2000.5"},
        id="deal",
    ),
    pytest.param(
        "crm.contact",
        {
            "NAME": "Иван",
            "LAST_NAME": "Петров",
            "COMPANY_ID": 7,
            "PHONE": [{"VALUE": "+7 900 000-00-00", "VALUE_TYPE": "MOBILE"}],
        },
        {"NAME": "Иван", "LAST_NAME": "Петров", "COMPANY_ID": "7"},
        {"POST": "CTO"},
        {"POST": "CTO", "NAME": "Иван"},
        id="contact",
    ),
    pytest.param(
        "crm.company",
        {"TITLE": "Фирма Ромашка", "REVENUE": 100000, "EMAIL": ["info@romashka.invalid"]},
        {"TITLE": "Фирма Ромашка", "REVENUE": "100000"},
        {"TITLE": "Фирма Ромашка и партнёры"},
        {"TITLE": "Фирма Ромашка и партнёры", "REVENUE": "100000"},
        id="company",
    ),
]


@pytest.mark.parametrize(("entity", "fields", "stored", "change", "changed"), CRUD_CASES)
async def test_crm_crud_round_trip(
    client: httpx.AsyncClient,
    token: str,
    entity: str,
    fields: dict[str, Any],
    stored: dict[str, Any],
    change: dict[str, Any],
    changed: dict[str, Any],
) -> None:
    noise = {"ID": 999, "NOT_A_FIELD": "x", "DATE_CREATE": "2000-01-01T00:00:00+00:00"}
    new_id = await ok(await rest(client, f"{entity}.add", token, fields={**fields, **noise}))
    assert new_id == 1
    assert isinstance(new_id, int)
    assert await ok(await rest(client, f"{entity}.add", token, fields=fields)) == 2

    record = await ok(await rest(client, f"{entity}.get", token, id=new_id))
    assert record["ID"] == "1"
    assert {k: record[k] for k in stored} == stored
    assert record["CREATED_BY_ID"] == "1"
    assert record["ASSIGNED_BY_ID"] == "1"
    assert "NOT_A_FIELD" not in record  # unknown fields are ignored
    assert record["DATE_CREATE"] != noise["DATE_CREATE"]  # read-only fields too
    assert record["COMMENTS"] is None  # every field is there, empty ones as null
    assert record["ORIGIN_ID"] is None

    assert await ok(await rest(client, f"{entity}.update", token, id=new_id, fields=change)) is True
    record = await ok(await rest(client, f"{entity}.get", token, id=new_id))
    assert {k: record[k] for k in changed} == changed

    assert await ok(await rest(client, f"{entity}.delete", token, id=new_id)) is True
    for verb, extra in (("get", {}), ("update", {"fields": change}), ("delete", {})):
        gone = await rest(client, f"{entity}.{verb}", token, id=new_id, **extra)
        assert gone.status_code == 400, verb
        assert gone.json() == NOT_FOUND, verb
    # The other record is untouched.
    assert (await ok(await rest(client, f"{entity}.get", token, id=2)))["ID"] == "2"


async def test_multiple_fields_come_back_as_lists_of_values(
    client: httpx.AsyncClient, token: str
) -> None:
    contact_id = await ok(
        await rest(
            client,
            "crm.contact.add",
            token,
            fields={
                "NAME": "Anna",
                "PHONE": [{"VALUE": "+7 900", "VALUE_TYPE": "MOBILE"}, {"VALUE": "+7 901"}],
                "EMAIL": [{"VALUE": "anna@example.invalid", "VALUE_TYPE": "WORK"}],
            },
        )
    )
    contact = await ok(await rest(client, "crm.contact.get", token, id=contact_id))
    assert [(p["VALUE"], p["VALUE_TYPE"]) for p in contact["PHONE"]] == [
        ("+7 900", "MOBILE"),
        ("+7 901", "WORK"),
    ]
    assert [p["ID"] for p in contact["PHONE"]] == ["1", "2"]
    assert contact["EMAIL"][0]["VALUE"] == "anna@example.invalid"


async def test_id_parameter_is_case_insensitive(client: httpx.AsyncClient, token: str) -> None:
    new_id = await ok(await rest(client, "crm.deal.add", token, FIELDS={"TITLE": "Upper"}))
    record = await ok(await rest(client, "crm.deal.get", token, ID=str(new_id)))
    assert record["TITLE"] == "Upper"


@pytest.mark.parametrize("entity", CRM)
@pytest.mark.parametrize("verb", ["get", "update", "delete"])
@pytest.mark.parametrize("bad_id", [None, 0, -1, "abc", ""])
async def test_missing_or_invalid_id(
    client: httpx.AsyncClient, token: str, entity: str, verb: str, bad_id: Any
) -> None:
    await ok(await rest(client, f"{entity}.add", token, fields={"TITLE": "x", "NAME": "x"}))
    params: dict[str, Any] = {} if bad_id is None else {"id": bad_id}
    if verb == "update":
        params["fields"] = {"COMMENTS": "changed"}
    response = await rest(client, f"{entity}.{verb}", token, **params)
    assert response.status_code == 400
    assert response.json() == INVALID_ID


async def test_missing_record_is_not_found(client: httpx.AsyncClient, token: str) -> None:
    for entity in CRM:
        response = await rest(client, f"{entity}.get", token, id=12345)
        assert response.status_code == 400
        assert response.json() == NOT_FOUND


@pytest.mark.parametrize("entity", CRM)
async def test_fields_describe_the_entity(
    client: httpx.AsyncClient, token: str, entity: str
) -> None:
    described = await ok(await rest(client, f"{entity}.fields", token))
    assert described["ID"]["type"] == "integer"
    assert described["ID"]["isReadOnly"] is True
    assert described["DATE_CREATE"]["isReadOnly"] is True
    assert described["COMMENTS"]["isReadOnly"] is False
    for name, spec in described.items():
        assert set(spec) == {
            "type",
            "isRequired",
            "isReadOnly",
            "isImmutable",
            "isMultiple",
            "isDynamic",
            "title",
        }, name
    # Every field .get returns is described, and the other way round.
    await ok(await rest(client, f"{entity}.add", token, fields={}))
    record = await ok(await rest(client, f"{entity}.get", token, id=1))
    assert set(record) == set(described)
    if entity != "crm.deal":
        assert described["PHONE"]["isMultiple"] is True
        assert described["PHONE"]["type"] == "crm_multifield"


async def test_dates_follow_the_portal_clock(
    client: httpx.AsyncClient, token: str, clock: Clock
) -> None:
    created_at = await ok(await rest(client, "server.time", token))
    deal_id = await ok(await rest(client, "crm.deal.add", token, fields={"TITLE": "t"}))
    deal = await ok(await rest(client, "crm.deal.get", token, id=deal_id))
    assert deal["DATE_CREATE"] == deal["DATE_MODIFY"] == created_at

    clock.advance(600)
    modified_at = await ok(await rest(client, "server.time", token))
    await ok(await rest(client, "crm.deal.update", token, id=deal_id, fields={"TITLE": "u"}))
    deal = await ok(await rest(client, "crm.deal.get", token, id=deal_id))
    assert deal["DATE_CREATE"] == created_at
    assert deal["DATE_MODIFY"] == modified_at
    # An incremental sync by modification time finds exactly the changed deal.
    assert await deal_ids(client, token, filter={">DATE_MODIFY": created_at}) == [deal_id]


# -- catalog.product ----------------------------------------------------------------------


async def test_catalog_product_crud(client: httpx.AsyncClient, token: str) -> None:
    fields = {"iblockId": 25, "name": "Widget", "purchasingPrice": 9.5, "junk": "ignored"}
    added = await ok(await rest(client, "catalog.product.add", token, fields=fields))
    element = added["element"]
    assert set(added) == {"element"}
    assert element["id"] == 1
    assert element["iblockId"] == 25
    assert element["name"] == "Widget"
    assert element["purchasingPrice"] == 9.5
    assert element["code"] is None
    assert "junk" not in element

    got = await ok(await rest(client, "catalog.product.get", token, id=1))
    assert got == {"product": element}

    updated = await ok(
        await rest(client, "catalog.product.update", token, id=1, fields={"name": "Gadget"})
    )
    assert updated["element"]["name"] == "Gadget"
    assert updated["element"]["iblockId"] == 25
    assert (await ok(await rest(client, "catalog.product.get", token, id=1)))["product"][
        "name"
    ] == "Gadget"

    assert await ok(await rest(client, "catalog.product.delete", token, id=1)) is True
    gone = await rest(client, "catalog.product.get", token, id=1)
    assert gone.status_code == 400
    assert gone.json()["error_description"] == "product does not exist."
    assert (await rest(client, "catalog.product.delete", token, id=1)).status_code == 400
    update_gone = await rest(client, "catalog.product.update", token, id=1, fields={"name": "x"})
    assert update_gone.status_code == 400


@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        (None, "fields"),
        ({}, "fields"),
        ({"name": "No block"}, "iblockId"),
        ({"iblockId": 25}, "name"),
    ],
)
async def test_catalog_product_add_needs_iblock_and_name(
    client: httpx.AsyncClient, token: str, fields: dict[str, Any] | None, mentions: str
) -> None:
    params = {} if fields is None else {"fields": fields}
    response = await rest(client, "catalog.product.add", token, **params)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"error", "error_description"}
    assert mentions in body["error_description"]
    assert (await rest(client, "catalog.product.get", token, id=1)).status_code == 400


async def test_catalog_product_list(client: httpx.AsyncClient, token: str) -> None:
    for n in range(120):
        fields = {"iblockId": 27 if n % 4 == 3 else 25, "name": f"P{n}", "sort": n}
        await ok(await rest(client, "catalog.product.add", token, fields=fields))

    select = ["id", "iblockId", "name"]
    body = (
        await rest(client, "catalog.product.list", token, select=select, filter={"iblockId": 27})
    ).json()
    assert set(body["result"]) == {"products"}
    products = body["result"]["products"]
    assert body["total"] == 30
    assert "next" not in body
    assert products[0] == {"id": 4, "iblockId": 27, "name": "P3"}
    assert [p["id"] for p in products] == list(range(4, 121, 4))

    body = (
        await rest(
            client,
            "catalog.product.list",
            token,
            select=select,
            filter={"iblockId": "25", ">=sort": 10},
            order={"id": "DESC"},
        )
    ).json()
    assert body["total"] == 82
    assert body["next"] == 50
    expected = [i for i in range(120, 10, -1) if i % 4 != 0]
    assert [p["id"] for p in body["result"]["products"]] == expected[:50]


@pytest.mark.parametrize(
    ("params", "mentions"),
    [
        ({"filter": {"iblockId": 25}}, "select"),
        ({"select": ["id", "name"], "filter": {"iblockId": 25}}, "select"),
        ({"select": ["iblockId"], "filter": {"iblockId": 25}}, "select"),
        ({"select": ["id", "iblockId"]}, "iblockId"),
        ({"select": ["id", "iblockId"], "filter": {"name": "x"}}, "iblockId"),
    ],
)
async def test_catalog_product_list_needs_id_iblock_select_and_iblock_filter(
    client: httpx.AsyncClient, token: str, params: dict[str, Any], mentions: str
) -> None:
    response = await rest(client, "catalog.product.list", token, **params)
    assert response.status_code == 400
    assert mentions in response.json()["error_description"]


async def test_seeded_products_are_listable(client: httpx.AsyncClient, token: str) -> None:
    await seed(client, "catalog.product", 3)
    described = await ok(await rest(client, "catalog.product.get", token, id=1))
    product = described["product"]
    assert product["name"]
    block = product["iblockId"]
    assert isinstance(block, int)
    listed = await ok(
        await rest(
            client,
            "catalog.product.list",
            token,
            select=["id", "iblockId", "name"],
            filter={"iblockId": block},
        )
    )
    assert [p["id"] for p in listed["products"]] == [1, 2, 3]
    assert all(p["name"] for p in listed["products"])


# -- lists --------------------------------------------------------------------------------


@pytest.mark.parametrize("entity", CRM)
async def test_list_pages_of_50_with_total_and_next(
    client: httpx.AsyncClient, token: str, entity: str
) -> None:
    await seed(client, entity, 120)
    seen: list[str] = []
    for start, size, nxt in ((0, 50, 50), (50, 50, 100), (100, 20, None)):
        body = (await rest(client, f"{entity}.list", token, start=start)).json()
        assert len(body["result"]) == size
        assert body["total"] == 120
        assert body.get("next") == nxt
        assert ("next" in body) is (nxt is not None)  # absent, not null, on the last page
        seen += [row["ID"] for row in body["result"]]
    assert seen == [str(n) for n in range(1, 121)]

    beyond = (await rest(client, f"{entity}.list", token, start=500)).json()
    assert beyond["result"] == []
    assert beyond["total"] == 120
    assert "next" not in beyond


async def test_start_minus_one_skips_the_count(client: httpx.AsyncClient, token: str) -> None:
    await seed(client, "crm.deal", 120)
    body = (await rest(client, "crm.deal.list", token, start=-1)).json()
    assert len(body["result"]) == 50
    assert body["total"] == 0
    assert "next" not in body
    assert "time" in body


async def test_an_empty_list(client: httpx.AsyncClient, token: str) -> None:
    body = (await rest(client, "crm.deal.list", token)).json()
    assert body["result"] == []
    assert body["total"] == 0
    assert "next" not in body


# Seeded deal N: TITLE "Deal N", STAGE_ID ("NEW", "PREPARATION", "WON")[N % 3],
# OPPORTUNITY "<N*10>.00" (as strings, the way CRM answers them).
FILTER_CASES = [
    ({"ID": 5}, [5]),
    ({"=ID": "5"}, [5]),
    ({"=STAGE_ID": "WON"}, [n for n in range(1, 31) if n % 3 == 2]),
    ({"!STAGE_ID": "WON"}, [n for n in range(1, 31) if n % 3 != 2]),
    ({"!ID": 1}, list(range(2, 31))),
    # Numbers compare as numbers: as text "10" < "9" and "100.00" < "95".
    ({">ID": "9"}, list(range(10, 31))),
    ({">OPPORTUNITY": 95}, list(range(10, 31))),
    ({">=OPPORTUNITY": "100"}, list(range(10, 31))),
    ({">=ID": 29}, [29, 30]),
    ({"<ID": "10"}, list(range(1, 10))),
    ({"<OPPORTUNITY": "100"}, list(range(1, 10))),
    ({"<=OPPORTUNITY": 50}, [1, 2, 3, 4, 5]),
    ({"<=ID": 3}, [1, 2, 3]),
    ({"%TITLE": "Deal 2"}, [2, *range(20, 30)]),
    ({"%TITLE": "al 3"}, [3, 30]),
    ({"@ID": [3, 7, 11]}, [3, 7, 11]),
    ({"@STAGE_ID": ["NEW", "PREPARATION"]}, [n for n in range(1, 31) if n % 3 != 2]),
    ({">ID": 10, "<=ID": 20, "STAGE_ID": "NEW"}, [12, 15, 18]),
    ({">ID": 30}, []),
    ({"TITLE": "No such deal"}, []),
    # Text compares as text: a batch reference left unresolved (`[]`), or a word, sorts
    # above every ID, as the sandbox answers without scanning the table.
    ({">ID": []}, []),
    ({">=ID": "x"}, []),
    ({"<ID": "x"}, list(range(1, 31))),
]


@pytest.mark.parametrize(("flt", "expected"), FILTER_CASES)
async def test_filter_operators(
    client: httpx.AsyncClient, token: str, flt: dict[str, Any], expected: list[int]
) -> None:
    await seed(client, "crm.deal", 30)
    body = (await rest(client, "crm.deal.list", token, filter=flt)).json()
    assert [int(row["ID"]) for row in body["result"]] == expected
    assert body["total"] == len(expected)


async def test_filter_compares_values_set_through_the_api(
    client: httpx.AsyncClient, token: str
) -> None:
    for amount in (9, 10, 100, 2.5):
        await ok(await rest(client, "crm.deal.add", token, fields={"OPPORTUNITY": amount}))
    assert await deal_ids(client, token, filter={">OPPORTUNITY": 9}) == [2, 3]
    assert await deal_ids(client, token, filter={"<OPPORTUNITY": "10"}) == [1, 4]
    # A deal without the field is never equal to a value.
    await ok(await rest(client, "crm.deal.add", token, fields={"TITLE": "no amount"}))
    assert await deal_ids(client, token, filter={"OPPORTUNITY": 10}) == [2]


async def test_select_only_those_fields(client: httpx.AsyncClient, token: str) -> None:
    await seed(client, "crm.deal", 3)
    rows = await ok(await rest(client, "crm.deal.list", token, select=["ID", "TITLE"]))
    assert rows == [{"ID": str(n), "TITLE": f"Deal {n}"} for n in (1, 2, 3)]

    described = await ok(await rest(client, "crm.deal.fields", token))
    default = await ok(await rest(client, "crm.deal.list", token))
    star = await ok(await rest(client, "crm.deal.list", token, select=["*"]))
    assert set(default[0]) == set(star[0]) == set(described)
    assert star[0]["STAGE_ID"] == "PREPARATION"
    assert star[0]["OPPORTUNITY"] == "10.00"
    assert star[0]["COMMENTS"] is None


async def test_select_star_leaves_out_multiple_fields(
    client: httpx.AsyncClient, token: str
) -> None:
    fields = {"NAME": "Anna", "PHONE": [{"VALUE": "+7 900"}]}
    await ok(await rest(client, "crm.contact.add", token, fields=fields))
    star = await ok(await rest(client, "crm.contact.list", token, select=["*"]))
    assert star[0]["NAME"] == "Anna"
    assert "PHONE" not in star[0]
    asked = await ok(await rest(client, "crm.contact.list", token, select=["ID", "PHONE"]))
    assert asked[0]["PHONE"][0]["VALUE"] == "+7 900"


async def test_order_on_id_and_on_other_fields(client: httpx.AsyncClient, token: str) -> None:
    await seed(client, "crm.deal", 120)
    assert await deal_ids(client, token, order={"ID": "DESC"}) == list(range(120, 70, -1))
    assert await deal_ids(client, token, order={"ID": "desc"}, start=100) == list(range(20, 0, -1))
    assert await deal_ids(client, token, order={"ID": "ASC"}) == list(range(1, 51))
    # OPPORTUNITY is a number-string: "1000.00" sorts after "990.00".
    assert await deal_ids(client, token, order={"OPPORTUNITY": "DESC"}) == list(range(120, 70, -1))
    assert await deal_ids(client, token, order={"OPPORTUNITY": "ASC"}, filter={">ID": 95}) == list(
        range(96, 121)
    )
    # Two keys: by stage, then newest first within a stage.
    by_stage = await deal_ids(
        client, token, order={"STAGE_ID": "ASC", "ID": "DESC"}, filter={"<=ID": 9}
    )
    assert by_stage == [9, 6, 3, 7, 4, 1, 8, 5, 2]
    titles = await ok(
        await rest(
            client, "crm.deal.list", token, order={"TITLE": "DESC"}, select=["TITLE"], start=-1
        )
    )
    assert titles[0] == {"TITLE": "Deal 99"}


async def walk_by_id(http: httpx.AsyncClient, token: str) -> tuple[list[int], int]:
    """The fast export pattern from Bitrix24's docs: ``>ID`` + ``start=-1``, until a short page."""
    ids: list[int] = []
    pages = 0
    last = 0
    while True:
        body = (
            await rest(
                http,
                "crm.deal.list",
                token,
                order={"ID": "ASC"},
                filter={">ID": last},
                select=["ID", "TITLE"],
                start=-1,
            )
        ).json()
        pages += 1
        assert body["total"] == 0
        assert "next" not in body
        page = [int(row["ID"]) for row in body["result"]]
        ids += page
        if len(page) < 50:
            return ids, pages
        last = page[-1]


async def test_fast_export_walks_every_deal_exactly_once(
    client: httpx.AsyncClient, token: str
) -> None:
    await seed(client, "crm.deal", 1234)
    for gone in (50, 51, 700):
        await ok(await rest(client, "crm.deal.delete", token, id=gone))
    ids, pages = await walk_by_id(client, token)
    expected = [n for n in range(1, 1235) if n not in (50, 51, 700)]
    assert ids == expected
    assert pages == 25


async def test_ten_thousand_deals_page_by_id(client: httpx.AsyncClient, token: str) -> None:
    await seed(client, "crm.deal", 10_000)
    ids, pages = await walk_by_id(client, token)
    assert ids == list(range(1, 10_001))
    assert pages == 201  # 200 full pages, then an empty one


async def test_list_params_as_php_form_work_like_json(
    client: httpx.AsyncClient, token: str
) -> None:
    await seed(client, "crm.deal", 20)
    as_json = (
        await rest(
            client,
            "crm.deal.list",
            token,
            filter={">ID": "5", "@STAGE_ID": ["NEW", "WON"]},
            select=["ID", "TITLE"],
            order={"ID": "DESC"},
        )
    ).json()
    form = (
        "filter[>ID]=5&filter[@STAGE_ID][]=NEW&filter[@STAGE_ID][]=WON"
        "&select[]=ID&select[]=TITLE&order[ID]=DESC&auth=" + token
    )
    as_form = (
        await client.post(
            "/rest/crm.deal.list.json",
            content=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    ).json()
    encoded = urlencode(
        [
            ("filter[>ID]", "5"),
            ("filter[@STAGE_ID][0]", "NEW"),
            ("filter[@STAGE_ID][1]", "WON"),
            ("select[0]", "ID"),
            ("select[1]", "TITLE"),
            ("order[ID]", "DESC"),
        ]
    )
    as_query = (await client.post(f"/rest/crm.deal.list?{encoded}", data={"auth": token})).json()

    ids = [int(row["ID"]) for row in as_json["result"]]
    assert ids == [n for n in range(20, 5, -1) if n % 3 != 1]
    assert as_json["result"][0] == {"ID": "20", "TITLE": "Deal 20"}
    for other in (as_form, as_query):
        assert other["result"] == as_json["result"]
        assert other["total"] == as_json["total"] == len(ids)


@pytest.mark.parametrize(
    ("order", "start", "expected", "total", "nxt"),
    [
        ("ASC", 0, list(range(11, 61)), 90, 50),
        ("ASC", 50, list(range(61, 101)), 90, None),
        ("DESC", 0, list(range(100, 50, -1)), 90, 50),
        ("DESC", 50, list(range(50, 10, -1)), 90, None),
        ("DESC", -1, list(range(100, 50, -1)), 0, None),
        ("ASC", 100, [], 90, None),
    ],
)
async def test_a_list_bounded_by_id_alone_pages_and_counts_like_any_other(
    client: httpx.AsyncClient,
    token: str,
    order: str,
    start: int,
    expected: list[int],
    total: int,
    nxt: int | None,
) -> None:
    # ID bounds alone are answered from the ID index without a scan: the same pages,
    # totals and `next` as a filter on any other field gives.
    await seed(client, "crm.deal", 120)
    flt = {">ID": 10, "<=ID": "100"}
    body = (
        await rest(client, "crm.deal.list", token, filter=flt, order={"ID": order}, start=start)
    ).json()
    assert [int(row["ID"]) for row in body["result"]] == expected
    assert body.get("total") == total
    assert body.get("next") == nxt
