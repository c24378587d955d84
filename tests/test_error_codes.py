"""The machine codes a client programs against: exactly the ones docs/http-api.md lists.

A new error class whose code the docs do not list, a code the docs promise that no error
has, an error defined outside the one tree, or a tree drawing that leaves a class out:
each fails here.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import b24gate
from b24gate import errors
from b24gate.errors import B24GateError

HTTP_API = Path(__file__).parent.parent / "docs" / "http-api.md"
_CODE = re.compile(r"`([a-z][a-z_]*)`")


def _load_every_module() -> None:
    """Import the whole package (the sandbox aside: it has errors of its own, not ours;
    ``__main__`` would run the command line), so that an error class defined anywhere is
    among B24GateError's subclasses."""
    for module in pkgutil.walk_packages(b24gate.__path__, "b24gate."):
        if not module.name.startswith("b24gate.sandbox") and not module.name.endswith("__main__"):
            importlib.import_module(module.name)


def _tree() -> list[type[B24GateError]]:
    _load_every_module()
    found: list[type[B24GateError]] = [B24GateError]
    for cls in found:
        found.extend(c for c in cls.__subclasses__() if c.__module__.startswith("b24gate"))
    return found


def _documented_codes() -> set[str]:
    """Every code in the `code` column of a table in docs/http-api.md (the install event's
    table calls that column `body`)."""
    codes: set[str] = set()
    column: int | None = None
    for line in HTTP_API.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            column = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if column is None:
            names = [cell.lower() for cell in cells]
            column = next((names.index(n) for n in ("code", "body") if n in names), -1)
        elif column >= 0 and len(cells) > column:
            codes.update(_CODE.findall(cells[column]))
    return codes


def test_every_error_is_in_the_one_tree() -> None:
    outside = [
        f"{c.__module__}.{c.__qualname__}" for c in _tree() if c.__module__ != errors.__name__
    ]
    assert outside == [], "define errors in b24gate/errors.py"


def test_the_codes_are_exactly_the_documented_ones() -> None:
    defined = {cls.code for cls in _tree()}
    documented = _documented_codes()
    assert defined - documented == set(), "codes missing from docs/http-api.md's tables"
    assert documented - defined == set(), "docs/http-api.md lists codes no error has"


def test_the_drawing_shows_every_class_with_its_own_code() -> None:
    drawing = errors.__doc__ or ""
    for cls in _tree():
        line = next((ln for ln in drawing.splitlines() if f" {cls.__name__} " in ln), None)
        assert line is not None, f"{cls.__name__} is missing from the tree in errors.py"
        if "code" in vars(cls):
            assert cls.code in line, f"{cls.__name__}'s line does not show {cls.code}"


def test_each_code_has_one_status() -> None:
    """A client may branch on the code alone: no code stands for two statuses (the
    subclasses that only name a case of their parent share its code and status)."""
    status_of: dict[str, set[int]] = {}
    for cls in _tree():
        if cls.__name__ != "BitrixError" and not issubclass(cls, errors.BitrixError):
            status_of.setdefault(cls.code, set()).add(cls.status)
    assert {code: s for code, s in status_of.items() if len(s) > 1} == {}
