"""Settings from ``B24GATE_*`` variables, an optional TOML file and ``*_FILE`` secrets.

Built once at the entry point and passed down. Secrets are ``SecretStr``: neither
``repr()`` nor ``str()`` of a settings object shows them.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ConfigError

DEFAULT_BODY_LIMIT = 8 * 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="B24GATE_", extra="forbid")

    data_dir: Path = Path("./var")
    database_url: str | None = None
    master_key: SecretStr | None = None
    master_key_file: Path | None = None
    public_url: str = "http://127.0.0.1:8080"
    admin_token: SecretStr | None = None
    redis_url: str | None = None
    body_limit: int = Field(DEFAULT_BODY_LIMIT, gt=0)
    # Refresh when the access token has less than this left (lazy refresh, never a timer).
    refresh_skew: float = Field(60.0, ge=0)
    # A quiet portal whose refresh token is older than this is refreshed once in the background.
    keepalive_days: float = Field(14.0, gt=0)
    upstream_connect_timeout: float = Field(5.0, gt=0)
    upstream_timeout: float = Field(60.0, gt=0)
    oauth_timeout: float = Field(20.0, gt=0)
    refresh_attempts: int = Field(3, ge=1, le=10)
    # NoDecode: a comma-separated list in the environment, not only a JSON array.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    # The per-portal queue: a call that would wait longer gets 429 with Retry-After.
    queue_max_wait: float = Field(60.0, gt=0)
    queue_limit: int = Field(10_000, ge=1)
    # Methods never packed into an automatic batch (comma-separated).
    not_batched: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Idempotency-Key: how long a stored answer is replayed, and how long a second request
    # with the key of one still running waits for it before it gets 409.
    idempotency_ttl: float = Field(24 * 3600.0, gt=0)
    idempotency_wait: float = Field(10.0, ge=0)
    # Jobs: how long a replica's hold on the commands it works on lasts without renewal (a
    # replica that died leaves them to the others after this), how long a finished job and
    # its results are kept, and how long after a write was sent (or, in the process that
    # sent it, its request failed) the external-id lookup may settle it: above our own
    # upstream_timeout, so that a request still running at Bitrix24 is not missed.
    job_lease: float = Field(30.0, gt=0)
    job_retention: float = Field(7 * 24 * 3600.0, gt=0)
    job_settle_after: float = Field(120.0, ge=0)
    # The largest body POST /api/v1/jobs reads (up to 50,000 commands).
    job_body_limit: int = Field(64 * 1024 * 1024, gt=0)
    # Events: how often the offline queues are drained when no ONOFFLINEEVENT wakes the
    # gateway, and how long the event log keeps an event (docs/events.md).
    event_poll: float = Field(60.0, gt=0)
    # At most one drain of a portal's offline queue this often: two requests of its budget.
    event_drain_interval: float = Field(10.0, gt=0)
    event_retention: float = Field(7 * 24 * 3600.0, gt=0)

    @field_validator("trusted_proxies", "not_batched", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @property
    def master_key_path(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment over the TOML file (``--config`` or ``B24GATE_CONFIG``).

    ``B24GATE_ADMIN_TOKEN_FILE`` (``admin_token_file`` in TOML) names a file holding the
    admin token; ``B24GATE_MASTER_KEY_FILE`` names a file holding the master key (without
    either key setting, ``<data dir>/master.key`` is generated on first start).
    """
    values: dict[str, Any] = {}
    env_config = os.environ.get("B24GATE_CONFIG")
    path = config_file or (Path(env_config) if env_config else None)
    if path is not None:
        try:
            values.update(tomllib.loads(path.read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read the config file {path}: {exc}") from None
    # The environment wins over the file.
    values = {k: v for k, v in values.items() if f"B24GATE_{k.upper()}" not in os.environ}
    token_file = os.environ.get("B24GATE_ADMIN_TOKEN_FILE") or values.pop("admin_token_file", None)
    if token_file and "B24GATE_ADMIN_TOKEN" not in os.environ:
        try:
            values["admin_token"] = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the admin token file {token_file}: {exc.strerror}"
            ) from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from None
