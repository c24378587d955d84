"""Every package's façade: an ``__all__`` that names exactly its public names (ruff's
RUF022 keeps it sorted).

The implementation modules are private (``_name.py``); what a package offers is what its
``__init__`` exports, so a name missing here is not part of the package, and a name that
is exported must exist.
"""

from __future__ import annotations

import importlib
import types

import pytest

PACKAGES = [
    "b24gate",
    "b24gate.api",
    "b24gate.bitrix",
    "b24gate.cli",
    "b24gate.core",
    "b24gate.sandbox",
    "b24gate.store",
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
