"""The façade: a sorted ``__all__`` whose names all exist."""

from __future__ import annotations

import b24gate.store


def test_all_is_sorted_and_complete() -> None:
    names = b24gate.store.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(b24gate.store, name) is not None
    public = {n for n in vars(b24gate.store) if not n.startswith("_")}
    assert public - set(names) == set()
