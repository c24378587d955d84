"""Every package's façade: an ``__all__`` that names exactly its public names (ruff's
RUF022 keeps it sorted).

The implementation modules are private (``_name.py``); what a package offers is what its
``__init__`` exports, so a name missing here is not part of the package, and a name that
is exported must exist. Tests and benchmarks use those names too (what they need beyond the
façades is in ``b24gate.testing``), so that they test what a reader of the API sees.
"""

from __future__ import annotations

import ast
import importlib
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

PACKAGES = [
    "b24gate",
    "b24gate.api",
    "b24gate.bitrix",
    "b24gate.cli",
    "b24gate.core",
    "b24gate.sandbox",
    "b24gate.store",
    "b24gate.testing",
]


def _public(module: types.ModuleType) -> set[str]:
    """Public names the package itself binds (not its submodules, not `annotations`)."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and name != "annotations"
        and not (isinstance(value, types.ModuleType) and value.__name__.startswith(module.__name__))
    }


@pytest.mark.parametrize("name", PACKAGES)
def test_the_facade_exports_exactly_its_public_names(name: str) -> None:
    package = importlib.import_module(name)
    exported = package.__all__
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(package, n)]
    assert missing == [], f"{name}.__all__ names what does not exist"
    assert _public(package) - set(exported) == set(), f"{name} binds names it does not export"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")  # `__version__` is public


def _private_imports(path: Path) -> list[str]:
    """The private b24gate modules (``b24gate._x``, ``b24gate.core._x``) ``path`` imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [
            f"{path.relative_to(ROOT)}:{node.lineno} {name}"
            for name in names
            if name.split(".")[0] == "b24gate" and any(_private(part) for part in name.split("."))
        ]
    return found


def test_tests_and_benchmarks_use_only_public_names() -> None:
    files = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/**/*.py")]
    assert len(files) > 10
    assert [hit for path in sorted(files) for hit in _private_imports(path)] == []
