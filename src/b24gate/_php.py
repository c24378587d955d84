"""PHP-style request parameters: ``fields[TITLE]=x``, ``select[]=ID``, as Bitrix24 reads them.

A leaf module with no gateway logic, shared by the gateway's Bitrix24-shaped surface and
by the sandbox (which imports nothing else from the gateway).

Bitrix24 is PHP: a query string or form becomes nested arrays by PHP's bracket rules, and
an array whose keys are 0..n-1 is a list. :func:`parse_php_pairs` reproduces those rules;
:func:`build_php_query` is PHP's ``http_build_query`` (used for events and batch commands).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote

_SEGMENT = re.compile(r"\[([^\[\]]*)\]")

Params = dict[str, Any]


def _split_key(key: str) -> list[str] | None:
    """``a[b][]`` -> ``["a", "b", ""]``; a key without a well-formed bracket tail -> None."""
    open_at = key.find("[")
    if open_at <= 0:
        return None
    head, tail = key[:open_at], key[open_at:]
    parts = _SEGMENT.findall(tail)
    # PHP ignores anything after the last closing bracket; a broken tail means a plain key.
    consumed = sum(len(p) + 2 for p in parts)
    if not parts or not tail[:consumed].endswith("]"):
        return None
    return [head, *parts]


def _next_index(node: dict[str, Any]) -> str:
    ints = [int(k) for k in node if k.lstrip("-").isdigit()]
    return str(max(ints) + 1 if ints else 0)


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        converted = {k: _listify(v) for k, v in node.items()}
        if converted and list(converted) == [str(i) for i in range(len(converted))]:
            return list(converted.values())
        return converted
    return node


def parse_php_pairs(pairs: Iterable[tuple[str, str]]) -> Params:
    """Nest ``(key, value)`` pairs the way PHP fills ``$_REQUEST``."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        path = _split_key(key)
        if path is None:
            root[key] = value
            continue
        node = root
        for depth, segment in enumerate(path):
            name = segment if segment != "" else _next_index(node)
            if depth == len(path) - 1:
                node[name] = value
                break
            child = node.get(name)
            if not isinstance(child, dict):
                child = {}
                node[name] = child
            node = child
    # $_REQUEST itself stays a map even when its keys are 0..n-1 (`?0=a` must not become a list).
    return {k: _listify(v) for k, v in root.items()}


def parse_php_query(query: str) -> Params:
    return parse_php_pairs(parse_qsl(query, keep_blank_values=True))


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}[{k}]", v, out)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _flatten(f"{prefix}[{i}]", v, out)
    elif value is None:
        # PHP's http_build_query drops nulls.
        return
    elif isinstance(value, bool):
        out.append((prefix, "1" if value else "0"))
    else:
        out.append((prefix, str(value)))


def flatten_php(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in params.items():
        _flatten(str(key), value, out)
    return out


def build_php_query(params: Mapping[str, Any]) -> str:
    """PHP's ``http_build_query``: nested maps and lists as bracketed keys."""
    return "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in flatten_php(params))
