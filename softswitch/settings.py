"""The one settings object of every softswitch process.

Every value comes from an environment variable prefixed ``SOFTSWITCH_``
(``SOFTSWITCH_ARI_PASSWORD`` sets ``ari.password``), from ``.env`` in the working directory,
or from the credentials file ``softswitch stack up`` writes (``<state_dir>/stack.env``).
The environment wins over ``.env``, which wins over the stack file. Local defaults point at
127.0.0.1. In production mode secrets have no usable default and wide-open binds are refused.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STATE_DIR = Path("/var/lib/softswitch/stack")
STACK_ENV_FILE = "stack.env"


def normalize_postgres_url(url: str) -> str:
    """Accept the URL forms users write (postgres://, postgresql://, postgresql+psycopg://).

    Returns the plain libpq form ``postgresql://...`` that psycopg and psql understand.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+psycopg"}:
        raise ValueError(f"not a PostgreSQL URL (postgresql://user@host/db expected): {url!r}")
    return f"postgresql://{rest}"


class DatabaseSettings(BaseModel):
    url: str = "postgresql://softswitch@127.0.0.1:5432/softswitch"

    @field_validator("url")
    @classmethod
    def _normalize(cls, value: str) -> str:
        return normalize_postgres_url(value)


class AmqpSettings(BaseModel):
    url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    exchange: str = "softswitch.events"


class AriSettings(BaseModel):
    url: str = "http://127.0.0.1:8088/"
    user: str = "softswitch"
    password: SecretStr | None = None
    apps: list[str] = Field(default_factory=lambda: ["smoke"])
    reconnect_min_seconds: float = Field(default=0.5, gt=0)
    reconnect_max_seconds: float = Field(default=10.0, gt=0)


class AmiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=5038, ge=1, le=65535)
    user: str = "softswitch"
    password: SecretStr | None = None


class KamailioSettings(BaseModel):
    jsonrpc_url: str = "http://127.0.0.1:5065/RPC"
    jsonrpc_token: SecretStr | None = None
    sip_ip: str = "127.0.0.1"
    sip_port: int = Field(default=5060, ge=1, le=65535)
    sip_domain: str = "127.0.0.1"


class AsteriskSettings(BaseModel):
    sip_port: int = Field(default=5080, ge=1, le=65535)
    peer_token: SecretStr | None = None
    rtp_start: int = Field(default=10000, ge=1024, le=65535)
    rtp_end: int = Field(default=10999, ge=1024, le=65535)


class RoutingSettings(BaseModel):
    """The routing service Kamailio asks for every new call."""

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=1, le=65535)
    # How long Kamailio waits for an answer before its fallback (503 or fallback_uri).
    kamailio_timeout_ms: int = Field(default=300, ge=10, le=10_000)
    fallback_uri: str = ""
    max_chain: int = Field(default=10, ge=1, le=100)
    reload_debounce_seconds: float = Field(default=0.05, ge=0, le=10)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/route"


class StackSettings(BaseModel):
    """Where the local stack (sid chroot with Asterisk and Kamailio) lives."""

    chroot_dir: Path = Path("/var/lib/softswitch/sid-chroot")
    state_dir: Path = DEFAULT_STATE_DIR
    debian_mirror: str = "http://deb.debian.org/debian"
    suite: str = "sid"


class LogSettings(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = True


class MetricsSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)  # 0: no /metrics listener


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SOFTSWITCH_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        env_file=".env",
        extra="ignore",
    )

    environment: Literal["development", "production"] = "development"
    database: DatabaseSettings = DatabaseSettings()
    amqp: AmqpSettings = AmqpSettings()
    ari: AriSettings = AriSettings()
    ami: AmiSettings = AmiSettings()
    kamailio: KamailioSettings = KamailioSettings()
    asterisk: AsteriskSettings = AsteriskSettings()
    routing: RoutingSettings = RoutingSettings()
    stack: StackSettings = StackSettings()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment != "production":
            return self
        problems = [
            f"{name} must be set in production"
            for name, secret in (
                ("SOFTSWITCH_ARI_PASSWORD", self.ari.password),
                ("SOFTSWITCH_AMI_PASSWORD", self.ami.password),
                ("SOFTSWITCH_KAMAILIO_JSONRPC_TOKEN", self.kamailio.jsonrpc_token),
            )
            if secret is None or len(secret.get_secret_value()) < 12
        ]
        if "guest:guest@" in self.amqp.url.get_secret_value():
            problems.append("SOFTSWITCH_AMQP_URL must not use the guest account in production")
        if not _is_loopback_or_private(self.metrics.host):
            problems.append("SOFTSWITCH_METRICS_HOST must be loopback or private in production")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _is_loopback_or_private(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    return address.is_loopback or (address.is_private and not address.is_unspecified)


def stack_env_file(state_dir: Path | None = None) -> Path:
    """The credentials file the local stack writes; readable before Settings exist."""
    directory = state_dir or Path(os.environ.get("SOFTSWITCH_STACK_STATE_DIR", DEFAULT_STATE_DIR))
    return directory / STACK_ENV_FILE


def load_settings() -> Settings:
    """Build Settings from the environment, ``.env`` and the local stack's credentials."""
    env_files = (stack_env_file(), Path(".env"))
    return Settings(_env_file=tuple(str(path) for path in env_files if path.is_file()))  # type: ignore[call-arg]


def url_host_port(url: str, default_port: int) -> tuple[str, int]:
    """Host and port of a URL, for readiness probes."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port
