"""Method names: which may be sent at all, and which are reads that may be retried."""

from __future__ import annotations

from typing import Any

import pytest

import b24gate.bitrix
from b24gate.bitrix import METHOD_NAME, is_read, valid_method


def test_the_facade_exports_every_public_name_once() -> None:
    exported = b24gate.bitrix.__all__
    assert len(set(exported)) == len(exported)
    for name in exported:
        assert getattr(b24gate.bitrix, name) is not None
    public = {n for n in vars(b24gate.bitrix) if not n.startswith("_")}
    assert public - {"annotations"} <= set(exported)


def test_the_pattern_is_the_one_design_fixes() -> None:
    assert METHOD_NAME.pattern == r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$"


@pytest.mark.parametrize(
    "name", ["crm.deal.list", "CRM.Deal.List", "batch", "user.current", "crm.item_1.get", "a"]
)
def test_valid_method_names(name: str) -> None:
    assert valid_method(name)


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "a/b",
        "a?b",
        "a#b",
        "a b",
        "",
        ".a",
        "a.",
        "a..b",
        "crm.deal.list\n",  # "$" alone would let a trailing newline through
        "сделка.list",
        "a%2Fb",
        "crm." + "x" * 252,  # 256 characters: past what the store keeps
    ],
)
def test_invalid_method_names(name: str) -> None:
    assert not valid_method(name)


@pytest.mark.parametrize(
    "method",
    [
        "crm.deal.list",
        "crm.deal.get",
        "crm.deal.fields",
        "CRM.DEAL.LIST",
        "user.current",
        "user.search",
        "crm.item.count",
        "tasks.task.getFields",
        "app.info",
        "server.time",
        "profile",
        "scope",
        "methods",
    ],
)
def test_reads(method: str) -> None:
    assert is_read(method, {})


@pytest.mark.parametrize(
    "method",
    [
        "crm.deal.add",
        "crm.deal.update",
        "crm.deal.delete",
        "im.message.add",
        "disk.file.getExternalLink",  # starts with "get" and creates a public link
        "profile.update",
        "../crm.deal.list",
        "crm.deal.list?x=1",
    ],
)
def test_writes(method: str) -> None:
    assert not is_read(method, {})


@pytest.mark.parametrize(
    ("cmd", "reads"),
    [
        ({"a": "crm.deal.list?filter[ID]=1", "b": "user.current"}, True),
        (["crm.deal.get?id=1", "crm.contact.list"], True),
        ({"a": "crm.deal.list", "b": "crm.deal.add?fields[TITLE]=x"}, False),
        (["crm.deal.list", "crm.deal.delete?id=1"], False),
        ({"a": "batch?cmd[x]=crm.deal.list"}, False),
        ({"a": "../crm.deal.list"}, False),
        ({"a": 5}, False),
        ({}, False),
        ([], False),
        ("crm.deal.list", False),
        (None, False),
    ],
)
def test_a_batch_reads_only_when_every_command_reads(cmd: Any, reads: bool) -> None:
    assert is_read("batch", {"cmd": cmd, "halt": 0}) is reads
    assert is_read("BATCH", {"cmd": cmd}) is reads


def test_a_batch_without_params_is_a_write() -> None:
    assert not is_read("batch", None)
    assert not is_read("batch", {})
