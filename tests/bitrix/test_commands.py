"""``batch`` as the gateway reads it: the reading Bitrix24 has, or a refusal."""

from __future__ import annotations

from typing import Any

import pytest

from b24gate.bitrix import (
    REFERENCE,
    BatchCommand,
    batchable,
    encode_batch,
    has_reference,
    is_read,
    parse_batch,
    parse_command,
    with_auth_connector,
)
from b24gate.errors import InvalidBatch, RequestError
from b24gate.testing import parse_php_query


def refused(params: Any) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse_batch(params)
    assert type(caught.value) is InvalidBatch
    assert caught.value.code == "invalid_batch"
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize("spelling", ["cmd", "CMD", "Cmd", "cMd"])
def test_cmd_is_found_whatever_its_case_and_forwarded_as_cmd(spelling: str) -> None:
    batch = parse_batch({spelling: {"a": "user.get?ID=1"}, "HaLt": 1})
    assert batch.methods == ["user.get"]
    assert batch.params() == {"halt": 1, "cmd": {"a": "user.get?ID=1"}}


@pytest.mark.parametrize(
    "params",
    [
        {"cmd": {"a": "crm.deal.list"}, "Cmd": {"a": "user.get"}},
        {"CMD": {"a": "crm.deal.list"}, "cmd": {"a": "crm.deal.list"}},
        {"cmd": {}, "halt": 0, "HALT": 1},
    ],
)
def test_several_spellings_of_one_name_are_refused(params: dict[str, Any]) -> None:
    assert "twice" in refused(params).message


def test_only_what_batch_reads_is_forwarded() -> None:
    batch = parse_batch({"cmd": ["profile"], "auth": "x", "CMD2": {"a": "user.get"}, "ｃmd": 1})
    assert batch.params() == {"cmd": ["profile"]}
    assert parse_batch({}).params() == {"cmd": {}}
    assert parse_batch({"halt": 0}).commands == ()


@pytest.mark.parametrize(
    "command",
    [
        "crm.x:user.get",  # parse_url: scheme `crm.x`, path `user.get`
        "crm.deal.add#.list",  # path `crm.deal.add`, fragment `.list`
        "//host/user.get",  # host, path `/user.get`
        "user.get:80",
        "/user.get",
        " user.get",
        "user.get ",
        "user.get\n",
        "user%2Eget",
        "user..get",
        ".user.get",
        "",
        "?ID=1",
        "batch?cmd[a]=user.get",
        "BATCH",
        "user.get?ID=1#x",  # Bitrix24 would drop `#x`: not forwarded as written
        "user.get?ID=1\x00",
        "crm.deal.list?filter[TITLE]=a\nb",
        "юзер.get",
    ],
)
def test_commands_that_are_not_plainly_name_and_query_are_refused(command: str) -> None:
    refused({"cmd": {"a": command}})
    refused({"cmd": [command]})


@pytest.mark.parametrize("command", [5, None, ["user.get"], {"a": "user.get"}, True])
def test_commands_must_be_strings(command: Any) -> None:
    refused({"cmd": {"a": command}})


@pytest.mark.parametrize("cmd", ["user.get", 5, None, True])
def test_cmd_must_be_a_map_or_a_list(cmd: Any) -> None:
    refused({"cmd": cmd})


@pytest.mark.parametrize(
    ("command", "method", "query"),
    [
        ("crm.deal.list", "crm.deal.list", ""),
        ("crm.deal.list?", "crm.deal.list", ""),
        ("CRM.Deal.List?filter[>ID]=5", "CRM.Deal.List", "filter[>ID]=5"),
        # A `:` or `?` inside the query cannot start a scheme or a port: the path stays.
        ("crm.deal.list?filter[DATE]=12:30&x=a?b", "crm.deal.list", "filter[DATE]=12:30&x=a?b"),
        ("crm.deal.get?id=$result[add]", "crm.deal.get", "id=$result[add]"),
        ("im.notify?MESSAGE=%23tag%20here", "im.notify", "MESSAGE=%23tag%20here"),
    ],
)
def test_a_plain_command_is_forwarded_as_checked(command: str, method: str, query: str) -> None:
    parsed = parse_command(command)
    assert (parsed.method, parsed.query) == (method, query)
    batch = parse_batch({"cmd": {"k": command}})
    assert batch.commands == (BatchCommand("k", method, query),)
    assert batch.params()["cmd"] == {"k": parsed.text}


def test_a_list_stays_a_list_and_keys_keep_their_order() -> None:
    assert parse_batch({"cmd": ["profile", "user.current"]}).params() == {
        "cmd": ["profile", "user.current"]
    }
    keys = [f"k{n}" for n in range(60)]
    batch = parse_batch({"cmd": dict.fromkeys(reversed(keys), "profile")})
    assert [c.key for c in batch.commands] == list(reversed(keys))


def test_error_messages_do_not_carry_raw_control_characters() -> None:
    message = refused({"cmd": {"a": "user.get\r\nX-Forged: 1"}}).message
    assert "\n" not in message
    assert "\r" not in message


@pytest.mark.parametrize(
    ("cmd", "reads"),
    [
        ({"a": "crm.deal.list", "b": "user.current"}, True),
        ({"a": "crm.deal.list", "b": "crm.deal.add"}, False),
        ({"a": "crm.x:crm.deal.list"}, False),  # unreadable: a write
        ({"a": "crm.deal.add#.list"}, False),
    ],
)
def test_is_read_reads_commands_the_same_way(cmd: Any, reads: bool) -> None:
    assert is_read("batch", {"CMD": cmd}) is reads


@pytest.mark.parametrize(
    "text",
    [
        "$result[c0]",
        "$result_[c0][EMAIL]",
        "$RESULT[c0]",
        "$error[c0]",
        "$error_description[c0]",
        "$total[c0]",
        "$next[c0]",
        "$time[c0][start]",
        "$signature[c0]",
        "price $total[net]",
        "x$resultat",
    ],
)
def test_text_bitrix24_could_read_as_a_reference(text: str) -> None:
    assert has_reference(text)
    assert has_reference({"fields": {"TITLE": text}})
    assert has_reference({"fields": [1, {"a": text}]})
    assert has_reference({text: "key"})


@pytest.mark.parametrize("value", ["price 5$", "$5", "$ 10", "USD", {"a": ["b", 1, None]}, 5])
def test_ordinary_text_is_no_reference(value: Any) -> None:
    assert not has_reference(value)


def test_the_reference_pattern_is_bitrix24s() -> None:
    found = REFERENCE.search("mail $result_[c0][EMAIL] here")
    assert found is not None
    assert (found.group(1), found.group(2)) == ("result", "_[c0][EMAIL]")
    assert REFERENCE.search("$ERROR[c0]") is not None
    assert REFERENCE.search("$reſult[c0]") is None  # PCRE without /u: ASCII case only


def test_batchable() -> None:
    assert batchable({"fields": {"TITLE": "x", "OPPORTUNITY": 5, "RATE": 1.5}, "select": ["ID"]})
    assert batchable({"fields": {"TITLE": "costs $5 or 5$", "COMMENTS": "$ 10"}})
    bad: dict[str, Any]
    for bad in (
        {"a": "see $Result[c0][ID]"},
        # Bitrix24 resolves /\$(result|next|total|time|error)([^\s]*)/i, and more names
        # once answers add them: each of these would read another caller's answer.
        {"fields": {"TITLE": "$result_[c0][EMAIL]"}},
        {"fields": {"TITLE": "x $error[c0][error_description]"}},
        {"fields": {"TITLE": "$total[c0]"}},
        {"fields": {"TITLE": "$next[c0]"}},
        {"fields": {"TITLE": "$TIME[c0][start]"}},
        {"fields": {"TITLE": "price $total[net]"}},
        {"filter": {"$result": "1"}},
        {"select": ["ID", "$signature[c0]"]},
        {"a": None},
        {"a": True},
        {"a": []},
        {"a": {}},
        {"a[b]": 1},
        {"a": float("nan")},
    ):
        assert not batchable(bad), bad


def test_a_batch_the_gateway_writes_is_read_back_as_the_calls_it_packed() -> None:
    # In a query string every value is text, as in any form Bitrix24 reads.
    calls: dict[str, tuple[str, dict[str, Any]]] = {
        "c0": ("crm.deal.add", {"fields": {"TITLE": "A&B ё #1 = 50%", "OPPORTUNITY": "10.5"}}),
        "c1": ("crm.deal.list", {"filter": {">ID": "7"}, "select": ["ID", "TITLE"]}),
        "c2": ("profile", {"x": "?a=b&c"}),
    }
    assert all(batchable(params) for _, params in calls.values())
    packed = encode_batch(calls)
    assert packed["halt"] == 0  # one command's error does not stop the others
    batch = parse_batch(packed)
    assert [(c.key, c.method) for c in batch.commands] == [(k, m) for k, (m, _) in calls.items()]
    for command in batch.commands:
        assert parse_php_query(command.query) == calls[command.key][1]


# -- auth_connector: the gateway's own writes stay out of its offline queue ----------------


def test_a_request_carries_the_connector_but_event_methods_do_not() -> None:
    assert with_auth_connector("crm.deal.update", {"id": 1}, "b24gate") == {
        "id": 1,
        "auth_connector": "b24gate",
    }
    # event.* manage the queues: an online event.bind must not become a connector's.
    bind = {"event": "ONCRMDEALADD", "handler": "https://gw.example/bitrix/events/x"}
    assert with_auth_connector("event.bind", bind, "b24gate") == bind


def test_a_connector_the_caller_named_is_left_alone() -> None:
    params = {"id": 1, "AUTH_CONNECTOR": "theirs"}
    assert with_auth_connector("crm.deal.update", params, "b24gate") == params


def test_a_batch_carries_the_connector_at_its_top() -> None:
    """Bitrix24 reads the request's auth_connector for every command of a batch (one in a
    command's query is ignored): the batch carries it, its commands are left as sent."""
    params = {"halt": 0, "cmd": {"a": "crm.deal.update?id=1&fields[TITLE]=x"}}
    assert with_auth_connector("batch", params, "b24gate") == {
        **params,
        "auth_connector": "b24gate",
    }


def test_a_batch_keeps_the_connector_its_caller_sent() -> None:
    parsed = parse_batch({"CMD": {"a": "crm.deal.update?id=1"}, "Auth_Connector": "theirs"})
    assert parsed.params() == {"cmd": {"a": "crm.deal.update?id=1"}, "auth_connector": "theirs"}
    with pytest.raises(InvalidBatch, match="twice"):
        parse_batch({"cmd": {}, "auth_connector": "a", "AUTH_CONNECTOR": "b"})
