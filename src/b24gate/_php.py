"""PHP-style request parameters: ``fields[TITLE]=x``, ``select[]=ID``, as Bitrix24 reads them.

A leaf module with no gateway logic, shared by the gateway's Bitrix24-shaped surface and
by the sandbox (which imports nothing else from the gateway).

Bitrix24 is PHP: a query string or form becomes nested arrays by PHP's bracket rules
(``php_register_variable_ex``), and an array whose keys are 0..n-1 is a list.
:func:`parse_php_pairs` reproduces those rules in time linear in the input: each array
keeps its next free index, as PHP's ``nNextFreeElement`` does, instead of looking at its
keys. PHP's own caps apply: ``max_input_vars`` (1,000 pairs) and
``max_input_nesting_level`` (64 brackets). PHP keeps the first 1,000 pairs and drops a
too-deep variable with a warning the client never sees; that is what the sandbox does
(the default), while the gateway asks for ``strict`` parsing and refuses such input, so
that it never forwards something other than what the client sent.
:func:`build_php_query` is PHP's ``http_build_query`` (used for events and batch commands).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

Params = dict[str, Any]

# php.ini's defaults, which Bitrix24's hosting keeps.
MAX_INPUT_VARS = 1000
MAX_INPUT_NESTING = 64

_PAIR = re.compile(r"[^&]+")
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# PHP's ZEND_HANDLE_NUMERIC_STR: a canonical decimal integer is an integer key ("05",
# "-0", "+1" and " 1" stay strings).
_INTEGER = re.compile(r"0|-?[1-9][0-9]*")
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


class PhpInputError(ValueError):
    """Input over one of PHP's caps, in ``strict`` parsing."""


class TooManyVariables(PhpInputError):
    """More than ``max_input_vars`` pairs."""


class NestingTooDeep(PhpInputError):
    """A name with more than ``max_input_nesting_level`` brackets."""


class _Array(dict[str, Any]):
    """A PHP array while it is being filled: its keys, and the index ``[]`` takes next."""

    __slots__ = ("next_free",)

    def __init__(self) -> None:
        super().__init__()
        self.next_free: int | None = None  # PHP 8.3: after `a[-3]`, `a[]` is -2

    def set(self, key: str, value: Any) -> None:
        # A canonical integer key is its own string form, so the key itself needs no change.
        if _INTEGER.fullmatch(key):
            index = int(key)
            if _LONG_MIN <= index <= _LONG_MAX and (
                self.next_free is None or index >= self.next_free
            ):
                self.next_free = min(index + 1, _LONG_MAX)
        self[key] = value

    def append(self, value: Any) -> bool:
        """``$a[] = value``; False when PHP refuses it (the next index, PHP_INT_MAX, is taken)."""
        index = 0 if self.next_free is None else self.next_free
        key = str(index)
        if key in self:
            return False
        self.next_free = min(index + 1, _LONG_MAX)
        self[key] = value
        return True


def _mangled(name: str) -> str:
    # PHP variable names hold no spaces or dots: `a.b` arrives as `a_b`.
    return name.replace(" ", "_").replace(".", "_")


def _segments(key: str, open_at: int) -> list[str | None] | str:
    """The bracket parts of ``key`` from its first ``[`` (None: ``[]``); or, when that
    ``[`` has no ``]``, the plain name PHP falls back to. Stops one part past the cap."""
    parts: list[str | None] = []
    at = open_at
    while True:
        if len(parts) >= MAX_INPUT_NESTING:
            # One more bracket is one level too deep: enough to decide, whatever follows.
            parts.append(None)
            return parts
        start = at + 1
        inner = start + 1 if key.startswith(" ", start) else start
        close = key.find("]", inner)
        if close < 0:
            if not parts:
                # `a[b` is the plain name `a_b`: the `[` and what follows mangled too.
                return _mangled(key[:open_at]) + "_" + _mangled(key[start:]).replace("[", "_")
            return parts  # PHP ignores the unclosed tail of a deeper level
        parts.append(None if close == inner else key[start:close])
        at = close + 1
        if not key.startswith("[", at):
            return parts  # PHP ignores whatever follows the last `]`


def _register(root: _Array, key: str, value: str, strict: bool) -> None:
    """One pair, as ``php_register_variable_ex`` stores it."""
    key = key.lstrip(" ")
    open_at = key.find("[")
    name = _mangled(key if open_at < 0 else key[:open_at])
    if not name:
        return  # PHP drops a variable without a name (`=1`, `[a]=1`)
    if open_at < 0:
        root.set(name, value)
        return
    parts = _segments(key, open_at)
    if isinstance(parts, str):
        root.set(parts, value)
        return
    if len(parts) > MAX_INPUT_NESTING:
        if strict:
            raise NestingTooDeep(
                f"the parameter {name[:40]!r} is nested deeper than {MAX_INPUT_NESTING} levels"
            )
        root.pop(name, None)  # PHP drops the whole variable, what came before included
        return
    node: _Array = root
    index: str | None = name
    for part in parts:
        child: Any
        if index is None:
            child = _Array()
            if not node.append(child):
                return
        else:
            child = node.get(index)
            if not isinstance(child, _Array):
                child = _Array()
                node.set(index, child)
        node, index = child, part
    if index is None:
        node.append(value)
    else:
        node.set(index, value)


def _plain(node: Any) -> Any:
    """The filled arrays as JSON-like values: 0..n-1 keys in order make a list."""
    if not isinstance(node, dict):
        return node
    values = {k: _plain(v) for k, v in node.items()}
    if values and all(k == str(i) for i, k in enumerate(values)):
        return list(values.values())
    return values


def parse_php_pairs(
    pairs: Iterable[tuple[str, str]], *, strict: bool = False, max_vars: int = MAX_INPUT_VARS
) -> Params:
    """Nest ``(key, value)`` pairs the way PHP fills ``$_REQUEST``.

    PHP keeps the first ``max_vars`` pairs and drops a variable nested too deep; ``strict``
    raises :class:`TooManyVariables` or :class:`NestingTooDeep` instead.
    """
    root = _Array()
    for count, (key, value) in enumerate(pairs, 1):
        if count > max_vars:
            if strict:
                raise TooManyVariables(f"more than {max_vars} parameters")
            break
        _register(root, key, value, strict)
    # $_REQUEST itself stays a map even when its keys are 0..n-1 (`?0=a` must not become a list).
    return {k: _plain(v) for k, v in root.items()}


def unquote_bytes(text: str) -> bytes:
    """PHP's ``urldecode`` (``+`` a space, ``%XX`` a byte, any other ``%`` itself), in C.

    ``urllib.parse.unquote_plus`` gives the same result but spends about a microsecond of
    Python per escape: seconds for one value of a few megabytes. Here every escape becomes
    a ``\\xXX`` for the C escape decoder, after the text's own backslashes are doubled and
    a ``%`` that starts no escape is written ``%25`` (so it stays a ``%``).
    """
    if "%" not in text:
        return text.replace("+", " ").encode()
    escaped = _LONE_PERCENT.sub("%25", text.replace("+", " "))
    escaped = escaped.replace("\\", "\\\\").replace("%", "\\x")
    decoded: bytes = codecs.escape_decode(escaped.encode())[0]
    return decoded


def unquote(text: str) -> str:
    """:func:`unquote_bytes` as text; bytes that are not UTF-8 become U+FFFD, as
    ``urllib.parse.unquote_plus`` makes them."""
    if "%" not in text:
        return text.replace("+", " ")
    return unquote_bytes(text).decode("utf-8", "replace")


def raw_pairs(query: str) -> Iterator[tuple[str, str]]:
    """The ``name=value`` pairs of a query string or form, not yet decoded; lazily, so
    that a caller that stops at its cap has not paid for the rest."""
    for match in _PAIR.finditer(query):
        name, _, value = match.group().partition("=")
        yield name, value


def php_pairs(query: str) -> Iterator[tuple[str, str]]:
    """The decoded ``name=value`` pairs of a query string or form, lazily."""
    for name, value in raw_pairs(query):
        yield unquote(name), unquote(value)


def parse_php_query(query: str, *, strict: bool = False) -> Params:
    return parse_php_pairs(php_pairs(query), strict=strict)


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
