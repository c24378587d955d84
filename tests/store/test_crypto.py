"""The cipher: AES-256-GCM blobs bound to their row, with a key id for rotation."""

from __future__ import annotations

import os

import pytest

from b24gate.errors import ConfigError
from b24gate.store import Cipher, key_id

WHERE = {"table": "grants", "row": "demo", "column": "access_token"}


def test_round_trip_and_blob_layout() -> None:
    key = os.urandom(32)
    blob = Cipher(key).encrypt("token-äöü", **WHERE)
    assert blob[:1] == b"\x01"
    assert blob[1:9] == bytes.fromhex(key_id(key))
    assert len(blob) == 1 + 8 + 12 + len("token-äöü".encode()) + 16
    assert Cipher(key).decrypt(blob, **WHERE) == "token-äöü"


def test_same_plaintext_encrypts_differently_each_time() -> None:
    cipher = Cipher(os.urandom(32))
    first, second = (cipher.encrypt("same", **WHERE) for _ in range(2))
    assert first[9:21] != second[9:21]  # fresh nonce
    assert first != second


@pytest.mark.parametrize(
    "moved",
    [
        {"table": "portals"},
        {"row": "other"},
        {"column": "refresh_token"},
        {"row": "de", "column": "mo\x00access_token"},  # the separator keeps fields apart
    ],
)
def test_blob_read_at_another_place_fails(moved: dict[str, str]) -> None:
    cipher = Cipher(os.urandom(32))
    blob = cipher.encrypt("secret-value", **WHERE)
    with pytest.raises(ConfigError, match="the master key does not match this store") as info:
        cipher.decrypt(blob, **{**WHERE, **moved})
    assert "secret-value" not in str(info.value)


def test_foreign_key_and_damaged_blob_fail_with_the_same_message() -> None:
    cipher = Cipher(os.urandom(32))
    blob = cipher.encrypt("secret-value", **WHERE)
    damaged = blob[:-1] + bytes([blob[-1] ^ 1])
    for reader, bad in [
        (Cipher(os.urandom(32)), blob),
        (cipher, damaged),
        (cipher, b""),
        (cipher, b"\x02" + blob[1:]),
    ]:
        with pytest.raises(ConfigError, match=r"^the master key does not match this store$"):
            reader.decrypt(bad, **WHERE)


def test_older_keys_decrypt_but_only_the_first_encrypts() -> None:
    old, new = os.urandom(32), os.urandom(32)
    sealed_by_old = Cipher(old).encrypt("kept", **WHERE)
    rotated = Cipher({"current": new, "previous": old})
    assert rotated.decrypt(sealed_by_old, **WHERE) == "kept"
    assert rotated.encrypt("fresh", **WHERE)[1:9] == bytes.fromhex(key_id(new))
    assert rotated.current_key_id == key_id(new)


def test_key_id_is_stable_and_reveals_nothing_of_the_key() -> None:
    key = bytes(range(32))
    assert key_id(key) == key_id(bytes(range(32)))
    assert len(key_id(key)) == 16
    assert key_id(key) != key_id(os.urandom(32))
    assert key.hex()[:16] not in key_id(key)
    assert key.hex() not in repr(Cipher(key))


@pytest.mark.parametrize("keys", [b"short", {}, {"a": os.urandom(31)}])
def test_bad_keys_are_refused(keys: bytes | dict[str, bytes]) -> None:
    with pytest.raises(ConfigError):
        Cipher(keys)
