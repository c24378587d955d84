"""The master key's administration: which key the store is on, and rotating it.

With the default key file (``<data_dir>/master.key``) a rotation runs in steps that survive
a crash at any point: the new key is written to ``master.key.new``; the store is sealed
again in one transaction; the old key is kept as ``master.key.old-<key id prefix>``; the
new key is renamed into place. A start that finds ``master.key.new`` refuses
(:func:`b24gate.store.load_master_key`), and the next :func:`rotate_master_key` decides by
the store's key check which key is right: it finishes the rotation or undoes it.

With ``B24GATE_MASTER_KEY`` or ``B24GATE_MASTER_KEY_FILE`` the gateway writes no key: the
administrator gives the new key's file and switches the setting afterwards.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..settings import Settings
from ..store import (
    KEY_FILE_NAME,
    NEW_KEY_FILE_NAME,
    Cipher,
    Rotation,
    Store,
    database_url,
    generate_key,
    install_new_key,
    key_id,
    load_master_key,
    read_key_file,
    store_key_id,
    write_key_file,
)
from ._gateway import PRESENCE_TTL
from ._jobs import dead_on_this_host


@dataclass(frozen=True)
class KeyRotation:
    """A rotation done: key ids only, never keys.

    ``key_file`` holds the new key (with the key in a setting: the file given, which the
    setting must now name); ``old_key_file`` the old key, kept (default key file only).
    ``resumed``: an interrupted rotation was finished, nothing was sealed again now.
    """

    old_key_id: str
    new_key_id: str
    values: int
    key_file: Path
    old_key_file: Path | None
    resumed: bool = False


@dataclass(frozen=True)
class KeyInfo:
    """The current master key: its id, where it comes from, and since when (a file's)."""

    key_id: str
    source: str
    age_seconds: float | None


def key_from_settings(settings: Settings) -> bool:
    """Whether the key is given by ``B24GATE_MASTER_KEY`` or ``B24GATE_MASTER_KEY_FILE``
    (rather than the generated ``<data_dir>/master.key``)."""
    return settings.master_key is not None or settings.master_key_file is not None


def current_key(settings: Settings) -> bytes:
    """The current master key from the settings; creates none."""
    if settings.master_key is not None:
        return load_master_key(settings.data_dir, settings.master_key.get_secret_value(), None)
    path = settings.master_key_path
    if not path.exists():
        raise ConfigError(f"no master key at {path} yet: it is generated on first start")
    return read_key_file(path)


def current_key_info(settings: Settings) -> KeyInfo:
    """The current key's id and, for a key file, its age; creates no key."""
    key = current_key(settings)
    if settings.master_key is not None:
        return KeyInfo(key_id(key), "B24GATE_MASTER_KEY", None)
    path = settings.master_key_path
    return KeyInfo(key_id(key), str(path), time.time() - path.stat().st_mtime)


def new_key_file(path: Path) -> str:
    """Write a fresh key to ``path`` (mode 0600, never over an existing file); its id."""
    key = generate_key()
    write_key_file(path, key)
    return key_id(key)


async def rotate_master_key(settings: Settings, new_key: Path | None = None) -> KeyRotation:
    """Seal every secret of the store again with a new master key.

    With the default key file the new key is generated (or read from ``new_key``) and
    installed; with the key in a setting, ``new_key`` is required. Raises
    :class:`ConfigError` when the new key is the current one, when the current key does not
    open the store, or when the store fails; the store is then unchanged.
    """
    url = database_url(settings.data_dir, settings.database_url)
    if key_from_settings(settings):
        if new_key is None:
            raise ConfigError(
                "the master key is set by B24GATE_MASTER_KEY or B24GATE_MASTER_KEY_FILE: "
                "create the new key with `b24gate key generate --out PATH` and pass "
                "--new-key-file PATH"
            )
        rotation = await _reseal(url, current_key(settings), read_key_file(new_key))
        return KeyRotation(rotation.old_key_id, rotation.new_key_id, rotation.values, new_key, None)
    data_dir = settings.data_dir
    path = data_dir / KEY_FILE_NAME
    old = current_key(settings)
    resumed = await _settle_interrupted(url, data_dir, old)
    if resumed is not None:
        return resumed
    new = read_key_file(new_key) if new_key is not None else generate_key()
    _check_differs(old, new)
    pending = data_dir / NEW_KEY_FILE_NAME
    write_key_file(pending, new)
    try:
        rotation = await _reseal(url, old, new)
    except BaseException:
        # The new key goes only when the store is known to be still on the old one: a
        # failure at commit may have committed, and then the new key is the store's.
        with contextlib.suppress(Exception):
            if await store_key_id(url) == key_id(old):
                pending.unlink()
        raise
    kept = install_new_key(data_dir, old)
    return KeyRotation(rotation.old_key_id, rotation.new_key_id, rotation.values, path, kept)


async def _settle_interrupted(url: str, data_dir: Path, old: bytes) -> KeyRotation | None:
    """Finish or undo a rotation that ``master.key.new`` says was interrupted: the store's
    key check says which key it is sealed with. The rotation finished, or None."""
    pending = data_dir / NEW_KEY_FILE_NAME
    if not pending.exists():
        return None
    new = read_key_file(pending)
    on = await store_key_id(url)
    if on is None:
        # No key check: the store was never opened, so nothing in it is sealed and the
        # rotation never reached it. The new key is set aside rather than deleted.
        pending.rename(data_dir / f"{NEW_KEY_FILE_NAME}.unused-{key_id(new)[:8]}")
        return None
    if on == key_id(new):
        kept = install_new_key(data_dir, old)
        return KeyRotation(key_id(old), key_id(new), 0, data_dir / KEY_FILE_NAME, kept, True)
    if on != key_id(old):
        raise ConfigError(
            f"the store is sealed with key {on}, neither {KEY_FILE_NAME}'s ({key_id(old)}) "
            f"nor {NEW_KEY_FILE_NAME}'s ({key_id(new)}): find its key before rotating"
        )
    pending.unlink()  # the rotation never committed: the store is on the old key
    return None


def _check_differs(old: bytes, new: bytes) -> None:
    if key_id(old) == key_id(new):
        raise ConfigError("the new master key is the current one: nothing to rotate")


async def _reseal(url: str, old: bytes, new: bytes) -> Rotation:
    _check_differs(old, new)
    on = await store_key_id(url)
    if on is not None and on != key_id(old):
        raise ConfigError(
            f"the current master key ({key_id(old)}) does not open the store, which is "
            f"sealed with key {on}: nothing was changed"
        )
    async with await Store.open(url, Cipher(old)) as store:
        running = [h for h in await store.serving() if not dead_on_this_host(h)]
        if running:
            # They hold the old key: after the rotation they would write values sealed with
            # it, and the store would be on two keys.
            raise ConfigError(
                f"{len(running)} gateway process(es) serve from this store "
                f"({', '.join(running)}): stop every replica, then rotate (a process that "
                f"died is forgotten {PRESENCE_TTL:.0f} s later); nothing was changed"
            )
        return await store.rotate_key(Cipher(new))
