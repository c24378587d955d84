"""The master key: from the environment, a file, or generated privately on first start."""

from __future__ import annotations

import base64
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from b24gate.errors import ConfigError
from b24gate.store import load_master_key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_a_private_key_and_later_starts_reuse_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "var" / "b24gate"
    key = load_master_key(data_dir, None, None)
    assert len(key) == 32
    assert mode(data_dir) == 0o700
    key_file = data_dir / "master.key"
    assert mode(key_file) == 0o600
    assert base64.b64decode(key_file.read_bytes()) == key
    assert load_master_key(data_dir, None, None) == key
    assert sorted(p.name for p in data_dir.iterdir()) == ["master.key"]  # no temporary left


def test_an_existing_data_dir_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o750)
    load_master_key(tmp_path, None, None)
    assert mode(tmp_path) == 0o750
    assert mode(tmp_path / "master.key") == 0o600


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: load_master_key(tmp_path / "var", None, None), range(16)))
    assert len(keys) == 1


def test_key_from_the_environment(tmp_path: Path) -> None:
    key = os.urandom(32)
    assert load_master_key(tmp_path, base64.b64encode(key).decode() + "\n", None) == key
    assert load_master_key(tmp_path, base64.urlsafe_b64encode(key).decode(), None) == key
    assert not (tmp_path / "master.key").exists()


def test_key_from_a_file(tmp_path: Path) -> None:
    key = os.urandom(32)
    key_file = tmp_path / "secret"
    key_file.write_bytes(base64.b64encode(key))
    key_file.chmod(0o400)
    assert load_master_key(tmp_path / "var", None, key_file) == key


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    load_master_key(tmp_path, None, None)
    key_file = tmp_path / "master.key"
    key_file.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600") as info:
        load_master_key(tmp_path, None, None)
    assert str(key_file) in str(info.value)
    given = tmp_path / "given.key"
    given.write_bytes(key_file.read_bytes())
    given.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_master_key(tmp_path, None, given)


@pytest.mark.parametrize(
    "value",
    [
        "not base64 at all!",
        base64.b64encode(b"k" * 16).decode(),
        base64.b64encode(b"k" * 33).decode(),
        "",
    ],
)
def test_a_bad_key_is_refused_without_echoing_it(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="32 random bytes in base64") as info:
        load_master_key(tmp_path, value, None)
    assert not value or value not in str(info.value)
    key_file = tmp_path / "master.key"
    key_file.write_text(value)
    key_file.chmod(0o600)
    with pytest.raises(ConfigError, match="32 random bytes in base64"):
        load_master_key(tmp_path, None, None)


def test_a_missing_key_file_and_two_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the master key file"):
        load_master_key(tmp_path, None, tmp_path / "missing.key")
    with pytest.raises(ConfigError, match="not both"):
        load_master_key(tmp_path, "x", tmp_path / "missing.key")


async def test_a_new_sqlite_database_and_its_journal_are_private(tmp_path: Path) -> None:
    from b24gate.store import Cipher, Store, database_url

    store = await Store.open(database_url(tmp_path / "data", None), Cipher(bytes(32)))
    try:
        await store.ping()
        files = sorted((tmp_path / "data").glob("b24gate.db*"))
        assert [f.name for f in files][:1] == ["b24gate.db"]
        for f in files:
            assert f.stat().st_mode & 0o077 == 0, f
    finally:
        await store.close()
