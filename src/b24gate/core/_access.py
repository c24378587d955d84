"""Client keys and what each client may do: portals, methods (also inside ``batch``), addresses."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Protocol

from ..bitrix import parse_batch, valid_method
from ..errors import InvalidBatch, InvalidMethod, IpForbidden, MethodForbidden, Unauthorized
from ..store import Client

KEY_PREFIX = "b24_"
_KEY = re.compile(r"^b24_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewKey:
    """A freshly made client key: shown once, only ``key_hash`` is stored."""

    key: str
    key_id: str
    key_hash: str


def hash_key(key: str) -> str:
    # The key carries 256 bits of entropy, so a plain SHA-256 cannot be brute-forced.
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> NewKey:
    key_id = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return NewKey(key, key_id, hash_key(key))


# A client key, or what is left of one cut short, in text a caller chose: `GET /rest/<key>`
# (a webhook URL without its user id) makes the key the path's last segment, the method.
_KEY_TEXT = re.compile(r"(b24_[0-9a-f]{12}_)[A-Za-z0-9_-]+")


def mask_keys(text: str) -> str:
    """``text`` with every client key in it cut to ``b24_<key id>_***`` (the id tells which
    key it was), for a log line or a record."""
    return _KEY_TEXT.sub(r"\1***", text)


def holds_key(text: str) -> bool:
    """``text`` holds something shaped like a client key."""
    return _KEY_TEXT.search(text) is not None


def key_id_of(key: str) -> str | None:
    match = _KEY.match(key)
    return match.group(1) if match else None


def key_matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key), stored_hash)


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case, as
    RFC 9110 has it), or None when the header is missing or of another scheme. The one
    place the header is read: for client keys and the admin token alike."""
    scheme, _, value = (header or "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def method_allowed(patterns: Sequence[str], method: str) -> bool:
    """Patterns like ``crm.*`` match case-insensitively, as Bitrix24 method names do."""
    if not patterns:
        return True
    name = method.lower()
    return any(fnmatchcase(name, p.lower()) for p in patterns)


def admit(patterns: Sequence[str], method: str, params: Mapping[str, Any]) -> Mapping[str, Any]:
    """The parameters to forward for ``method``, once the key may call it.

    ``batch`` itself is only a carrier: what counts is every command inside it, read as
    Bitrix24 reads them (:func:`~b24gate.bitrix.parse_batch`; 400 ``invalid_batch`` when
    that reading is in doubt), and what goes on is the batch rebuilt from what was checked.
    A name Bitrix24 would run as another method (``batch.json`` runs ``batch``) is
    refused (400 ``invalid_method``, :func:`~b24gate.bitrix.valid_method`).
    """
    if not valid_method(method):
        raise InvalidMethod(f"{method[:80]!r} is not a Bitrix24 method name")
    if method.lower() != "batch":
        if not method_allowed(patterns, method):
            raise MethodForbidden(f"this key may not call {method}")
        return params
    try:
        batch = parse_batch(params)
    except InvalidBatch as exc:
        exc.message = mask_keys(exc.message)  # it quotes the command: a key stays out
        raise
    for name in batch.methods:
        if holds_key(name):
            raise InvalidMethod("a client key is not a Bitrix24 method name")
        if not method_allowed(patterns, name):
            raise MethodForbidden(f"this key may not call {name}")
    return batch.params()


def check_address(cidrs: Sequence[str], address: str | None) -> None:
    if not cidrs:
        return
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        raise IpForbidden("the caller's address is not allowed") from None
    if not any(ip in ipaddress.ip_network(c, strict=False) for c in cidrs):
        raise IpForbidden(f"address {ip} is not allowed for this key")


# Characters kept of a source that is not an IP address.
_MAX_SOURCE = 64


def address_bucket(source: str) -> str:
    """What a per-address budget counts ``source`` as: an IPv4 address (also one mapped
    into IPv6), or an IPv6 address's /64, which one host (or one customer of a provider)
    usually holds whole and may take any address of."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        # Not an address: a hop a trusted proxy forwarded as it was written (nginx's
        # "unknown", an obfuscated name). Its own bucket, of bounded size: it is a key in
        # memory and a value in a log line.
        return source[:_MAX_SOURCE]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def peer_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[str]
) -> str | None:
    """The caller's address: ``X-Forwarded-For`` counts only when the peer is a trusted proxy.

    ``forwarded_for`` is every ``X-Forwarded-For`` line of the request, in order: RFC 9110
    §5.3 makes several lines of a list header one list, joined with commas, so a line the
    client sent and the line its proxy appended are read together. The list is walked from
    the right, skipping trusted proxies: the first address not trusted is the one a trusted
    proxy saw, and whatever the client wrote further left cannot win.
    """
    if not forwarded_for or not trusted or peer is None:
        return peer
    networks = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def is_trusted(value: str) -> bool:
        try:
            return any(ipaddress.ip_address(value) in n for n in networks)
        except ValueError:
            return False

    if not is_trusted(peer):
        return peer
    hops = [h.strip() for h in ",".join(forwarded_for).split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            return hop
    # Every hop is a trusted proxy: the leftmost one is where the request entered.
    return hops[0] if hops else peer


class ClientLookup(Protocol):
    async def client_by_key_id(self, key_id: str) -> Client | None: ...


async def authenticate(store: ClientLookup, key: str | None) -> Client:
    """The client of ``key`` (from :func:`bearer`, or wherever the surface found it);
    revocation counts at once."""
    if not key:
        raise Unauthorized("no client key: send `Authorization: Bearer <key>`")
    key_id = key_id_of(key)
    client = await store.client_by_key_id(key_id) if key_id else None
    if client is None or client.revoked_at is not None or not key_matches(key, client.key_hash):
        raise Unauthorized("unknown or revoked client key")
    return client
