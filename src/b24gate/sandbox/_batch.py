"""``batch``: up to 50 commands in one request, run in order, with ``$result[...]`` references.

The answer's maps are PHP arrays: empty ones serialise as ``[]`` and ones keyed 0..n-1 as
lists (protocol file §4). Overflow commands get ``ERROR_BATCH_LENGTH_EXCEEDED`` each and a
nested ``batch`` gets ``ERROR_BATCH_METHOD_NOT_ALLOWED``, both in ``result_error``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ._config import BATCH_LIMIT
from ._errors import RestError
from ._methods import Caller, _flag, param
from ._params import parse_php_query

if TYPE_CHECKING:
    from ._portal import Portal

_REFERENCE = re.compile(r"\$result\[([^\]]*)\]((?:\[[^\]]*\])*)")
_INDEX = re.compile(r"\[([^\]]*)\]")


def php_map(items: dict[str, Any]) -> dict[str, Any] | list[Any]:
    """A PHP array as json_encode writes it: a list when keyed 0..n-1 (or empty)."""
    if list(items) == [str(i) for i in range(len(items))]:
        return list(items.values())
    return items


def _lookup(results: dict[str, Any], key: str, path: str) -> Any:
    node: Any = results.get(key)
    for step in _INDEX.findall(path):
        if isinstance(node, dict):
            node = node.get(step)
        elif (
            isinstance(node, list)
            and step.lstrip("-").isdigit()
            and -len(node) <= int(step) < len(node)
        ):
            node = node[int(step)]
        else:
            return None
    return node


def _substitute(value: Any, results: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, results) for v in value]
    if not isinstance(value, str) or "$result[" not in value:
        return value
    whole = _REFERENCE.fullmatch(value)
    if whole:
        # A value that is one reference takes the referenced value itself (a list stays a list).
        found = _lookup(results, whole.group(1), whole.group(2))
        return "" if found is None else found

    def text(match: re.Match[str]) -> str:
        found = _lookup(results, match.group(1), match.group(2))
        # Inferred: an unresolved reference becomes empty, so the command fails on its own.
        return "" if found is None or isinstance(found, dict | list) else str(found)

    return _REFERENCE.sub(text, value)


def _commands(raw: Any) -> list[tuple[str, str]]:
    if isinstance(raw, dict):
        return [(str(k), str(v)) for k, v in raw.items()]
    if isinstance(raw, list):
        return [(str(i), str(v)) for i, v in enumerate(raw)]
    return []


async def run_batch(portal: Portal, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    halt = _flag(param(params, "halt"))
    results: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    totals: dict[str, Any] = {}
    nexts: dict[str, Any] = {}
    times: dict[str, Any] = {}
    for index, (key, command) in enumerate(_commands(param(params, "cmd"))):
        if index >= BATCH_LIMIT:
            errors[key] = {
                "error": "ERROR_BATCH_LENGTH_EXCEEDED",
                "error_description": "Max batch length exceeded",
            }
            if halt:
                break
            continue
        method, _, query = command.partition("?")
        method = unquote(method).strip()
        try:
            if method.lower() == "batch":
                raise RestError(
                    400, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage"
                )
            sub_params = _substitute(parse_php_query(query), results)
            outcome, timing = await portal.execute(caller, method, sub_params)
        except RestError as exc:
            errors[key] = exc.body()
            if halt:
                break
            continue
        results[key] = outcome.result
        times[key] = timing
        if outcome.total is not None:
            totals[key] = outcome.total
        if outcome.next is not None:
            nexts[key] = outcome.next
    return {
        "result": php_map(results),
        "result_error": php_map(errors),
        "result_total": php_map(totals),
        "result_next": php_map(nexts),
        "result_time": php_map(times),
    }
