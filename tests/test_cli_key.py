"""`b24gate key rotate`, `key generate` and `key id` as an administrator runs them: real
processes on a store filled through the store's API. Key ids are printed, key material
never; after a rotation the gateway works with the new key only, and a rotation cut short
at any step is finished or undone by the next `key rotate`."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from b24gate.core import rotate_master_key
from b24gate.errors import ConfigError
from b24gate.settings import load_settings
from b24gate.store import (
    Cipher,
    Grant,
    Store,
    key_id,
    load_master_key,
    read_key_file,
    write_key_file,
)
from b24gate.testing import free_port
from tests.store.conftest import new_portal
from tests.test_cli import TIMEOUT, b24gate, environment


def failed(done: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert done.returncode == 1, (done.args, done.stdout, done.stderr)
    assert done.stdout == ""
    assert fragment in done.stderr, done.stderr


def url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir}/b24gate.db"


async def fill(data_dir: Path, key: bytes) -> None:
    """A store sealed with ``key``: a portal with its secret and grant."""
    async with await Store.open(url(data_dir), Cipher(key)) as store:
        portal = await store.add_portal(new_portal())
        now = time.time()
        await store.save_grant(portal, Grant("access-Zq81", "refresh-Zq81", now + 3600, now))


async def grant_with(data_dir: Path, key: bytes) -> str:
    async with await Store.open(url(data_dir), Cipher(key)) as store:
        portal = await store.portal("demo")
        assert portal is not None
        assert portal.client_secret == "secret-of-demo-Zq81"
        grant = await store.grant(portal)
        assert grant is not None
        return grant.access_token


def key_text(key: bytes) -> str:
    return base64.b64encode(key).decode()


@pytest.fixture
async def data_dir(tmp_path: Path) -> Path:
    """A data directory with its generated master.key and a filled store."""
    data = tmp_path / "data"
    await fill(data, load_master_key(data, None, None))
    return data


async def test_rotate_with_the_default_key_file(data_dir: Path) -> None:
    env = environment(data_dir)
    key_file = data_dir / "master.key"
    old = read_key_file(key_file)

    done = b24gate(env, "key", "rotate", "--json")

    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    new = read_key_file(key_file)
    kept = data_dir / f"master.key.old-{key_id(old)[:8]}"
    assert info == {
        "old_key_id": key_id(old),
        "new_key_id": key_id(new),
        "values": 4,  # the key check, the client secret, two tokens
        "key_file": str(key_file),
        "old_key_file": str(kept),
        "resumed": False,
    }
    assert "serve" not in done.stdout
    assert str(kept) in done.stderr
    for text in (key_text(old), key_text(new)):
        assert text not in done.stdout + done.stderr
    assert read_key_file(kept) == old
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert kept.stat().st_mode & 0o777 == 0o600
    assert not (data_dir / "master.key.new").exists()

    assert await grant_with(data_dir, new) == "access-Zq81"
    with pytest.raises(ConfigError, match="does not match this store"):
        await grant_with(data_dir, old)
    listing, current = b24gate(env, "portal", "list"), b24gate(env, "key", "id", "--json")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.startswith("demo\t")
    assert json.loads(current.stdout)["key_id"] == key_id(new)


async def test_rotate_with_the_key_in_a_setting(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old_file, new_file = tmp_path / "old.key", tmp_path / "new.key"
    old = os.urandom(32)
    write_key_file(old_file, old)
    await fill(data, old)
    env = environment(data, B24GATE_MASTER_KEY_FILE=str(old_file))

    failed(b24gate(env, "key", "rotate"), "b24gate key generate --out PATH")
    generated = b24gate(env, "key", "generate", "--out", str(new_file))
    assert generated.returncode == 0, generated.stderr
    new = read_key_file(new_file)
    assert generated.stdout.strip() == key_id(new)
    assert new_file.stat().st_mode & 0o777 == 0o600
    failed(b24gate(env, "key", "generate", "--out", str(new_file)), "exists already")
    failed(
        b24gate(env, "key", "rotate", "--new-key-file", str(old_file)),
        "the new master key is the current one",
    )
    foreign = environment(data, B24GATE_MASTER_KEY=key_text(os.urandom(32)))
    failed(
        b24gate(foreign, "key", "rotate", "--new-key-file", str(new_file)),
        f"does not open the store, which is sealed with key {key_id(old)}",
    )

    done = b24gate(env, "key", "rotate", "--new-key-file", str(new_file))

    assert done.returncode == 0, done.stderr
    assert f"old_key_id: {key_id(old)}\nnew_key_id: {key_id(new)}\n" in done.stdout
    assert "B24GATE_MASTER_KEY_FILE" in done.stderr
    assert read_key_file(old_file) == old  # the gateway writes no key of a setting's
    assert not list(data.glob("master.key*"))
    failed(b24gate(env, "portal", "list"), "the master key does not match this store")
    switched = environment(data, B24GATE_MASTER_KEY=key_text(new))
    assert b24gate(switched, "portal", "list").returncode == 0
    assert await grant_with(data, new) == "access-Zq81"


async def test_a_rotation_cut_short_before_the_store_was_sealed_is_undone(
    data_dir: Path,
) -> None:
    env = environment(data_dir)
    old = read_key_file(data_dir / "master.key")
    stale = os.urandom(32)
    write_key_file(data_dir / "master.key.new", stale)  # the process died before its commit

    failed(b24gate(env, "portal", "list"), "run `b24gate key rotate` to finish or undo it")
    done = b24gate(env, "key", "rotate", "--json")

    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    new = read_key_file(data_dir / "master.key")
    assert (info["old_key_id"], info["new_key_id"], info["resumed"]) == (
        key_id(old),
        key_id(new),
        False,
    )
    assert new not in (old, stale)
    assert await grant_with(data_dir, new) == "access-Zq81"


async def test_a_rotation_cut_short_before_the_store_ever_opened_is_undone(
    tmp_path: Path,
) -> None:
    # The database was unreachable when `key rotate` began, and had never been opened: it
    # holds no key check. The key file and the store are as they were; the stale new key
    # is kept aside, not deleted.
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    env = environment(data_dir)
    old = os.urandom(32)
    write_key_file(data_dir / "master.key", old)
    stale = os.urandom(32)
    write_key_file(data_dir / "master.key.new", stale)

    done = b24gate(env, "key", "rotate", "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["old_key_id"] == key_id(old)
    assert not (data_dir / "master.key.new").exists()
    assert read_key_file(data_dir / f"master.key.new.unused-{key_id(stale)[:8]}") == stale
    assert b24gate(env, "portal", "list").returncode == 0


@pytest.mark.parametrize("old_kept", [False, True])
async def test_a_rotation_cut_short_after_the_store_was_sealed_is_finished(
    data_dir: Path, old_kept: bool
) -> None:
    # The store committed with the new key; the process died before (or after) keeping the
    # old key, and before renaming the new one into place.
    old = read_key_file(data_dir / "master.key")
    new = os.urandom(32)
    write_key_file(data_dir / "master.key.new", new)
    async with await Store.open(url(data_dir), Cipher(old)) as store:
        await store.rotate_key(Cipher(new))
    kept = data_dir / f"master.key.old-{key_id(old)[:8]}"
    if old_kept:
        write_key_file(kept, old)

    done = b24gate(environment(data_dir), "key", "rotate", "--json")

    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert (info["new_key_id"], info["values"], info["resumed"]) == (key_id(new), 0, True)
    assert "interrupted" in done.stderr
    assert read_key_file(data_dir / "master.key") == new
    assert read_key_file(kept) == old
    assert not (data_dir / "master.key.new").exists()
    assert await grant_with(data_dir, new) == "access-Zq81"


async def test_a_rotation_that_fails_leaves_the_key_files_and_the_store_as_they_were(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = read_key_file(data_dir / "master.key")

    async def broken(self: Store, new: Cipher, **_: object) -> None:
        raise ConfigError("the database went away")

    monkeypatch.setattr(Store, "rotate_key", broken)
    with pytest.raises(ConfigError, match="went away"):
        await rotate_master_key(load_settings(data_dir=data_dir))

    assert read_key_file(data_dir / "master.key") == old
    assert [name for name in os.listdir(data_dir) if "key" in name] == ["master.key"]
    assert await grant_with(data_dir, old) == "access-Zq81"


async def _serving(data_dir: Path, key: bytes, count: int) -> None:
    """Until the store lists ``count`` serving processes (bounded)."""
    deadline = time.monotonic() + TIMEOUT
    async with await Store.open(url(data_dir), Cipher(key)) as store:
        while len(await store.serving()) != count:
            assert time.monotonic() < deadline, "the serving processes never showed up"
            await asyncio.sleep(0.1)


def _start_serve(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "b24gate", "serve", "--port", str(free_port())],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("how", ["stopped", "killed"])
async def test_a_rotation_under_a_running_gateway_is_refused(data_dir: Path, how: str) -> None:
    # A running replica holds the old key: rotated under it, it would go on writing values
    # sealed with that key. The rotation refuses and changes nothing until it is gone.
    env = environment(data_dir)
    old = read_key_file(data_dir / "master.key")
    serve = _start_serve(env)
    try:
        await _serving(data_dir, old, 1)
        failed(b24gate(env, "key", "rotate"), "gateway process(es) serve from this store")
        assert read_key_file(data_dir / "master.key") == old
        assert not (data_dir / "master.key.new").exists()
        assert await grant_with(data_dir, old) == "access-Zq81"
    finally:
        if how == "stopped":
            serve.send_signal(signal.SIGTERM)
        else:
            serve.kill()  # a process that died: its presence is left behind
        serve.wait(timeout=TIMEOUT)
    # Stopped, it withdrew; killed, its presence names a dead process of this host.
    done = b24gate(env, "key", "rotate")
    assert done.returncode == 0, done.stderr
    assert await grant_with(data_dir, read_key_file(data_dir / "master.key")) == "access-Zq81"
