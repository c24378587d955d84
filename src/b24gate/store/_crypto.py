"""AES-256-GCM for secrets at rest, with the row's identity bound as associated data.

A blob is ``0x01 | key id (8 bytes) | nonce (12 bytes) | ciphertext and tag``. The key id
names the key that sealed it, so that keys can be rotated later without guessing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ConfigError

KEY_SIZE = 32
_FORMAT = b"\x01"
_KEY_ID_SIZE = 8
_NONCE_SIZE = 12
_HEADER_SIZE = len(_FORMAT) + _KEY_ID_SIZE + _NONCE_SIZE
_TAG_SIZE = 16
KEY_MISMATCH = "the master key does not match this store"

_log = logging.getLogger("b24gate.store")


def key_id(key: bytes) -> str:
    """The public name of a key: it identifies the key without revealing anything of it."""
    return _raw_key_id(key).hex()


def blob_key_id(blob: bytes) -> str | None:
    """The id of the key that sealed ``blob`` (read from its header), or None for a blob
    of no known format."""
    blob = bytes(blob)
    if len(blob) < _HEADER_SIZE + _TAG_SIZE or blob[:1] != _FORMAT:
        return None
    return blob[1 : 1 + _KEY_ID_SIZE].hex()


def _raw_key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"b24gate-key-id" + key).digest()[:_KEY_ID_SIZE]


class Cipher:
    """Seals and opens secrets with the master key.

    ``keys`` is one 32-byte key, or a mapping of labels to keys in which the first is the
    current key (it seals every new write) and the others only open older blobs. The labels
    are the caller's; blobs name their key by :func:`key_id`.
    """

    def __init__(self, keys: Mapping[str, bytes] | bytes) -> None:
        ordered = [keys] if isinstance(keys, bytes) else list(keys.values())
        if not ordered:
            raise ConfigError("no master key was given")
        self._keys: dict[bytes, AESGCM] = {}
        for key in ordered:
            if len(key) != KEY_SIZE:
                raise ConfigError(f"a master key must be {KEY_SIZE} bytes, not {len(key)}")
            self._keys.setdefault(_raw_key_id(key), AESGCM(key))
        self._current_id = _raw_key_id(ordered[0])
        self._current = self._keys[self._current_id]
        # The root of derive(): a one-way function of the current key, not the key itself.
        self._derive_root = hashlib.sha256(b"b24gate-derive" + ordered[0]).digest()

    def __repr__(self) -> str:
        return f"<Cipher current key {self.current_key_id}>"

    @property
    def current_key_id(self) -> str:
        return self._current_id.hex()

    def derive(self, purpose: bytes) -> bytes:
        """A 32-byte key for ``purpose`` (e.g. signing the admin page's sessions), derived
        from the current master key: the same in every replica, useless for anything else."""
        return hmac.new(self._derive_root, purpose, hashlib.sha256).digest()

    def encrypt(self, plaintext: str, *, table: str, row: str, column: str) -> bytes:
        nonce = os.urandom(_NONCE_SIZE)
        sealed = self._current.encrypt(
            nonce, plaintext.encode(), _associated_data(table, row, column)
        )
        return _FORMAT + self._current_id + nonce + sealed

    def decrypt(self, blob: bytes, *, table: str, row: str, column: str) -> str:
        # Every failure reads the same: a foreign key, a blob moved to another row and a
        # damaged blob all mean that this store cannot be trusted with this key.
        blob = bytes(blob)
        if len(blob) < _HEADER_SIZE + _TAG_SIZE or blob[:1] != _FORMAT:
            raise ConfigError(KEY_MISMATCH)
        aead = self._keys.get(blob[1 : 1 + _KEY_ID_SIZE])
        if aead is None and table != "meta":
            # Most likely the master key was rotated while this process ran (it holds the
            # old key): say so in the log, where an administrator looks, not to the caller.
            # (The key check in `meta` is read at start-up, whose refusal says it already.)
            _log.error(
                "a value of %s.%s is sealed with master key %s, which this process does not "
                "hold (its key is %s): if the master key was rotated, restart with the new key",
                table,
                column,
                blob[1 : 1 + _KEY_ID_SIZE].hex(),
                self.current_key_id,
            )
        if aead is None:
            raise ConfigError(KEY_MISMATCH)
        nonce = blob[1 + _KEY_ID_SIZE : _HEADER_SIZE]
        try:
            plaintext = aead.decrypt(
                nonce, blob[_HEADER_SIZE:], _associated_data(table, row, column)
            )
        except InvalidTag:
            raise ConfigError(KEY_MISMATCH) from None
        return plaintext.decode()


def _associated_data(table: str, row: str, column: str) -> bytes:
    return f"{table}\x00{row}\x00{column}".encode()
