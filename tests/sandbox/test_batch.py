"""``batch``: command maps and lists, ``$result`` references, errors, limits and rate counting."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from b24gate.sandbox import Clock, batch_commands, parse_url, resolve

from .conftest import MakeSandbox, connect, rest

RESULT_KEYS = {"result", "result_error", "result_total", "result_next", "result_time"}
TIME_KEYS = {
    "start",
    "finish",
    "duration",
    "processing",
    "date_start",
    "date_finish",
    "operating",
    "operating_reset_at",
}
LENGTH_EXCEEDED = {
    "error": "ERROR_BATCH_LENGTH_EXCEEDED",
    "error_description": "Max batch length exceeded",
}


async def batch(http: httpx.AsyncClient, token: str, cmd: Any, **params: Any) -> dict[str, Any]:
    """The inner ``result`` of a batch, after checking the outer answer."""
    if cmd is not None:
        params["cmd"] = cmd
    response = await rest(http, "batch", token, **params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"result", "time"}  # no total/next at the top, even for list commands
    inner: dict[str, Any] = body["result"]
    assert set(inner) == RESULT_KEYS
    return inner


async def deal_count(http: httpx.AsyncClient, token: str) -> int:
    response = await rest(http, "crm.deal.list", token)
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


async def test_cmd_as_a_map(client: httpx.AsyncClient, token: str) -> None:
    inner = await batch(
        client,
        token,
        {
            "me": "profile",
            "add": "crm.deal.add?fields[TITLE]=First",
            "get": "crm.deal.get?id=1",
        },
    )
    assert inner["result"]["me"]["ID"] == "1"
    assert inner["result"]["add"] == 1
    assert inner["result"]["get"]["TITLE"] == "First"
    assert list(inner["result"]) == ["me", "add", "get"]  # commands keep their order
    # Empty maps are PHP's empty arrays.
    assert inner["result_error"] == []
    assert inner["result_total"] == []
    assert inner["result_next"] == []
    assert set(inner["result_time"]) == {"me", "add", "get"}
    for timing in inner["result_time"].values():
        assert set(timing) == TIME_KEYS
        assert timing["finish"] >= timing["start"]


async def test_cmd_as_a_list_answers_lists(client: httpx.AsyncClient, token: str) -> None:
    inner = await batch(
        client, token, ["crm.deal.add?fields[TITLE]=One", "crm.deal.add?fields[TITLE]=Two"]
    )
    assert inner["result"] == [1, 2]
    assert isinstance(inner["result_time"], list)
    assert len(inner["result_time"]) == 2
    assert inner["result_error"] == []

    inner = await batch(client, token, ["crm.deal.get?id=2", "crm.deal.list?select[]=ID"])
    assert inner["result"][0]["TITLE"] == "Two"
    assert inner["result"][1] == [{"ID": "1"}, {"ID": "2"}]
    # Only command 1 is a list: keyed "1" alone, that map is an object, not a list.
    assert inner["result_total"] == {"1": 2}


async def test_a_failed_command_in_a_list_turns_the_result_into_a_map(
    client: httpx.AsyncClient, token: str
) -> None:
    inner = await batch(client, token, ["crm.deal.get?id=99", "crm.deal.add?fields[TITLE]=x"])
    assert inner["result"] == {"1": 1}
    # ...while errors keyed 0 alone are 0..n-1 again: a list.
    assert inner["result_error"] == [{"error": "", "error_description": "Not found"}]


async def test_result_references(client: httpx.AsyncClient, token: str) -> None:
    await batch(client, token, [f"crm.deal.add?fields[TITLE]=Deal%20{n}" for n in (1, 2, 3)])
    inner = await batch(
        client,
        token,
        {
            "add": "crm.deal.add?fields[TITLE]=Fresh&fields[OPPORTUNITY]=500",
            "get": "crm.deal.get?id=$result[add]",
            "list": "crm.deal.list?order[ID]=DESC&filter[<ID]=$result[add]"
            "&select[]=ID&select[]=TITLE",
            "newest_old": "crm.deal.get?id=$result[list][0][ID]",
            "copy": "crm.deal.add?fields[TITLE]=Copy%20of%20$result[get][TITLE]"
            "&fields[COMMENTS]=from%20deal%20$result[add]",
            "copy_get": "crm.deal.get?ID=$result[copy]",
        },
    )
    result = inner["result"]
    assert inner["result_error"] == []
    assert result["add"] == 4
    assert result["get"]["ID"] == "4"
    assert result["get"]["OPPORTUNITY"] == "500"
    assert [row["ID"] for row in result["list"]] == ["3", "2", "1"]
    assert result["newest_old"]["TITLE"] == "Deal 3"
    assert result["copy_get"]["TITLE"] == "Copy of Fresh"
    assert result["copy_get"]["COMMENTS"] == "from deal 4"


async def test_errors_with_halt_0_let_the_others_run(client: httpx.AsyncClient, token: str) -> None:
    inner = await batch(
        client,
        token,
        {
            "first": "crm.deal.add?fields[TITLE]=a",
            "missing": "crm.deal.get?id=999",
            "bad_id": "crm.deal.get?id=abc",
            "unknown": "crm.nothing.here",
            "last": "crm.deal.add?fields[TITLE]=b",
        },
        halt=0,
    )
    assert inner["result"] == {"first": 1, "last": 2}
    assert inner["result_error"] == {
        "missing": {"error": "", "error_description": "Not found"},
        "bad_id": {"error": "", "error_description": "ID is not defined or invalid."},
        "unknown": {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"},
    }
    assert set(inner["result_time"]) == {"first", "last"}
    assert await deal_count(client, token) == 2


async def test_halt_1_stops_at_the_first_error(client: httpx.AsyncClient, token: str) -> None:
    inner = await batch(
        client,
        token,
        {
            "first": "crm.deal.add?fields[TITLE]=a",
            "missing": "crm.deal.get?id=999",
            "never": "crm.deal.add?fields[TITLE]=b",
            "never_list": "crm.deal.list",
        },
        halt=1,
    )
    assert inner["result"] == {"first": 1}
    assert inner["result_error"] == {"missing": {"error": "", "error_description": "Not found"}}
    assert set(inner["result_time"]) == {"first"}
    assert inner["result_total"] == []
    assert inner["result_next"] == []
    assert await deal_count(client, token) == 1


async def test_more_than_50_commands(client: httpx.AsyncClient, token: str) -> None:
    cmd = {f"k{n}": f"crm.deal.add?fields[TITLE]=D{n}" for n in range(55)}
    inner = await batch(client, token, cmd)
    assert list(inner["result"]) == [f"k{n}" for n in range(50)]
    assert inner["result"]["k49"] == 50
    assert inner["result_error"] == {f"k{n}": LENGTH_EXCEEDED for n in range(50, 55)}
    assert await deal_count(client, token) == 50

    as_list = await batch(client, token, [f"crm.deal.add?fields[TITLE]=E{n}" for n in range(52)])
    assert as_list["result"] == list(range(51, 101))
    assert as_list["result_error"] == {"50": LENGTH_EXCEEDED, "51": LENGTH_EXCEEDED}
    assert await deal_count(client, token) == 100


async def test_nested_batch_is_not_allowed(client: httpx.AsyncClient, token: str) -> None:
    inner = await batch(
        client,
        token,
        {"inner": "batch?cmd[x]=crm.deal.add", "upper": "BATCH", "ok": "profile"},
    )
    not_allowed = {
        "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
        "error_description": "Method is not allowed for batch usage",
    }
    assert inner["result_error"] == {"inner": not_allowed, "upper": not_allowed}
    assert set(inner["result"]) == {"ok"}
    assert await deal_count(client, token) == 0


async def test_a_command_outside_the_scope(make_sandbox: MakeSandbox) -> None:
    sb = await make_sandbox(scope=("crm",))
    async with httpx.AsyncClient(base_url=sb.base_url) as http:
        token = (await connect(http, sb))["access_token"]
        inner = await batch(
            http,
            token,
            {"deals": "crm.deal.list", "me": "user.current", "products": "catalog.product.get"},
        )
    scope_error = {
        "error": "insufficient_scope",
        "error_description": (
            "The request requires higher privileges than provided by the access token"
        ),
    }
    assert inner["result_error"] == {"me": scope_error, "products": scope_error}
    assert inner["result"] == {"deals": []}


async def test_list_commands_fill_total_and_next(client: httpx.AsyncClient, token: str) -> None:
    seeded = await client.post("/_sandbox/seed", json={"entity": "crm.deal", "count": 120})
    assert seeded.status_code == 200
    inner = await batch(
        client,
        token,
        {
            "first": "crm.deal.list?select[]=ID",
            "second": "crm.deal.list?select[]=ID&start=50",
            "last": "crm.deal.list?select[]=ID&start=100",
            "fast": "crm.deal.list?select[]=ID&start=-1&order[ID]=ASC&filter[>ID]=110",
            "one": "crm.deal.get?id=1",
        },
    )
    assert inner["result_total"] == {"first": 120, "second": 120, "last": 120, "fast": 0}
    assert inner["result_next"] == {"first": 50, "second": 100}
    assert len(inner["result"]["first"]) == 50
    assert len(inner["result"]["last"]) == 20
    assert [row["ID"] for row in inner["result"]["fast"]] == [str(n) for n in range(111, 121)]


async def test_command_params_are_url_decoded_once(client: httpx.AsyncClient, token: str) -> None:
    inner = await batch(
        client,
        token,
        {
            "add": "crm.deal.add?fields[TITLE]=A%26B&fields[COMMENTS]=50%25%20off%3D%3F"
            "&fields[SOURCE_ID]=a+b",
            "get": "crm.deal.get?id=$result[add]",
            "find": "crm.deal.list?filter[TITLE]=A%26B&select[]=ID",
        },
    )
    deal = inner["result"]["get"]
    assert deal["TITLE"] == "A&B"
    assert deal["COMMENTS"] == "50% off=?"
    assert deal["SOURCE_ID"] == "a b"
    assert inner["result"]["find"] == [{"ID": "1"}]


async def test_batch_sent_as_a_form(client: httpx.AsyncClient, token: str) -> None:
    # As a form, each command is itself URL-encoded: "%26" goes over the wire as "%2526".
    response = await client.post(
        "/rest/batch.json",
        data={
            "auth": token,
            "halt": "0",
            "cmd[a]": "crm.deal.add?fields[TITLE]=A%26B",
            "cmd[b]": "crm.deal.get?id=$result[a]",
            "cmd[c]": "crm.deal.get?id=77",
        },
    )
    assert response.status_code == 200, response.text
    assert "%2526" in response.request.content.decode()
    inner = response.json()["result"]
    assert inner["result"]["a"] == 1
    assert inner["result"]["b"]["TITLE"] == "A&B"
    assert inner["result_error"] == {"c": {"error": "", "error_description": "Not found"}}

    # halt=1 in a form, command list as cmd[]
    response = await client.post(
        "/rest/batch",
        data={
            "auth": token,
            "halt": "1",
            "cmd[]": ["crm.deal.get?id=77", "crm.deal.add?fields[TITLE]=never"],
        },
    )
    inner = response.json()["result"]
    assert inner["result"] == []
    assert inner["result_error"] == [{"error": "", "error_description": "Not found"}]
    assert await deal_count(client, token) == 1


async def test_a_batch_is_one_request_for_the_leaky_bucket(
    make_sandbox: MakeSandbox, clock: Clock
) -> None:
    sb = await make_sandbox(rate=1, burst=2)
    ten = {f"c{n}": f"crm.deal.add?fields[TITLE]=T{n}" for n in range(10)}
    async with httpx.AsyncClient(base_url=sb.base_url) as http:
        token = (await connect(http, sb))["access_token"]
        for _ in range(2):
            inner = await batch(http, token, ten)
            assert len(inner["result"]) == 10
            assert inner["result_error"] == []
        refused = await rest(http, "batch", token, cmd=ten)
        assert refused.status_code == 503
        assert refused.json() == {
            "error": "QUERY_LIMIT_EXCEEDED",
            "error_description": "Too many requests",
        }
        counters = (await http.get("/_sandbox/counters")).json()
        assert counters["batches"] == 2
        assert counters["executed"] == 2
        assert counters["rejected_503"] == 1
        assert counters["rest_calls"] == 3

        clock.advance(1)  # one request's worth drains
        inner = await batch(http, token, ten)
        assert inner["result"]["c9"] == 30
    assert len(sb.portal.tables["crm.deal"].records) == 30  # the refused batch ran nothing


# -- parsing as Bitrix24 does (CRestProvider::methodsBatch, CRestUtil::processBatchElement) --


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("crm.deal.list?filter[ID]=1", {"path": "crm.deal.list", "query": "filter[ID]=1"}),
        ("crm.x:user.get", {"scheme": "crm.x", "path": "user.get"}),
        ("crm.deal.add#.list", {"path": "crm.deal.add", "fragment": ".list"}),
        ("user.get?x#y", {"path": "user.get", "query": "x", "fragment": "y"}),
        ("//host/user.get", {"host": "host", "path": "/user.get"}),
        (" user.get ", {"path": " user.get "}),
        ("user.get\n", {"path": "user.get_"}),  # control characters become `_`
        ("user.get?a=1:2", {"path": "user.get", "query": "a=1:2"}),
        ("user_x.get:a", {"path": "user_x.get:a"}),  # `_` is no scheme character
        ("user.get:80", {"host": "user.get", "port": 80}),
        ("a:/user.get", {"scheme": "a", "path": "/user.get"}),
        (
            "https://h:8080/p?q",
            {"scheme": "https", "host": "h", "port": 8080, "path": "/p", "query": "q"},
        ),
        ("mailto:", {"scheme": "mailto"}),
        (":80", None),
        ("user.get:99999", None),
        ("", {"path": ""}),
    ],
)
def test_parse_url_reads_commands_as_php_does(url: str, parts: dict[str, Any] | None) -> None:
    assert parse_url(url) == parts


async def test_top_level_names_are_read_regardless_of_case(
    client: httpx.AsyncClient, token: str
) -> None:
    inner = await batch(client, token, None, CMD={"me": "user.current"}, HALT="false")
    assert inner["result"]["me"]["ID"] == "1"
    # Of several spellings, PHP keeps the last one sent.
    response = await client.post(
        "/rest/batch",
        json={
            "auth": token,
            "cmd": {"add": "crm.deal.add?fields[TITLE]=first"},
            "Cmd": {"me": "user.current"},
        },
    )
    assert set(response.json()["result"]["result"]) == {"me"}
    assert await deal_count(client, token) == 0


async def test_halt_is_phps_bool(client: httpx.AsyncClient, token: str) -> None:
    cmd = {"missing": "crm.deal.get?id=999", "after": "crm.deal.add?fields[TITLE]=x"}
    # "false" is a non-empty string: true in PHP, so the batch stops.
    assert (await batch(client, token, cmd, halt="false"))["result"] == []
    assert (await batch(client, token, cmd, halt="0"))["result"] == {"after": 1}


async def test_the_method_is_parse_urls_path(client: httpx.AsyncClient, token: str) -> None:
    inner = await batch(
        client,
        token,
        {
            "scheme": "crm.x:user.current",
            "fragment": "crm.deal.add?fields[TITLE]=kept#.list",
            "host": "//portal/user.current",
            "spaced": " user.current",
        },
    )
    assert inner["result"]["scheme"]["ID"] == "1"
    assert inner["result"]["fragment"] == 1
    assert set(inner["result_error"]) == {"host", "spaced"}
    assert inner["result_error"]["host"]["error"] == "ERROR_METHOD_NOT_FOUND"


async def test_references_follow_bitrix24s_pattern(client: httpx.AsyncClient, token: str) -> None:
    inner = await batch(
        client,
        token,
        {
            "me": "user.current",
            "miss": "crm.deal.get?id=999",
            "list": "crm.deal.list",
            "a": "crm.deal.add?fields[TITLE]=mail%20$result_[me][EMAIL]"
            "&fields[COMMENTS]=why%20$error[miss][error_description]",
            "b": "crm.deal.add?fields[TITLE]=count%20$total[list]"
            "&fields[COMMENTS]=$RESULT[me][EMAIL]%20$result[me][ADMIN]",
            "c": "crm.deal.add?fields[TITLE]=$result[me][NAME][0]",
            "get_a": "crm.deal.get?id=$result[a]",
            "get_b": "crm.deal.get?id=$result[b]",
            "get_c": "crm.deal.get?id=$result[c]",
        },
    )
    result = inner["result"]
    assert result["get_a"]["TITLE"] == "mail user1@sandbox.invalid"
    assert result["get_a"]["COMMENTS"] == "why Not found"
    assert result["get_b"]["TITLE"] == "count 0"
    # `$RESULT` matches but names nothing; a boolean is not put into text: both stay.
    assert result["get_b"]["COMMENTS"] == "$RESULT[me][EMAIL] $result[me][ADMIN]"
    assert result["get_c"]["TITLE"] == "S"  # a string's offset, as PHP reads it


def test_a_reference_that_leads_nowhere_stops_where_it_is() -> None:
    answers = {"result": {"me": {"ID": "1"}}, "next": {}, "total": {}, "time": {}, "error": {}}
    assert resolve("a=$result[me][NOPE]", answers) == {"a": {"ID": "1"}}
    assert resolve("a=$result[none]", answers) == {"a": {"me": {"ID": "1"}}}
    assert resolve("a=x%20$result[none]", answers) == {"a": "x $result[none]"}
    # Keys are searched too, but parse_str leaves no `[...]` step in a key to follow.
    assert resolve("b[$result]=2", answers) == {"b": {"$result": "2"}}
    assert resolve("0", answers) == {}


def test_batch_commands_is_what_bitrix24_would_run() -> None:
    commands = batch_commands(
        {"cmd": {"a": "crm.deal.list"}, "CMD": {"b": "crm.x:user.get", "c": 5, "d": "p#q"}}
    )
    assert [(c.key, c.method) for c in commands] == [("b", "user.get"), ("d", "p")]
    assert len(batch_commands({"cmd": ["profile"] * 60})) == 50
