"""``batch`` read the one way Bitrix24 reads it, and written back as it was checked.

Bitrix24 upper-cases ``batch``'s top-level parameter names before it reads ``CMD`` and
``HALT`` (of several spellings, the last one sent wins), takes each command's method as
PHP's ``parse_url($command)['path']`` and its parameters as the ``query``, and, inside a
batch, replaces text that matches :data:`REFERENCE` with parts of earlier commands'
answers (docs/protocol.md §4.2). A gateway that checks a batch some other way checks
something else than what runs. So only commands whose reading is beyond doubt are
accepted, ``NAME`` or ``NAME?QUERY`` with ``NAME`` a plain method name, everything else
is refused (400 ``invalid_batch``), and what is forwarded is the batch rebuilt from what
was parsed: one ``cmd``, the commands as checked.

    batch = parse_batch(params)        # RequestError (invalid_batch) if in doubt
    for method in batch.methods: ...   # what Bitrix24 will run
    forward(batch.params())            # exactly that, nothing else

The other way round, a batch the gateway writes itself (the scheduler packing waiting
calls, an export's pages) is :func:`encode_batch` of commands whose parameters are
:func:`batchable`: they reach Bitrix24 through a command's query string unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._php import build_php_query
from ..errors import InvalidBatch, RequestError
from ._names import method_reads, valid_method

# Bitrix24's own pattern for a reference to an earlier command's answer inside a batch
# (CRestUtil::processBatchElement): `$result[c0][EMAIL]`, `$result_[c0]`, `$ERROR[c0]`,
# `$total[c0]` all match; the `[...]` steps are then read out of the rest of the match.
# PCRE without /u: `\s` and the case-insensitive match are ASCII only, hence re.ASCII.
REFERENCE = re.compile(r"\$(result|next|total|time|error)([^\s]*)", re.IGNORECASE | re.ASCII)
# What keeps a call out of a batch shared with others is wider on purpose: Bitrix24 builds
# its list of names from the keys of the answers so far, which can add `error_description`
# or `signature`. Any `$` before a letter may one day be a reference; ordinary text pays
# only a request of its own.
_REFERENCE_LIKE = re.compile(r"\$[A-Za-z_]")
# parse_url() turns control characters into `_`: a query holding one is not sent as written.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The top-level names Bitrix24's batch reads, after upper-casing them.
_CMD, _HALT, _CONNECTOR = "CMD", "HALT", "AUTH_CONNECTOR"


def _bad(message: str) -> InvalidBatch:
    return InvalidBatch(message)


def _shown(value: Any) -> str:
    """A command as an error message may quote it: short, with control characters escaped."""
    return repr(value[:80] if isinstance(value, str) else value)[:90]


@dataclass(frozen=True)
class BatchCommand:
    """One command of a batch: its key in ``cmd``, its method, and its query (maybe empty)."""

    key: str
    method: str
    query: str

    @property
    def text(self) -> str:
        """The command as it is forwarded: ``method`` or ``method?query``."""
        return f"{self.method}?{self.query}" if self.query else self.method


@dataclass(frozen=True)
class Batch:
    """A ``batch``'s parameters as Bitrix24 reads them."""

    commands: tuple[BatchCommand, ...]
    listed: bool  # `cmd` came as a list: it goes on as one
    options: Mapping[str, Any]  # `halt` and `auth_connector`, when they were sent

    @property
    def methods(self) -> list[str]:
        return [command.method for command in self.commands]

    def params(self) -> dict[str, Any]:
        """What to forward: only what Bitrix24's batch reads, spelled once, as checked."""
        cmd: list[str] | dict[str, str] = (
            [c.text for c in self.commands]
            if self.listed
            else {c.key: c.text for c in self.commands}
        )
        return {**self.options, "cmd": cmd}


def parse_command(text: Any, where: str = "a command") -> BatchCommand:
    """``NAME`` or ``NAME?QUERY``, read as PHP's ``parse_url`` would read it, or refused.

    With ``NAME`` a plain method name (no ``:``, ``/``, ``#``, spaces, ``%``) the path
    that ``parse_url`` returns is ``NAME`` itself: a ``:`` in the query comes after the
    ``?`` and cannot start a scheme or a port. The query must hold no ``#`` (the rest would
    be a fragment, dropped) and no control character (changed to ``_``), so that Bitrix24
    reads the query as written too. ``NAME`` may not end in a ``.json`` or ``.xml``
    segment (:func:`~._names.valid_method`): whether the batch drops it as the entry point
    does or not, ``user.get.json`` is not checked as the method that may run.
    """
    if not isinstance(text, str):
        raise _bad(f"{where} must be a string `method?query`, not {type(text).__name__}")
    name, _, query = text.partition("?")
    if not valid_method(name):
        raise _bad(
            f"{where} {_shown(text)} is not `method` or `method?query` with a plain method "
            "name: Bitrix24 would not run the method it seems to name"
        )
    if name.lower() == "batch":
        raise _bad(f"{where}: a batch inside a batch is not allowed")
    if "#" in query:
        raise _bad(f"{where}: `#` must be sent as %23; Bitrix24 drops what follows a raw `#`")
    if _CONTROL.search(query):
        raise _bad(f"{where}: control characters must be URL-encoded in the query")
    return BatchCommand("", name, query)


def _top_level(params: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    """``CMD``, ``HALT`` and ``AUTH_CONNECTOR`` whatever their case, each sent at most
    once."""
    found: dict[str, tuple[str, Any]] = {}
    for key, value in params.items():
        # PHP upper-cases ASCII letters only: no other key can become CMD or HALT.
        name = key.upper() if isinstance(key, str) and key.isascii() else None
        if name not in (_CMD, _HALT, _CONNECTOR):
            # Bitrix24's batch reads nothing else (the request's auth_connector applies to
            # every command); nothing else is forwarded.
            continue
        if name in found:
            raise _bad(
                f"`{name.lower()}` is sent twice (`{found[name][0]}` and `{key}`): Bitrix24 "
                "reads parameter names regardless of case; send it once"
            )
        found[name] = (key, value)
    return found


def parse_batch(params: Mapping[str, Any]) -> Batch:
    """A ``batch``'s parameters, read as Bitrix24 reads them, or RequestError
    (``invalid_batch``) for anything that could be read in more than one way."""
    found = _top_level(params)
    options = {"halt": found[_HALT][1]} if _HALT in found else {}
    if _CONNECTOR in found:
        options[AUTH_CONNECTOR] = found[_CONNECTOR][1]
    if _CMD not in found:
        return Batch((), False, options)
    cmd = found[_CMD][1]
    items: list[tuple[str, Any]]
    if isinstance(cmd, Mapping):
        items = [(str(key), command) for key, command in cmd.items()]
    elif isinstance(cmd, list):
        items = [(str(i), command) for i, command in enumerate(cmd)]
    else:
        raise _bad("`cmd` must be a map or a list of `method?query` strings")
    commands = []
    for key, command in items:
        parsed = parse_command(command, f"cmd[{key[:40]}]")
        commands.append(BatchCommand(key, parsed.method, parsed.query))
    return Batch(tuple(commands), isinstance(cmd, list), options)


def is_read(method: str, params: Mapping[str, Any] | None = None) -> bool:
    """True when calling ``method`` with ``params`` changes nothing on the portal.

    A ``batch`` reads only if every command reads, as :func:`parse_batch` reads them; an
    empty or unreadable ``batch`` counts as a write.
    """
    if not isinstance(method, str):
        return False
    if method.lower() != "batch":
        return method_reads(method)
    try:
        batch = parse_batch(params or {})
    except RequestError:
        return False
    return bool(batch.commands) and all(method_reads(m) for m in batch.methods)


def has_reference(value: Any) -> bool:
    """Whether any text in ``value`` (map keys included) could read, inside a batch, as a
    reference to another command's answer. Such a call must never share a batch with
    other calls: alone, Bitrix24 replaces nothing."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _REFERENCE_LIKE.search(item):
                return True
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def batchable(value: Any) -> bool:
    """Whether ``value`` reaches Bitrix24 unchanged through a batch command's query string.

    JSON ``null``, booleans and empty arrays or objects do not (PHP's query parsing loses
    or changes them), nor keys that carry brackets, nor text that Bitrix24 may read as a
    reference to another command's answer (``$result_[c0][EMAIL]``, ``$error[c0]``,
    ``$total[net]``...): inside a batch it would be replaced, alone it is left as it is.
    """
    if value is None or isinstance(value, bool):
        return False
    if isinstance(value, Mapping):
        return bool(value) and all(
            isinstance(k, str)
            and "[" not in k
            and "]" not in k
            and not has_reference(k)
            and batchable(v)
            for k, v in value.items()
        )
    if isinstance(value, list):
        return bool(value) and all(batchable(v) for v in value)
    if isinstance(value, str):
        return not has_reference(value)
    return isinstance(value, int | float) and not (
        isinstance(value, float) and not math.isfinite(value)
    )


AUTH_CONNECTOR = "auth_connector"


def names_connector(params: Mapping[str, Any]) -> bool:
    """Whether ``params`` carry an ``auth_connector`` of their own (any case)."""
    return any(isinstance(k, str) and k.lower() == AUTH_CONNECTOR for k in params)


def with_auth_connector(
    method: str, params: Mapping[str, Any], connector: str
) -> Mapping[str, Any]:
    """``params`` of a request carrying ``auth_connector=connector``, so that what it writes
    stays out of that channel's offline event queue (docs/protocol.md §9). Bitrix24 reads it
    from the request, a ``batch``'s for all its commands (one in a command's query is
    ignored). An ``event.*`` method (they manage the queues themselves) or a request that
    names a connector of its own is left as it is."""
    if method.lower().startswith("event.") or names_connector(params):
        return params
    return {**params, AUTH_CONNECTOR: connector}


def encode_command(method: str, params: Mapping[str, Any]) -> str:
    """One command of a batch: ``method?query``, the query as PHP's ``http_build_query``
    writes it (faithful only for :func:`batchable` parameters)."""
    return f"{method}?{build_php_query(params)}"


def encode_batch(commands: Mapping[str, tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """The parameters of a batch of independent commands, keyed as given: ``halt=0``, so
    that one command's error does not stop the others."""
    return {
        "halt": 0,
        "cmd": {key: encode_command(method, params) for key, (method, params) in commands.items()},
    }
