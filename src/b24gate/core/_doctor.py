"""`b24gate doctor`: the audit a security reviewer would run over a deployment.

Each check is a function over the settings, a file, or what the store holds, and gives
:class:`Finding` values with a stable ``code``, a severity and the command or setting
that fixes it; :func:`diagnose` runs them all. The command line prints them and an admin
page could show the same. No finding ever holds a secret: not the admin token, not a key,
not a password in a database or Redis URL. docs/doctor.md lists every code.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import ssl
import stat
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from cryptography import x509
from sqlalchemy.exc import SQLAlchemyError

from ..bitrix import REFRESH_TOKEN_LIFETIME, is_loopback
from ..errors import B24GateError, ConfigError
from ..settings import Settings
from ..store import (
    Cipher,
    Client,
    Store,
    database_url,
    head_revision,
    load_master_key,
    make_engine,
    safe_url,
    schema_revision,
)
from ._admin import PortalStatus, list_clients, list_portals
from ._limiter import REDIS_TIMEOUT, RedisLimiter

Severity = Literal["high", "medium", "low", "info"]
# Most severe first: the order findings are shown in.
SEVERITIES: Final[tuple[Severity, ...]] = ("high", "medium", "low", "info")

DAY: Final = 24 * 3600.0
# Refresh tokens that die sooner than this are high findings, sooner than the second medium.
REFRESH_HIGH_DAYS: Final = 14
REFRESH_MEDIUM_DAYS: Final = 30
# Certificates that expire sooner than this are high findings, sooner than the second medium.
CERT_HIGH_DAYS: Final = 7
CERT_MEDIUM_DAYS: Final = 30
KEY_MAX_AGE_DAYS: Final = 365
# An admin token shorter than this, or with less entropy than its characters suggest
# (`openssl rand -base64 32` gives ~200 bits by this estimate), is guessable.
ADMIN_TOKEN_MIN_LENGTH: Final = 32
ADMIN_TOKEN_MIN_BITS: Final = 96
# Trusted proxy ranges of public addresses wider than these let much of the internet
# write X-Forwarded-For, and so pass a client key's IP rule.
WIDE_PREFIX: Final = {4: 16, 6: 48}
# How long the database and --check-url may take to answer.
DATABASE_TIMEOUT: Final = 10.0
CONNECT_TIMEOUT: Final = 10.0


@dataclass(frozen=True)
class Finding:
    """One thing to look at: ``code`` is stable for monitoring, ``fix`` the command or
    setting that makes the finding go away."""

    code: str
    severity: Severity
    title: str
    detail: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def ordered(findings: Iterable[Finding]) -> list[Finding]:
    """Most severe first, then by code and detail, so that two runs print alike."""
    return sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), f.code, f.detail))


def counts(findings: Iterable[Finding]) -> dict[Severity, int]:
    found = Counter(f.severity for f in findings)
    return {s: found[s] for s in SEVERITIES}


# -- files ----------------------------------------------------------------------------------


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def _open_to_others(
    path: Path, code: str, severity: Severity, title: str, why: str, fix: str
) -> list[Finding]:
    """A finding when group or others have any access to ``path``."""
    mode = _mode(path)
    if mode is None or not mode & 0o077:
        return []
    return [Finding(code, severity, title, f"{path} has mode {mode:04o}; {why}", fix)]


def file_findings(settings: Settings, now: float) -> list[Finding]:
    """Who may read the data directory, the master key file and the SQLite database, and
    how old the key is."""
    data_dir = settings.data_dir
    found = _open_to_others(
        data_dir,
        "data_dir_mode",
        "medium",
        "the data directory is open to group or others",
        "it holds the database and the master key",
        f"chmod 700 {data_dir}",
    )
    if settings.master_key is None:
        key_path = settings.master_key_path
        found += _open_to_others(
            key_path,
            "key_file_mode",
            "high",
            "the master key file is readable by group or others",
            "the gateway refuses to start with it",
            f"chmod 600 {key_path}",
        )
        if _mode(key_path) is not None:
            age = (now - key_path.stat().st_mtime) / DAY
            if age > KEY_MAX_AGE_DAYS:
                found.append(
                    Finding(
                        "key_age",
                        "low",
                        "the master key is more than a year old",
                        f"{key_path} was written {age:.0f} days ago",
                        "b24gate key rotate",
                    )
                )
    if not settings.database_url:
        db_file = Path(database_url(data_dir, None).removeprefix("sqlite:///"))
        found += _open_to_others(
            db_file,
            "database_file_mode",
            "medium",
            "the SQLite database is open to group or others",
            "its tokens are sealed, but names, addresses and key hashes are not",
            f"chmod 600 {db_file} {db_file}-wal {db_file}-shm",
        )
    return found


# -- settings -------------------------------------------------------------------------------


def entropy_bits(token: str) -> float:
    """Shannon's estimate of a token's entropy: its length times the bits per character
    its own character counts give (``aaaa…`` has none)."""
    total = len(token)
    per_char = -sum(n / total * math.log2(n / total) for n in Counter(token).values())
    return per_char * total


def admin_token_findings(settings: Settings) -> list[Finding]:
    fix = "B24GATE_ADMIN_TOKEN_FILE=FILE with `openssl rand -base64 32 > FILE; chmod 600 FILE`"
    if settings.admin_token is None:
        return [
            Finding(
                "admin_token_missing",
                "info",
                "no admin token: the admin page, /metrics and the connect flow without a "
                "ticket are off",
                "B24GATE_ADMIN_TOKEN and B24GATE_ADMIN_TOKEN_FILE are unset",
                fix,
            )
        ]
    token = settings.admin_token.get_secret_value()
    if len(token) < ADMIN_TOKEN_MIN_LENGTH or entropy_bits(token) < ADMIN_TOKEN_MIN_BITS:
        # The length is said; nothing else of the token is.
        return [
            Finding(
                "admin_token_weak",
                "high",
                "the admin token is short or guessable",
                f"it has {len(token)} characters and about {entropy_bits(token):.0f} bits of "
                f"entropy; use at least {ADMIN_TOKEN_MIN_LENGTH} random characters",
                fix,
            )
        ]
    return []


def public_url_findings(settings: Settings) -> list[Finding]:
    parts = urlsplit(settings.public_url)
    if parts.scheme == "https" or is_loopback(parts.hostname or ""):
        return []
    return [
        Finding(
            "public_url_not_https",
            "high",
            "the public URL is plain http",
            f"{parts.scheme}://{parts.netloc}: OAuth codes, connect tickets and the admin "
            "token cross the network in clear",
            "B24GATE_PUBLIC_URL=https://… (serve --tls-cert/--tls-key, or a TLS proxy)",
        )
    ]


def trusted_proxy_findings(settings: Settings) -> list[Finding]:
    found = []
    for item in settings.trusted_proxies:
        net = ipaddress.ip_network(item, strict=False)
        wide = net.prefixlen < WIDE_PREFIX[net.version]
        if net.prefixlen == 0 or (wide and not net.is_private):
            found.append(
                Finding(
                    "trusted_proxies_wide",
                    "high",
                    "a trusted proxy range holds much of the internet",
                    f"{item}: any caller in it can set X-Forwarded-For and pass a client "
                    "key's IP rule",
                    "B24GATE_TRUSTED_PROXIES=<your proxies' addresses, e.g. 10.0.0.10/32>",
                )
            )
    return found


def keepalive_findings(settings: Settings) -> list[Finding]:
    lifetime = REFRESH_TOKEN_LIFETIME / DAY
    if settings.keepalive_days < lifetime - REFRESH_MEDIUM_DAYS:
        return []
    return [
        Finding(
            "keepalive_too_long",
            "medium",
            "the keep-alive refresh comes too late for a quiet portal",
            f"B24GATE_KEEPALIVE_DAYS={settings.keepalive_days:g}; a refresh token dies after "
            f"{lifetime:.0f} days unused",
            "B24GATE_KEEPALIVE_DAYS=14",
        )
    ]


# -- what the store holds -------------------------------------------------------------------


def portal_findings(statuses: Iterable[PortalStatus], now: float) -> list[Finding]:
    """Portals that lost their grant, never got one, or will lose it soon."""
    found = []
    for status in statuses:
        portal, grant = status.portal, status.grant
        authorize = f"b24gate portal authorize {portal.name}"
        if portal.state == "needs_authorization":
            found.append(
                Finding(
                    "portal_needs_authorization",
                    "high",
                    "a portal lost its grant: every call to it fails",
                    f"{portal.name}: {portal.state_reason or 'refused by the OAuth server'}",
                    authorize,
                )
            )
        elif portal.state == "not_connected":
            found.append(
                Finding(
                    "portal_not_connected",
                    "info",
                    "a portal was registered but never connected",
                    portal.name,
                    authorize,
                )
            )
        elif portal.kind == "oauth" and grant is not None:
            left = (grant.refresh_obtained_at + REFRESH_TOKEN_LIFETIME - now) / DAY
            if left <= 0:
                found.append(
                    Finding(
                        "refresh_token_dead",
                        "high",
                        "a portal's refresh token has died unused",
                        f"{portal.name}: last refreshed "
                        f"{(now - grant.refresh_obtained_at) / DAY:.0f} days ago; a refresh "
                        f"token dies after {REFRESH_TOKEN_LIFETIME / DAY:.0f} days unused",
                        authorize,
                    )
                )
            elif left < REFRESH_MEDIUM_DAYS:
                found.append(
                    Finding(
                        "refresh_token_dying",
                        "high" if left < REFRESH_HIGH_DAYS else "medium",
                        "a portal's refresh token dies soon unless it is used",
                        f"{portal.name}: {left:.0f} days left; is a gateway running (its "
                        "keep-alive refreshes quiet portals)?",
                        f"b24gate call {portal.name} app.info",
                    )
                )
    return found


def client_findings(clients: Iterable[Client]) -> list[Finding]:
    """Active keys allowed more than they probably need."""
    found = []
    for client in clients:
        if client.revoked_at is not None:
            continue
        name = client.name
        reissue = (
            f"b24gate client revoke {name!r}, then b24gate client add {name!r} "
            "--portal P --methods 'crm.*' --ip CIDR"
        )
        if not client.methods or "*" in client.methods:
            found.append(
                Finding(
                    "client_wildcard_methods",
                    "medium",
                    "a client key may call every method",
                    f"{name}: methods {','.join(client.methods) or '(any)'}",
                    reissue,
                )
            )
        if not client.ips:
            found.append(
                Finding(
                    "client_no_ip_rule",
                    "low",
                    "a client key works from any address",
                    name,
                    reissue,
                )
            )
        if client.allow_url_key:
            found.append(
                Finding(
                    "client_url_key",
                    "medium",
                    "a client key is accepted in URLs, which land in access logs",
                    f"{name}: --allow-url-key (docs/drop-in.md)",
                    f"b24gate client revoke {name!r}, then add it again without --allow-url-key",
                )
            )
    return found


async def store_findings(settings: Settings, now: float) -> list[Finding]:
    """Whether the database answers and is at the newest migration, then what it holds.
    Nothing is written: a database that is behind is reported, not upgraded."""
    url = database_url(settings.data_dir, settings.database_url)
    shown = safe_url(url)
    upgrade = "b24gate db upgrade"
    sqlite_file = Path(url.removeprefix("sqlite:///"))
    if not settings.database_url and not await asyncio.to_thread(sqlite_file.exists):
        return [
            Finding(
                "database_migration_behind",
                "high",
                "there is no database yet",
                f"{shown} does not exist; the gateway creates it at start",
                upgrade,
            )
        ]
    head = head_revision()
    try:
        engine = make_engine(url)
    except ConfigError as exc:
        return [_unreachable(shown, exc.message)]
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT):
            current = await schema_revision(engine)
    except (SQLAlchemyError, OSError) as exc:  # TimeoutError is an OSError
        return [_unreachable(shown, _reason(exc))]
    finally:
        await engine.dispose()
    if current != head:
        return [
            Finding(
                "database_migration_behind",
                "high",
                "the database schema is not this version's",
                f"{shown} is at migration {current or '(none)'}, this b24gate at {head}",
                upgrade,
            )
        ]
    key_path = settings.master_key_path
    if settings.master_key is None and not await asyncio.to_thread(key_path.exists):
        # Not generated here: a new key cannot read this store, and doctor writes nothing.
        return [
            Finding(
                "master_key_missing",
                "high",
                "the store's master key is missing: its tokens and secrets cannot be read",
                f"{key_path} does not exist",
                "restore the key from its backup to that path (or B24GATE_MASTER_KEY_FILE)",
            )
        ]
    try:
        key = load_master_key(
            settings.data_dir,
            settings.master_key.get_secret_value() if settings.master_key else None,
            settings.master_key_file,
        )
        async with asyncio.timeout(DATABASE_TIMEOUT):
            store = await Store.open(url, Cipher(key))
    except (ConfigError, TimeoutError) as exc:
        reason = exc.message if isinstance(exc, ConfigError) else "timed out"
        return _store_unreadable(reason, "fix the findings above, or the master key setting")
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT):
            portals = await list_portals(store)
            clients = await list_clients(store)
    except (OSError, SQLAlchemyError, TimeoutError, B24GateError) as exc:
        # The database went away (or broke) between opening and reading: a finding too.
        return _store_unreadable(
            "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__,
            "check the database and run `b24gate doctor` again",
        )
    finally:
        await store.close()
    return portal_findings(portals, now) + client_findings(clients)


def _unreachable(shown: str, reason: str) -> Finding:
    return Finding(
        "database_unreachable",
        "high",
        "the database does not answer",
        f"{shown}: {reason}",
        "start the database, or correct B24GATE_DATABASE_URL",
    )


def _reason(exc: BaseException) -> str:
    # The driver's own error, never its chain; cut so one line stays one line.
    cause = getattr(exc, "orig", None) or exc
    text = " ".join(str(cause).split()) or type(cause).__name__
    return text[:200]


# -- Redis ----------------------------------------------------------------------------------


async def redis_findings(settings: Settings) -> list[Finding]:
    if not settings.redis_url:
        return []
    parts = urlsplit(settings.redis_url)
    where = f"{parts.hostname}:{parts.port or 6379}"
    limiter = RedisLimiter(settings.redis_url)
    try:
        async with asyncio.timeout(2 * REDIS_TIMEOUT):
            await limiter.ping()
    except Exception as exc:  # any failure of the shared budget is the finding itself
        return [
            Finding(
                "redis_unreachable",
                "high",
                "the shared request budget (Redis) does not answer",
                f"{where}: {type(exc).__name__}; each replica books from its own budget, so "
                "together they can exceed a portal's rate",
                "start Redis, or correct B24GATE_REDIS_URL",
            )
        ]
    finally:
        await limiter.close()
    return []


# -- TLS ------------------------------------------------------------------------------------


def certificate_findings(pem: bytes, source: str, now: float) -> list[Finding]:
    """The first certificate of a PEM chain (the server's own), by its expiry."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return [
            Finding(
                "tls_certificate_unreadable",
                "high",
                "a TLS certificate could not be read",
                f"{source} holds no PEM certificate",
                "serve --tls-cert with the PEM certificate chain",
            )
        ]
    return _expiry(cert.not_valid_after_utc, source, now)


def _expiry(expires: datetime, source: str, now: float) -> list[Finding]:
    left = (expires.timestamp() - now) / DAY
    if left >= CERT_MEDIUM_DAYS:
        return []
    when = "expired" if left <= 0 else f"expires in {left:.1f} days"
    return [
        Finding(
            "tls_certificate_expiring",
            "high" if left < CERT_HIGH_DAYS else "medium",
            "a TLS certificate expires soon" if left > 0 else "a TLS certificate has expired",
            f"{source}: {when} ({expires:%Y-%m-%d %H:%M} UTC)",
            "renew the certificate (e.g. `certbot renew`) and restart `b24gate serve`",
        )
    ]


def file_certificate_findings(path: Path, now: float) -> list[Finding]:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        return [
            Finding(
                "tls_certificate_unreadable",
                "high",
                "a TLS certificate could not be read",
                f"{path}: {exc.strerror}",
                "serve --tls-cert with the PEM certificate chain",
            )
        ]
    return certificate_findings(pem, str(path), now)


async def served_certificate_findings(settings: Settings, now: float) -> list[Finding]:
    """Connect to the public URL's host as a browser would: is its certificate trusted, and
    when does it expire?"""
    parts = urlsplit(settings.public_url)
    if parts.scheme != "https" or not parts.hostname:
        return []
    host, port = parts.hostname, parts.port or 443
    source = f"{host}:{port}"
    found = []
    try:
        der = await _peer_certificate(host, port, ssl.create_default_context())
    except ssl.SSLCertVerificationError as exc:
        found.append(
            Finding(
                "tls_certificate_untrusted",
                "high",
                "the public URL's certificate is not trusted",
                f"{source}: {exc.verify_message}",
                "serve a certificate chain from a public CA (e.g. Let's Encrypt)",
            )
        )
        unchecked = ssl.create_default_context()
        unchecked.check_hostname = False
        unchecked.verify_mode = ssl.CERT_NONE
        try:
            der = await _peer_certificate(host, port, unchecked)
        except (OSError, ssl.SSLError):  # gone since the first look: its expiry is unknown
            return found
    except (OSError, ssl.SSLError) as exc:
        return [
            Finding(
                "public_url_unreachable",
                "medium",
                "the public URL does not answer TLS",
                f"{source}: {type(exc).__name__}",
                "check the proxy or `b24gate serve --tls-cert/--tls-key`",
            )
        ]
    cert = x509.load_der_x509_certificate(der)
    return found + _expiry(cert.not_valid_after_utc, source, now)


async def _peer_certificate(host: str, port: int, context: ssl.SSLContext) -> bytes:
    async with asyncio.timeout(CONNECT_TIMEOUT):
        _, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    try:
        der: Any = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return bytes(der)
    finally:
        writer.close()


# -- all of it ------------------------------------------------------------------------------


async def diagnose(
    settings: Settings,
    *,
    tls_certs: Iterable[Path] = (),
    check_url: bool = False,
    now: float | None = None,
) -> list[Finding]:
    """Every check, most severe finding first. ``tls_certs``: the PEM files ``serve
    --tls-cert`` is given; ``check_url``: also connect to the public URL's host."""
    at = time.time() if now is None else now
    found = [
        *file_findings(settings, at),
        *admin_token_findings(settings),
        *public_url_findings(settings),
        *trusted_proxy_findings(settings),
        *keepalive_findings(settings),
    ]
    for path in tls_certs:
        found += file_certificate_findings(path, at)
    store, redis = await asyncio.gather(store_findings(settings, at), redis_findings(settings))
    found += store + redis
    if check_url:
        found += await served_certificate_findings(settings, at)
    return ordered(found)


def exit_code(findings: Iterable[Finding]) -> int:
    """1 when any finding is high, else 0: a monitor's signal."""
    return 1 if any(f.severity == "high" for f in findings) else 0


def _store_unreadable(reason: str, fix: str) -> list[Finding]:
    return [
        Finding(
            "store_unreadable",
            "high",
            "portals and clients could not be read, so they were not checked",
            reason,
            fix,
        )
    ]
