"""Where the master key comes from: the environment, a file, or one generated on first start."""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
import stat
from pathlib import Path

from ..errors import ConfigError
from ._crypto import KEY_SIZE, key_id

KEY_FILE_NAME = "master.key"
# A rotation's new key until the store is sealed with it (docs/security.md).
NEW_KEY_FILE_NAME = "master.key.new"


def load_master_key(data_dir: Path, env_value: str | None, file: Path | None) -> bytes:
    """The 32-byte master key.

    ``env_value`` (``B24GATE_MASTER_KEY``) or ``file`` (``B24GATE_MASTER_KEY_FILE``) hold it
    in base64; without either, ``<data_dir>/master.key`` is read, or created on first use.
    A key file that group or others may read is refused.
    """
    if env_value is not None and file is not None:
        raise ConfigError("set B24GATE_MASTER_KEY or B24GATE_MASTER_KEY_FILE, not both")
    if env_value is not None:
        return _decode(env_value, "B24GATE_MASTER_KEY")
    if file is not None:
        return _read_key_file(file)
    path = data_dir / KEY_FILE_NAME
    if (data_dir / NEW_KEY_FILE_NAME).exists():
        raise ConfigError(
            f"a master key rotation was interrupted ({data_dir / NEW_KEY_FILE_NAME} exists): "
            "run `b24gate key rotate` to finish or undo it"
        )
    if not path.exists():
        _create_key_file(data_dir, path)
    return _read_key_file(path)


def _read_key_file(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the master key file {path}: {exc.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        raise ConfigError(
            f"the master key file {path} is readable by group or others: run `chmod 600 {path}`"
        )
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"the master key file {path} does not hold a base64 key") from None
    return _decode(text, f"the master key file {path}")


def _decode(value: str, source: str) -> bytes:
    text = value.strip()
    # Standard and URL-safe alphabets are both accepted: `openssl rand -base64 32` gives the
    # first, Python's `secrets.token_urlsafe` users tend to produce the second.
    altchars = b"-_" if ("-" in text or "_" in text) else None
    try:
        key = base64.b64decode(text, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_SIZE:
        raise ConfigError(
            f"{source} must be {KEY_SIZE} random bytes in base64 (e.g. `openssl rand -base64 32`)"
        )
    return key


def _create_key_file(data_dir: Path, path: Path) -> None:
    try:
        if not data_dir.exists():
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(data_dir, 0o700)  # mkdir's mode is filtered by the umask
    except OSError as exc:
        raise ConfigError(f"cannot create the master key file {path}: {exc.strerror}") from None
    # Another process may publish its key first: then that one is the key.
    with contextlib.suppress(FileExistsError):
        _publish(path, generate_key())


def generate_key() -> bytes:
    """A fresh random master key."""
    return secrets.token_bytes(KEY_SIZE)


def read_key_file(path: Path) -> bytes:
    """The key in ``path`` (base64), refused when group or others may read the file."""
    return _read_key_file(path)


def write_key_file(path: Path, key: bytes) -> None:
    """Write ``key`` to a new file ``path`` (mode 0600, on disk before this returns); an
    existing file is refused, never overwritten."""
    try:
        _publish(path, key)
    except FileExistsError:
        raise ConfigError(f"{path} exists already: it is never overwritten") from None


def install_new_key(data_dir: Path, old_key: bytes) -> Path:
    """Finish a rotation of ``<data_dir>/master.key``: the old key is kept as
    ``master.key.old-<key id prefix>``, then ``master.key.new`` becomes ``master.key`` in one
    rename. Safe to repeat after a crash at any step; the old key's file is returned."""
    path = data_dir / KEY_FILE_NAME
    kept = data_dir / f"{KEY_FILE_NAME}.old-{key_id(old_key)[:8]}"
    try:
        _publish(kept, old_key)
    except FileExistsError:
        if _read_key_file(kept) != old_key:
            raise ConfigError(f"{kept} holds another key: move it away and run again") from None
    try:
        os.replace(data_dir / NEW_KEY_FILE_NAME, path)
        _fsync_dir(data_dir)
    except OSError as exc:
        raise ConfigError(f"cannot rename the new master key into {path}: {exc.strerror}") from None
    return kept


def _publish(path: Path, key: bytes) -> None:
    """Write a private temporary file, then publish it with link(), which fails (with
    FileExistsError) if ``path`` exists: readers never see a half-written key."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64encode(key) + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
    except FileExistsError:
        raise
    except OSError as exc:
        raise ConfigError(f"cannot write the master key file {path}: {exc.strerror}") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
