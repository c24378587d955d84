"""`b24gate doctor`'s checks (``b24gate.core.diagnose``) as an admin page would run them: each
finding appears while its condition holds and is gone once the fix it names is applied;
an unreachable database or Redis is a finding, never an exception.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.exc import OperationalError

from b24gate.core import (
    Finding,
    add_client,
    add_portal,
    diagnose,
    exit_code,
    new_client,
    oauth_portal,
    revoke_client,
)
from b24gate.settings import Settings, load_settings
from b24gate.store import Cipher, Grant, Store, database_url, load_master_key
from b24gate.testing import free_port
from tests.store.conftest import PG_URL, _reset_postgres

DAY = 24 * 3600.0
STRONG_TOKEN = "q7Vd0mXr2Lk9sPz4Wb8Yc1Nf6Hj3Tg5Ue0Ia7Ro2Eh="
REDIS_URL = os.environ.get("B24GATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Deployment:
    """A data directory with its key and SQLite database, as `b24gate db upgrade` leaves it."""

    data_dir: Path
    store: Store

    def settings(self, **overrides: Any) -> Settings:
        values = {"admin_token": STRONG_TOKEN, **overrides}
        return load_settings(data_dir=self.data_dir, **values)

    async def run(self, **overrides: Any) -> list[Finding]:
        tls = overrides.pop("tls_certs", ())
        return await diagnose(self.settings(**overrides), tls_certs=tls)


def by_code(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("B24GATE_") and not name.startswith("B24GATE_TEST_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    data_dir = tmp_path / "var"
    key = load_master_key(data_dir, None, None)  # creates the directory 0700, the key 0600
    async with await Store.open(database_url(data_dir, None), Cipher(key)) as store:
        yield Deployment(data_dir, store)


async def test_a_clean_deployment_has_no_finding(deployment: Deployment) -> None:
    portal = await add_portal(
        deployment.store,
        oauth_portal("main", "https://main.bitrix24.ru", "local.1", "app-secret-Zq8vW3x"),
    )
    await deployment.store.save_grant(portal, _grant(refreshed_days_ago=3))
    await add_client(
        deployment.store, new_client("1c", ["main"], methods=["crm.*"], ips=["10.0.0.0/24"])
    )
    findings = await deployment.run(
        public_url="https://gw.example.com", trusted_proxies=["10.0.0.10/32"]
    )
    assert findings == []
    assert exit_code(findings) == 0


async def test_file_modes_and_key_age(deployment: Deployment) -> None:
    key = deployment.data_dir / "master.key"
    key.chmod(0o644)
    deployment.data_dir.chmod(0o755)
    db_file = deployment.data_dir / "b24gate.db"
    db_file.chmod(0o644)
    findings = await deployment.run()
    [db_mode] = by_code(findings, "database_file_mode")
    assert db_mode.severity == "medium"
    assert db_mode.fix.startswith(f"chmod 600 {db_file} ")
    [key_mode] = by_code(findings, "key_file_mode")
    assert key_mode.severity == "high"
    assert key_mode.fix == f"chmod 600 {key}"
    [dir_mode] = by_code(findings, "data_dir_mode")
    assert (dir_mode.severity, dir_mode.fix) == ("medium", f"chmod 700 {deployment.data_dir}")
    # With the key refused, portals and clients cannot be read: said, not skipped silently.
    assert by_code(findings, "store_unreadable")
    assert exit_code(findings) == 1

    key.chmod(0o600)
    deployment.data_dir.chmod(0o700)
    db_file.chmod(0o600)
    assert await deployment.run() == []

    key.rename(key.with_suffix(".bak"))
    [missing] = await deployment.run()
    assert (missing.code, missing.severity) == ("master_key_missing", "high")
    assert not key.exists()  # doctor generates nothing
    key.with_suffix(".bak").rename(key)

    year_ago = time.time() - 400 * DAY
    os.utime(key, (year_ago, year_ago))
    [age] = await deployment.run()
    assert (age.code, age.severity, age.fix) == ("key_age", "low", "b24gate key rotate")
    assert "400 days" in age.detail


@pytest.mark.parametrize(
    ("token", "code", "severity"),
    [
        (None, "admin_token_missing", "info"),
        ("hunter2", "admin_token_weak", "high"),
        ("a" * 64, "admin_token_weak", "high"),
        ("passwordpasswordpasswordpassword", "admin_token_weak", "high"),
    ],
)
async def test_an_admin_token_missing_or_guessable(
    deployment: Deployment, token: str | None, code: str, severity: str
) -> None:
    [finding] = await deployment.run(admin_token=token)
    assert (finding.code, finding.severity) == (code, severity)
    assert token is None or token not in str(finding)


async def test_public_url_and_trusted_proxies(deployment: Deployment) -> None:
    [plain] = await deployment.run(public_url="http://gw.example.com")
    assert (plain.code, plain.severity) == ("public_url_not_https", "high")
    assert await deployment.run(public_url="http://127.0.0.1:8080") == []

    wide = ["0.0.0.0/0", "::/0", "8.0.0.0/8"]
    narrow = ["10.0.0.0/8", "203.0.113.7/32", "2001:db8::/64"]
    findings = await deployment.run(trusted_proxies=wide + narrow)
    assert {(f.code, f.severity) for f in findings} == {("trusted_proxies_wide", "high")}
    flagged = [n for n in wide + narrow if any(f.detail.startswith(f"{n}:") for f in findings)]
    assert flagged == wide


def _grant(refreshed_days_ago: float) -> Grant:
    now = time.time()
    return Grant(
        access_token="at-Zq8vW3xK",
        refresh_token="rt-Zq8vW3xK",
        access_expires_at=now + 3600,
        refresh_obtained_at=now - refreshed_days_ago * DAY,
    )


@pytest.mark.parametrize(
    ("days_ago", "expected"),
    [
        (170, ("refresh_token_dying", "high", "b24gate call main app.info")),
        (160, ("refresh_token_dying", "medium", "b24gate call main app.info")),
        (200, ("refresh_token_dead", "high", "b24gate portal authorize main")),
        (100, None),
    ],
)
async def test_a_refresh_token_near_its_death(
    deployment: Deployment, days_ago: float, expected: tuple[str, str, str] | None
) -> None:
    portal = await add_portal(
        deployment.store,
        oauth_portal("main", "https://main.bitrix24.ru", "local.1", "app-secret-Zq8vW3x"),
    )
    await deployment.store.save_grant(portal, _grant(days_ago))
    findings = await deployment.run()
    assert [(f.code, f.severity, f.fix) for f in findings] == ([expected] if expected else [])

    # The fix: a refresh (here written as the gateway's refresh would) makes it go away.
    await deployment.store.save_grant(portal, _grant(0))
    assert await deployment.run() == []


async def test_a_portal_that_needs_authorization(deployment: Deployment) -> None:
    portal = await add_portal(
        deployment.store,
        oauth_portal("main", "https://main.bitrix24.ru", "local.1", "app-secret-Zq8vW3x"),
    )
    [never] = await deployment.run()
    assert (never.code, never.severity) == ("portal_not_connected", "info")

    await deployment.store.save_grant(portal, _grant(1))
    await deployment.store.mark_portal("main", "needs_authorization", "invalid_grant")
    [lost] = await deployment.run()
    assert (lost.code, lost.severity) == ("portal_needs_authorization", "high")
    assert lost.fix == "b24gate portal authorize main"
    assert "invalid_grant" in lost.detail

    await deployment.store.save_grant(portal, _grant(0))
    assert await deployment.run() == []


async def test_client_keys_allowed_too_much(deployment: Deployment) -> None:
    store = deployment.store
    portal = await add_portal(
        store, oauth_portal("main", "https://main.bitrix24.ru", "local.1", "app-secret-Zq8vW3x")
    )
    await store.save_grant(portal, _grant(0))
    await add_client(store, new_client("any", ["main"]))
    await add_client(store, new_client("star", ["main"], methods=["*"], ips=["10.0.0.1"]))
    await add_client(
        store,
        new_client("url", ["main"], methods=["crm.*"], ips=["10.0.0.1"], allow_url_key=True),
    )
    await add_client(store, new_client("tight", ["main"], methods=["crm.*"], ips=["10.0.0.1"]))
    found = {(f.code, f.severity, f.detail.split(":")[0]) for f in await deployment.run()}
    assert found == {
        ("client_wildcard_methods", "medium", "any"),
        ("client_no_ip_rule", "low", "any"),
        ("client_wildcard_methods", "medium", "star"),
        ("client_url_key", "medium", "url"),
    }

    for name in ("any", "star", "url"):
        await revoke_client(store, name)
    assert await deployment.run() == []


def self_signed(path: Path, days: float) -> Path:
    """A certificate for 127.0.0.1 that expires ``days`` from now, and its key next to it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.mark.parametrize(("days", "severity"), [(3, "high"), (20, "medium"), (90, None)])
async def test_a_tls_certificate_near_expiry(
    deployment: Deployment, tmp_path: Path, days: float, severity: str | None
) -> None:
    cert = self_signed(tmp_path / "cert.pem", days)
    findings = await deployment.run(tls_certs=[cert])
    assert [(f.code, f.severity) for f in findings] == (
        [("tls_certificate_expiring", severity)] if severity else []
    )


@asynccontextmanager
async def tls_server(cert: Path) -> AsyncIterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, cert.with_suffix(".key"))

    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    port = free_port()
    server = await asyncio.start_server(answer, "127.0.0.1", port, ssl=context)
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


async def test_check_url_reads_the_served_certificate(
    deployment: Deployment, tmp_path: Path
) -> None:
    cert = self_signed(tmp_path / "cert.pem", 3)
    async with tls_server(cert) as port:
        settings = deployment.settings(public_url=f"https://127.0.0.1:{port}")
        findings = await diagnose(settings, check_url=True)
    assert [(f.code, f.severity) for f in findings] == [
        ("tls_certificate_expiring", "high"),
        ("tls_certificate_untrusted", "high"),
    ]
    closed = deployment.settings(public_url=f"https://127.0.0.1:{free_port()}")
    [down] = await diagnose(closed, check_url=True)
    assert down.code == "public_url_unreachable"


async def test_a_public_url_gone_between_its_two_looks_is_a_finding_not_a_traceback(
    deployment: Deployment, tmp_path: Path
) -> None:
    # The first connection (verified, refused as untrusted) reaches the TLS server; the
    # second (unverified, to read the expiry) is hung up on, as by a host going down.
    cert = self_signed(tmp_path / "cert.pem", 3)
    seen = 0

    async def first_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        seen += 1
        if seen > 1:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", tls_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async with tls_server(cert) as tls_port:
        port = free_port()
        relay = await asyncio.start_server(first_only, "127.0.0.1", port)
        try:
            settings = deployment.settings(public_url=f"https://127.0.0.1:{port}")
            findings = await diagnose(settings, check_url=True)
        finally:
            relay.close()
            await relay.wait_closed()
    assert seen == 2
    assert [(f.code, f.severity) for f in findings] == [("tls_certificate_untrusted", "high")]


async def test_an_unreachable_database_or_redis_is_a_finding(deployment: Deployment) -> None:
    port = free_port()
    findings = await deployment.run(
        database_url=f"postgresql://b24gate:pg-Secret-Zq8@127.0.0.1:{port}/b24gate",
        redis_url=f"redis://:redis-Secret-Zq8@127.0.0.1:{port}/0",
    )
    assert {(f.code, f.severity) for f in findings} == {
        ("database_unreachable", "high"),
        ("redis_unreachable", "high"),
    }
    shown = " ".join(str(f) for f in findings)
    assert "pg-Secret-Zq8" not in shown
    assert "redis-Secret-Zq8" not in shown
    assert await deployment.run(redis_url=REDIS_URL) == []


async def test_a_database_failing_after_it_opened_is_a_finding(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(store: Store) -> list[Any]:
        raise OperationalError("SELECT", {}, OSError("server closed the connection"))

    monkeypatch.setattr("b24gate.core._doctor.list_portals", broken)
    findings = await deployment.run()
    assert [(f.code, f.severity) for f in findings] == [("store_unreadable", "high")]
    assert "OperationalError" in findings[0].detail


async def test_a_database_behind_the_code_until_upgraded(deployment: Deployment) -> None:
    failure = await _reset_postgres(PG_URL)
    assert failure is None, failure
    [behind] = await deployment.run(database_url=PG_URL)
    assert (behind.code, behind.severity, behind.fix) == (
        "database_migration_behind",
        "high",
        "b24gate db upgrade",
    )
    # What `b24gate db upgrade` does: open the store, which migrates it.
    key = load_master_key(deployment.data_dir, None, None)
    await (await Store.open(PG_URL, Cipher(key))).close()
    assert await deployment.run(database_url=PG_URL) == []
