"""Properties of ``batch`` admission and packing, over generated payloads (hypothesis).

Whatever a client sends as a ``batch`` (any spelling of its names and of ``batch`` itself,
``batch.json`` and ``BATCH.JSON`` among them, commands with ``:``,
``#``, ``?``, ``/``, spaces, non-ASCII text, nested batches, maps or lists), what the
gateway forwards, read the way Bitrix24 reads it (the sandbox's emulation of
``methodsBatch`` and PHP's ``parse_url``), runs only methods the key allows, and exactly
the ones the gateway checked. And whatever the scheduler would pack into a batch shared
with other clients, Bitrix24's reference resolution finds nothing in it to replace.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from b24gate.bitrix import batchable, parse_batch
from b24gate.core import admit, method_allowed
from b24gate.errors import Forbidden, RequestError
from b24gate.sandbox import batch_commands, resolve
from b24gate.testing import build_php_query, parse_php_query

BOUNDED = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

PATTERNS = [("crm.*",), ("*.list",), ("crm.deal.*", "profile"), ("CRM.DEAL.LIST",)]
PATTERNS += [("crm.*", "*.json"), ("*.xml", "*.JSON", "profile")]
ALLOWED = ["crm.deal.list", "crm.deal.add", "crm.contact.get", "profile", "CRM.Deal.List"]
FORBIDDEN = ["user.get", "event.bind", "batch", "BATCH", "user.current", "download"]
FORBIDDEN += ["user.current.json", "batch.json", "user.get.XML"]
PIECES = [
    *ALLOWED,
    *FORBIDDEN,
    ":",
    "#",
    "?",
    "/",
    "//",
    " ",
    "\n",
    "\t",
    "%2E",
    "%3A",
    ".",
    "..",
    "80",
    "x",
    "ü",
    "ID=1",
    "&",
    "=",
    "cmd[a]=",
    "$result[a]",
    "http:",
    "file:///",
    "@",
    "[",
    "]",
]
NAMES = ["cmd", "CMD", "Cmd", "cMD", "halt", "HALT", "Halt", "auth", "cmd ", "ＣＭＤ", "other"]

command_text = st.one_of(
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=6).map("".join),
    st.text(max_size=30),
)
command = st.one_of(command_text, command_text, st.integers(), st.none(), st.lists(command_text))
commands = st.one_of(
    st.dictionaries(st.text(max_size=5), command, max_size=6),
    st.lists(command, max_size=6),
    command_text,
)
batch_params = st.dictionaries(
    st.sampled_from(NAMES), st.one_of(commands, st.integers(0, 1), st.text(max_size=3)), max_size=4
)


# The top-level method, spelled as a client may: Bitrix24's REST entry point drops one
# final `.json` or `.xml` of any case (the answer's format) and lower-cases the rest, so
# each of these but the last few runs `batch`.
TOP_LEVEL = ["batch", "Batch", "BATCH", "batch.json", "BATCH.JSON", "Batch.Xml", "batch.xml"]
TOP_LEVEL += ["batch.json.json", "user.current.json", "crm.deal.list.JSON", "crm.deal.list"]


def runs_as(method: str) -> str:
    """The method Bitrix24 runs for the name sent in a URL (rest.server's reading)."""
    head, _, last = method.rpartition(".")
    return (head if head and last.lower() in ("json", "xml") else method).lower()


def forwarded(
    patterns: tuple[str, ...], params: dict[str, Any], method: str = "batch"
) -> dict[str, Any] | None:
    """What the gateway would send for this call, as JSON on the wire; None if refused."""
    try:
        sent = admit(patterns, method, params)
    except (RequestError, Forbidden):
        return None
    wire: dict[str, Any] = json.loads(json.dumps(sent))
    return wire


def assert_runs_only_what_was_checked(
    patterns: tuple[str, ...], params: dict[str, Any], method: str = "batch"
) -> None:
    wire = forwarded(patterns, params, method)
    if wire is None:
        return
    if runs_as(method) != "batch":
        assert method_allowed(patterns, runs_as(method)), (method, patterns)
        return
    ran = batch_commands(wire)  # the sandbox's reading: Bitrix24's
    for runs in ran:
        assert runs.method is not None
        # A command's method too, as the entry point would read it: whether Bitrix24's
        # batch drops a format suffix as well or not, what runs is allowed.
        for name in (runs.method, runs_as(runs.method)):
            assert method_allowed(patterns, name), (params, runs)
            assert name.lower() != "batch"
    checked = parse_batch(wire).methods[:50]
    assert [r.method for r in ran] == checked


@BOUNDED
@given(
    patterns=st.sampled_from(PATTERNS),
    params=batch_params,
    method=st.sampled_from(TOP_LEVEL),
)
def test_a_json_batch_runs_only_methods_the_key_allows(
    patterns: tuple[str, ...], params: dict[str, Any], method: str
) -> None:
    assert_runs_only_what_was_checked(patterns, params, method)


@BOUNDED
@given(
    patterns=st.sampled_from(PATTERNS),
    pairs=st.lists(
        st.tuples(
            st.sampled_from(NAMES).flatmap(
                lambda name: st.sampled_from([name, f"{name}[a]", f"{name}[]", f"{name}[b]"])
            ),
            command_text,
        ),
        max_size=6,
    ),
)
def test_a_form_batch_runs_only_methods_the_key_allows(
    patterns: tuple[str, ...], pairs: list[tuple[str, str]]
) -> None:
    # As /rest/batch reads a form body, before the gateway admits it.
    form = "&".join(f"{build_php_query({k: v})}" for k, v in pairs if k)
    assert_runs_only_what_was_checked(patterns, parse_php_query(form))


SECRET = "victim@example.invalid"
# Another client's answers, as Bitrix24 keeps them while a shared batch runs.
ANSWERS: dict[str, Any] = {
    "result": {f"c{n}": {"EMAIL": SECRET, "ID": "7", "LIST": [SECRET]} for n in range(3)},
    "next": {"c0": 50},
    "total": {"c0": 70},
    "time": {"c0": {"start": 1.5}},
    "error": {"c1": {"error": "X", "error_description": SECRET}},
    "error_description": {"c1": SECRET},
}
WORDS = ["$", "result", "RESULT", "_", "error", "total", "next", "time", "[", "]", "c0", "c1"]
WORDS += ["EMAIL", "0", " ", "x", "$5", "price", "error_description", "LIST"]
TEXT = st.lists(st.sampled_from(WORDS), max_size=8).map("".join)
VALUES = st.recursive(
    st.one_of(TEXT, st.integers(), st.floats(allow_nan=False)),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3),
        st.dictionaries(TEXT, inner, min_size=1, max_size=3),
    ),
    max_leaves=8,
)


@BOUNDED
@given(params=st.dictionaries(TEXT, VALUES, min_size=1, max_size=4))
def test_what_is_packed_finds_no_other_clients_answer(params: dict[str, Any]) -> None:
    if not batchable(params):
        return  # goes alone: Bitrix24 replaces nothing outside a batch
    resolved = resolve(build_php_query(params), ANSWERS)
    assert SECRET not in json.dumps(resolved)
    assert resolved == resolve(build_php_query(params), {})
