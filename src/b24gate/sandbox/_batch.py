"""``batch`` as Bitrix24 runs it: up to 50 commands in one request, in order, with references.

Read from Bitrix24's own server code (``CRestProvider::methodsBatch`` and
``CRestUtil::processBatchElement`` in the public mirror ``avshatalov48/bitrix-core-business``,
docs/protocol.md §4.2), because the gateway's checks are tested against this reading:

- Top-level names are upper-cased before ``CMD`` and ``HALT`` are read: ``cmd``, ``Cmd``
  and ``CMD`` are one parameter, and of several spellings the last one sent wins.
  ``HALT`` is PHP's ``(bool)`` (``"false"`` is true).
- Each command is read with PHP's ``parse_url``: the method is its ``path``, the
  parameters its ``query``. So ``crm.x:user.get`` runs ``user.get`` (``crm.x`` is a
  scheme) and ``crm.deal.add#.list`` runs ``crm.deal.add`` (the rest is a fragment).
  Commands that are not strings are skipped; the ones after the 50th get
  ``ERROR_BATCH_LENGTH_EXCEEDED``, a nested ``batch`` gets ``ERROR_BATCH_METHOD_NOT_ALLOWED``.
- Parameter values are searched for ``/\\$(NAMES)([^\\s]*)/i``, NAMES being the keys of
  the answers so far (``result|next|total|time|error`` at first, ``error_description``
  after an error), and the ``[...]`` steps in the rest of the match are followed as far as
  they lead: ``$result_[c0][EMAIL]`` and ``$error[c0]`` are references too.

The answer's maps are PHP arrays: empty ones serialise as ``[]`` and ones keyed 0..n-1 as
lists (docs/protocol.md §4.1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._config import BATCH_LIMIT
from ._errors import RestError
from ._methods import Caller
from ._params import parse_php_query

if TYPE_CHECKING:
    from ._latency import RequestTimer
    from ._portal import Portal

# The names a reference may start with before any answer added its own keys.
_FIRST_NAMES = ("result", "next", "total", "time", "error")
_STEP = re.compile(r"\[([^\]]+)\]")
# PHP's canonical integer strings: the only ones that index a list or a string.
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")
_DIGITS = frozenset("0123456789")
_LENGTH_EXCEEDED = {
    "error": "ERROR_BATCH_LENGTH_EXCEEDED",
    "error_description": "Max batch length exceeded",
}


def php_map(items: Mapping[str, Any]) -> dict[str, Any] | list[Any]:
    """A PHP array as json_encode writes it: a list when keyed 0..n-1 (or empty)."""
    if list(items) == [str(i) for i in range(len(items))]:
        return list(items.values())
    return dict(items)


def php_bool(value: Any) -> bool:
    """PHP's ``(bool)``: ``""``, ``"0"``, ``0``, ``null`` and ``[]`` are false."""
    if isinstance(value, str):
        return value not in ("", "0")
    if isinstance(value, Mapping | list):
        return bool(value)
    return bool(value)


def batch_params(params: Mapping[str, Any]) -> tuple[Any, bool]:
    """``(CMD, HALT)`` after ``array_change_key_case(..., CASE_UPPER)``: the last spelling wins."""
    upper: dict[str, Any] = {}
    for key, value in params.items():
        # PHP upper-cases ASCII letters only.
        upper[key.upper() if key.isascii() else key] = value
    return upper.get("CMD"), php_bool(upper.get("HALT"))


def _control(text: str) -> str:
    return _CONTROL.sub("_", text)


def parse_url(url: str) -> dict[str, Any] | None:
    """PHP 8's ``parse_url()`` (``php_url_parse_ex2``): the parts it finds, or None where
    PHP returns false. Kept close to the C code: its odd cases are the point."""
    n, s = len(url), 0
    out: dict[str, Any] = {}
    e = url.find(":")
    step: str
    if e > 0:
        if any(c not in _SCHEME for c in url[:e]):
            q = url.find("?")
            if e + 1 < n and q != -1 and e < q:
                step = "port"
            elif url.startswith("//"):
                s, step = 2, "host"
            else:
                step = "path"
        elif e + 1 == n:
            return {"scheme": _control(url[:e])}
        elif url[e + 1] != "/":
            p = e + 1
            while p < n and url[p] in _DIGITS:
                p += 1
            if (p == n or url[p] == "/") and p - e < 7:
                step = "port"
            else:
                out["scheme"] = _control(url[:e])
                s, step = e + 1, "path"
        else:
            out["scheme"] = _control(url[:e])
            if e + 2 < n and url[e + 2] == "/":
                s, step = e + 3, "host"
                if out["scheme"].lower() == "file" and e + 3 < n and url[e + 3] == "/":
                    if e + 5 < n and url[e + 5] == ":":
                        s = e + 4
                    step = "path"
            else:
                s, step = e + 1, "path"
    elif e == 0:
        step = "port"
    elif url.startswith("//"):
        s, step = 2, "host"
    else:
        step = "path"

    if step == "port":
        p = pp = e + 1
        while pp < n and pp - p < 6 and url[pp] in _DIGITS:
            pp += 1
        if 0 < pp - p < 6 and (pp == n or url[pp] == "/"):
            port = int(url[p:pp])
            if port > 65535:
                return None
            out["port"] = port
            if url.startswith("//", s):
                s += 2
            step = "host"
        elif p == pp == n:
            return None
        elif url.startswith("//", s):
            s, step = s + 2, "host"
        else:
            step = "path"

    if step == "host":
        e = min((i for i in (url.find(c, s) for c in "/?#") if i != -1), default=n)
        at = url.rfind("@", s, e)
        if at != -1:
            colon = url.find(":", s, at)
            if colon != -1:
                out["user"], out["pass"] = _control(url[s:colon]), _control(url[colon + 1 : at])
            else:
                out["user"] = _control(url[s:at])
            s = at + 1
        bracketed = s < n and url[s] == "[" and url[e - 1] == "]"
        p = -1 if bracketed else url.rfind(":", s, e)
        if p != -1:
            if not out.get("port"):
                digits = url[p + 1 : e]
                if len(digits) > 5:
                    return None
                if digits:
                    found = re.match(r"\s*[+-]?\d+", digits)
                    if found is None or not 0 <= int(found.group()) <= 65535:
                        return None
                    out["port"] = int(found.group())
        else:
            p = e
        if p - s < 1:
            return None
        out["host"] = _control(url[s:p])
        if e == n:
            return out
        s = e

    e = n
    hash_at = url.find("#", s)
    if hash_at != -1:
        out["fragment"] = _control(url[hash_at + 1 :])
        e = hash_at
    mark = url.find("?", s, e)
    if mark != -1:
        out["query"] = _control(url[mark + 1 : e])
        e = mark
    if s < e or s == n:
        out["path"] = _control(url[s:e])
    return out


@dataclass(frozen=True)
class Command:
    """One command of a batch as Bitrix24 reads it: the method it runs and its query."""

    key: str
    method: str | None  # parse_url's path; None when there is none
    query: str | None


def read_command(key: str, call: str) -> Command:
    parts = parse_url(call) or {}
    return Command(key, parts.get("path"), parts.get("query"))


def batch_items(cmd: Any) -> list[tuple[str, Any]]:
    """The entries of ``CMD`` in order; PHP's foreach over anything else runs nothing."""
    if isinstance(cmd, Mapping):
        return [(str(k), v) for k, v in cmd.items()]
    if isinstance(cmd, list):
        return [(str(i), v) for i, v in enumerate(cmd)]
    return []


def batch_commands(params: Mapping[str, Any]) -> list[Command]:
    """The commands Bitrix24 would try to run for these ``batch`` parameters (the first 50
    string commands), each read as it reads them."""
    cmd, _ = batch_params(params)
    return [
        read_command(key, call)
        for key, call in batch_items(cmd)[:BATCH_LIMIT]
        if isinstance(call, str)
    ]


# -- references ---------------------------------------------------------------------------


def _php_string(value: Any) -> str | None:
    """``(string)`` of a value ``is_numeric`` accepts, the value of a string; else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.14G}"  # PHP's `precision` of 14 digits
    return None


def _step(node: Any, key: str) -> tuple[bool, Any]:
    """PHP's ``isset($node[$key])`` and, when set, ``$node[$key]``."""
    if isinstance(node, Mapping):
        found = node.get(key)
        return found is not None, found
    if isinstance(node, list | str) and _INTEGER.fullmatch(key):
        index = int(key)
        if isinstance(node, str):
            return -len(node) <= index < len(node), node[index] if node else None
        if 0 <= index < len(node) and node[index] is not None:
            return True, node[index]
    return False, None


def _element(text: str, answers: Mapping[str, Any], names: list[str]) -> Any:
    """``processBatchElement``: each reference in ``text`` followed as far as it leads.

    A value that is one reference becomes what it leads to (a map stays a map; a step that
    leads nowhere stops there, so ``$result[none]`` is every answer so far). Inside other
    text only a string or a number is put in; anything else leaves the reference as it is.
    """
    pattern = re.compile(r"\$(" + "|".join(names) + r")([^\s]*)", re.IGNORECASE | re.ASCII)
    query: Any = text
    for match in pattern.finditer(text):
        steps = _STEP.findall(match.group(2))
        if not steps:
            continue
        found = answers.get(match.group(1))  # the name as written: `$RESULT` finds nothing
        for key in steps:
            ok, value = _step(found, key)
            if not ok:
                break
            found = value
        if match.group(0) == query:
            query = found
            continue
        as_text = _php_string(found)
        if as_text is not None and isinstance(query, str):
            query = query.replace(match.group(0), as_text)
    return query


def _structure(params: Any, answers: Mapping[str, Any], names: list[str]) -> Any:
    """``processBatchStructure``: every value, and every key (whose names are empty: a key
    that is one `$...[...]` reference becomes ``""``), at any depth."""
    if isinstance(params, list):
        return [_structure(v, answers, names) for v in params]
    if isinstance(params, Mapping):
        out: dict[str, Any] = {}
        for key, value in params.items():
            new_key = _element(key, answers, [""])
            out["" if new_key is None else str(new_key)] = _structure(value, answers, names)
        return out
    if isinstance(params, str):
        return _element(params, answers, names)
    return params


def resolve(query: str | None, answers: Mapping[str, Any]) -> dict[str, Any]:
    """``ParseBatchQuery``: a command's parameters with the references resolved."""
    if not query or query == "0":  # PHP's `if ($query)`
        return {}
    resolved = _structure(parse_php_query(query), answers, list(answers))
    return resolved if isinstance(resolved, dict) else {}


# -- running ------------------------------------------------------------------------------


async def _run_one(
    portal: Portal,
    caller: Caller,
    command: Command,
    answers: Mapping[str, Any],
    timer: RequestTimer,
) -> dict[str, Any]:
    """The command's whole answer (``result``, ``time``, ...) or its error body.

    Its ``time`` block shows the command's own time and, for ``operating``, the budget of
    ``batch`` it is billed to: every command of a batch reports the same figure, as the
    b24jssdk maintainers measured (b24jssdk PR 539).
    """
    method = command.method
    params = resolve(command.query, answers)
    began = timer.elapsed
    try:
        if method in ("download", "upload") or (method or "").lower() == "batch":
            raise RestError(
                400, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage"
            )
        if not method:
            raise RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        outcome = await portal.run_method(caller, method.lower(), params, timer)
    except RestError as exc:
        return exc.body()
    start = max(portal.clock.now(), timer.started + began)
    timing = portal.time_block(start, timer.elapsed - began, *portal.budget.standing("batch"))
    return portal.answer(outcome, timing)


async def run_batch(
    portal: Portal, caller: Caller, params: dict[str, Any], timer: RequestTimer
) -> dict[str, Any]:
    """Run the commands in order; a command cut off by the request time cap raises
    :class:`RequestCutOff` out of here, so the ones after it never run."""
    cmd, halt = batch_params(params)
    answers: dict[str, dict[str, Any]] = {name: {} for name in _FIRST_NAMES}
    for count, (key, call) in enumerate(batch_items(cmd)):
        if count < BATCH_LIMIT:
            if not isinstance(call, str):
                continue
            answer = await _run_one(portal, caller, read_command(key, call), answers, timer)
        else:
            answer = dict(_LENGTH_EXCEEDED)
        if "error" in answer:
            answer["error"] = dict(answer)
        for name, value in answer.items():
            answers.setdefault(name, {})[key] = value
        if answer.get("error") and halt:
            break
    return {
        "result": php_map(answers["result"]),
        "result_error": php_map(answers["error"]),
        "result_total": php_map(answers["total"]),
        "result_next": php_map(answers["next"]),
        "result_time": php_map(answers["time"]),
    }
