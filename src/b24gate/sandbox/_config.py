"""The sandbox's settings: one immutable value object built by the CLI or a test."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

DEFAULT_RATE = 2.0
DEFAULT_BURST = 50
DEFAULT_ACCESS_TTL = 3600
DEFAULT_REFRESH_TTL = 180 * 24 * 3600
CODE_TTL = 30
DEFAULT_CLIENT_ID = "local.sandbox"
DEFAULT_SCOPE = ("crm", "catalog", "user")
PAGE_SIZE = 50
BATCH_LIMIT = 50
# Bitrix24 blocks a method whose summed operating time passes its limit within 10 minutes;
# the limit is the portal's configuration, 480 s being the docs' example.
DEFAULT_OPERATING_LIMIT = 480.0
OPERATING_WINDOW = 600.0
# A cloud portal cuts one REST request (a batch included) off at 60 s since August 2026.
DEFAULT_REQUEST_TIME_LIMIT = 60.0


def new_secret(length: int = 32) -> str:
    """A token in the shape of Bitrix24's: lowercase letters and digits."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass(frozen=True)
class SandboxConfig:
    host: str = "127.0.0.1"
    port: int = 0
    rate: float = DEFAULT_RATE
    burst: int = DEFAULT_BURST
    access_ttl: int = DEFAULT_ACCESS_TTL
    refresh_ttl: int = DEFAULT_REFRESH_TTL
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = field(default_factory=lambda: new_secret(50), repr=False)
    redirect_uri: str | None = None
    scope: tuple[str, ...] = DEFAULT_SCOPE
    auto_approve: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    require_https: bool = False
    seed_deals: int = 0
    member_id: str = field(default_factory=lambda: secrets.token_hex(16))
    operating_limit: float = DEFAULT_OPERATING_LIMIT
    method_costs: tuple[tuple[str, float], ...] = ()
    # Seconds of server work a slow portal adds (docs/sandbox.md, "Latency"); 0 = off.
    latency_request: float = 0.0
    latency_command: float = 0.0
    latency_page: float = 0.0
    # 0 = no cap.
    request_time_limit: float = DEFAULT_REQUEST_TIME_LIMIT

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"
