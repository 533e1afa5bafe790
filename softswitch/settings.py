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
import re
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
    apps: list[str] = Field(default_factory=lambda: ["smoke", "multiring", "panel", "sos", "acd"])
    reconnect_min_seconds: float = Field(default=0.5, gt=0)
    reconnect_max_seconds: float = Field(default=10.0, gt=0)
    # How often the runtime checks its calls' channels against Asterisk's (lost events).
    audit_seconds: float = Field(default=60.0, gt=0)


class AmiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=5038, ge=1, le=65535)
    user: str = "softswitch"
    password: SecretStr | None = None


class KamailioSettings(BaseModel):
    jsonrpc_url: str = "http://127.0.0.1:5065/RPC"
    jsonrpc_token: SecretStr | None = None
    # Per JSON-RPC call (connect + answer): Kamailio answers in about a millisecond, and
    # callers on a call path (is this panel busy?) must not wait long for a dead one.
    jsonrpc_timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    sip_ip: str = "127.0.0.1"
    sip_port: int = Field(default=5060, ge=1, le=65535)
    sip_domain: str = "127.0.0.1"
    # Sources trusted by address, comma-separated networks: SBCs, gateways, panel VLANs.
    # Their accounts' calls need no digest auth, they are not flood-limited, and their calls
    # may be relayed outside our domain. Loopback by default: processes on Kamailio's own
    # host (Asterisk, load generators, the dev stack's sipp devices) are the host's peers.
    trusted_sources: str = "127.0.0.1/32"
    # Anti-flood: more requests than this from one untrusted source in 2 s bans it.
    flood_requests: int = Field(default=50, ge=2, le=1_000_000)
    flood_ban_seconds: int = Field(default=60, ge=1, le=86_400)
    # Kamailio's UDP receive buffer (core `maxbuffer`); `stack up` raises the kernel's cap
    # net.core.rmem_max to it. 256 KB, Kamailio's default, holds ~25 ms of SIP at 2,500
    # calls/s: one scheduling hiccup of the SIP workers then drops datagrams (README,
    # "End to end").
    udp_receive_buffer_bytes: int = Field(default=4 * 1024 * 1024, ge=65_536, le=256 * 1024 * 1024)

    @field_validator("trusted_sources")
    @classmethod
    def _networks(cls, value: str) -> str:
        """Normalised ``a/n,b/m``; refuses anything that is not a network."""
        networks = [part.strip() for part in value.split(",") if part.strip()]
        try:
            return ",".join(str(ipaddress.ip_network(n, strict=False)) for n in networks)
        except ValueError as exc:
            raise ValueError(f"trusted_sources: {exc}") from None

    @property
    def local_hosts(self) -> frozenset[str]:
        """Hosts of SIP URIs that stay with us (no open-relay check for them)."""
        return frozenset({self.sip_domain.lower(), self.sip_ip.lower()})


class AsteriskSettings(BaseModel):
    sip_port: int = Field(default=5080, ge=1, le=65535)
    peer_token: SecretStr | None = None
    rtp_start: int = Field(default=10000, ge=1024, le=65535)
    # Two ports per channel: a 10-leg intercom call holds 22 while it rings.
    rtp_end: int = Field(default=19999, ge=1024, le=65535)


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


class DirectorySettings(BaseModel):
    """The flat directory of intercom calls: CRM first when set (PostgreSQL answers when it
    is slow or down), and the push gateway that wakes mobile apps."""

    crm_url: str | None = None
    # Part of the caller's wait at the door: past it the call is answered from PostgreSQL.
    crm_timeout_seconds: float = Field(default=0.3, gt=0, le=10)
    push_url: str | None = None
    push_timeout_seconds: float = Field(default=2.0, gt=0, le=30)

    @field_validator("crm_url", "push_url")
    @classmethod
    def _http_url_or_none(cls, value: str | None) -> str | None:
        if not value:  # an empty variable switches the CRM or pushes off
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value


class MultiringSettings(BaseModel):
    """Intercom calls to a flat (Stasis app ``multiring``)."""

    ring_seconds: float = Field(default=30.0, gt=0, le=300)
    # After the ring time: hang up, or ring the fallback (a concierge, a voice mailbox).
    no_answer: Literal["hangup", "fallback"] = "hangup"
    fallback: str | None = Field(
        default=None, description="SIP URI or account rung when nobody in the flat answers"
    )

    @model_validator(mode="after")
    def _fallback_named(self) -> MultiringSettings:
        if self.no_answer == "fallback" and not self.fallback:
            raise ValueError("no_answer=fallback needs SOFTSWITCH_MULTIRING_FALLBACK")
        return self


class PanelSettings(BaseModel):
    """Calls towards an intercom panel (Stasis app ``panel``): one at a time per panel."""

    wait_seconds: float = Field(default=30.0, ge=0, le=600)
    retry_seconds: float = Field(default=2.0, gt=0, le=60)
    ring_seconds: float = Field(default=45.0, gt=0, le=300)


class SosSettings(BaseModel):
    """The 112 pool of door intercoms (cities and numbers live in PostgreSQL)."""

    # Caller ID of a 112 call from a panel without a city (or an account that is no panel);
    # None: such a call keeps the panel's own caller ID.
    fallback_number: str | None = None
    # Callback window of cities that `softswitch sos import` reads without reservation_minutes.
    reservation_minutes: int = Field(default=60, ge=1, le=1440)
    # Where a 112 call goes when the panel has no city (or the pool database is unreachable):
    # an emergency call is never dropped for a configuration gap.
    fallback_gateway_uri: str | None = None
    emergency_number: str = Field(default="112", pattern=r"^[0-9]{2,6}$")
    # Database connections of the sos app: a city-wide emergency brings many 112 calls at once,
    # and on one connection each lease waits for the ones before it (bench/sos_lease.py).
    database_connections: int = Field(default=4, ge=1, le=32)

    @field_validator("fallback_number")
    @classmethod
    def _e164_or_none(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not re.fullmatch(r"\+[1-9][0-9]{6,14}", value):
            raise ValueError(f"not an E.164 number (+79131234567): {value!r}")
        return value


class AcdSettings(BaseModel):
    """ACD queues (Stasis app ``acd``): queues and agents live in PostgreSQL."""

    # The supervisor API of the process running the app; 0: no listener.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8091, ge=0, le=65535)
    # How often the phones of logged-in agents are checked for calls that did not come from
    # a queue (Kamailio's dialogs), so such agents are not offered calls.
    phone_check_seconds: float = Field(default=2.0, gt=0, le=300)
    # Caller ID a callback shows to the caller (the queue's public number); empty: none.
    callback_caller_id: str = ""
    callback_ring_seconds: float = Field(default=45.0, gt=0, le=300)


class AdminSettings(BaseModel):
    """The admin HTTP API (`softswitch admin serve`): every endpoint but /health needs a token."""

    host: str = "127.0.0.1"
    port: int = Field(default=8092, ge=1, le=65535)
    # Failed authentications one client address may make in a minute before it gets 429.
    auth_failures_per_minute: int = Field(default=10, ge=1, le=10_000)


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
    directory: DirectorySettings = DirectorySettings()
    multiring: MultiringSettings = MultiringSettings()
    panel: PanelSettings = PanelSettings()
    sos: SosSettings = SosSettings()
    acd: AcdSettings = AcdSettings()
    admin: AdminSettings = AdminSettings()
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
        if not _is_loopback_or_private(self.admin.host):
            # Tokens travel in plain HTTP: a public listener needs a TLS proxy in front.
            problems.append("SOFTSWITCH_ADMIN_HOST must be loopback or private in production")
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
