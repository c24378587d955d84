"""The admin page's sign-in: a signed session cookie, the forms' CSRF check, and the limit
on failed sign-ins.

The session is a signed cookie, so any replica can check it: ``<issued at>.<nonce>.<signature>``,
signed with HMAC-SHA256 under a key derived from the master key *and* the admin token
(changing the token signs everyone out), valid :data:`SESSION_TTL`. A form's CSRF token is
an HMAC of the session under the same key; a POST must carry it and come from the gateway's
own origin (``public_url``). Signing out removes the cookie from the browser, and the store
remembers the session (:meth:`Sessions.name`, not the cookie) as signed out until it would
have expired, so a copy taken before is refused on every replica (``_admin_page.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

from ..core import address_bucket

SESSION_TTL: Final = 8 * 3600.0
# A session issued "in the future" by a replica whose clock is ahead is still accepted.
CLOCK_SKEW: Final = 60.0
# Failed sign-ins an address may make in SIGN_IN_WINDOW, and how many addresses are kept.
SIGN_IN_FAILURES: Final = 5
SIGN_IN_WINDOW: Final = 60.0
SIGN_IN_ADDRESSES: Final = 10_000
_PURPOSE: Final = b"b24gate admin page sessions"


def cookie_name(public_url: str) -> str:
    """``__Host-`` (Secure, the whole host, path /) when the gateway is served over https."""
    return "__Host-b24gate_admin" if public_url.startswith("https://") else "b24gate_admin"


class Sessions:
    """Issues and checks session cookies and their CSRF tokens."""

    def __init__(
        self,
        master_derived: bytes,
        admin_token: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``master_derived``: a key the store derived from the master key for this use."""
        token_digest = hashlib.sha256(admin_token.encode()).digest()
        self._key = hmac.new(master_derived, _PURPOSE + b"\0" + token_digest, "sha256").digest()
        self._clock = clock

    def _mac(self, what: str) -> str:
        return hmac.new(self._key, what.encode(), "sha256").hexdigest()

    def issue(self) -> str:
        body = f"{int(self._clock())}.{secrets.token_hex(16)}"
        return f"{body}.{self._mac('session:' + body)}"

    def valid(self, cookie: str | None) -> bool:
        """The cookie is one this gateway signed, under the current admin token, and young."""
        if not cookie or len(cookie) > 200:
            return False
        body, _, mac = cookie.rpartition(".")
        issued, _, nonce = body.partition(".")
        if not issued.isdigit() or not nonce:
            return False
        if not _same(mac, self._mac("session:" + body)):
            return False
        age = self._clock() - int(issued)
        return -CLOCK_SKEW <= age <= SESSION_TTL

    def name(self, cookie: str) -> str:
        """What the store remembers of a signed-out session: not the cookie itself."""
        return hashlib.sha256(cookie.encode()).hexdigest()[:32]

    def expires_at(self, cookie: str) -> float:
        """When a :meth:`valid` cookie stops being one (Unix time)."""
        return int(cookie.partition(".")[0]) + SESSION_TTL

    def csrf(self, cookie: str) -> str:
        return self._mac("csrf:" + cookie)

    def csrf_valid(self, cookie: str, given: str | None) -> bool:
        return given is not None and _same(given, self.csrf(cookie))


def _same(given: str, expected: str) -> bool:
    """In constant time, as bytes: ``hmac.compare_digest`` raises on a str holding anything
    but ASCII, which a cookie or a form may (a 500 and a traceback, for anyone)."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def same_origin(public_url: str, origin: str | None, referer: str | None) -> bool:
    """A POST came from the gateway's own pages: its ``Origin`` (else its ``Referer``) is
    ``public_url``'s origin. Neither, or ``Origin: null``, is refused."""
    ours = _origin(public_url)
    if ours is None:
        return False
    if origin is not None:
        return _origin(origin) == ours
    if referer is not None:
        return _origin(referer) == ours
    return False


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int] | None:
    """Scheme, host and port as a browser's ``Origin`` names them: lower case, the host in
    its ASCII (IDNA) form, the scheme's default port filled in. None for anything else
    (``null``, a user name, no host)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        return None
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return scheme, host.lower(), port if port is not None else _DEFAULT_PORTS[scheme]


class SignInLimit:
    """At most :data:`SIGN_IN_FAILURES` wrong admin tokens a minute per address, in this
    process (each replica counts its own), on every route that takes the token: the
    sign-in form, ``/metrics`` and ``/oauth/start?portal=`` (one instance on ``app.state``);
    the oldest addresses are forgotten first."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str) -> float:
        """0 when ``address`` may try now, else the seconds until it may."""
        failures = self._failures.get(address_bucket(address))
        if failures is None:
            return 0.0
        now = self._clock()
        while failures and failures[0] <= now - SIGN_IN_WINDOW:
            failures.popleft()
        if len(failures) < SIGN_IN_FAILURES:
            return 0.0
        return max(1.0, failures[0] + SIGN_IN_WINDOW - now)

    def failed(self, address: str) -> None:
        bucket = address_bucket(address)
        failures = self._failures.pop(bucket, None) or deque(maxlen=SIGN_IN_FAILURES)
        failures.append(self._clock())
        self._failures[bucket] = failures
        while len(self._failures) > SIGN_IN_ADDRESSES:
            self._failures.popitem(last=False)
