"""`softswitch stack up | down | status`: the whole local stack, idempotently.

``up`` generates the stack's credentials once (kept in ``<state_dir>/stack.env``, mode 0600,
read by every softswitch process), makes sure PostgreSQL and RabbitMQ answer, migrates the
database, builds the chroot when missing, renders the configs and starts Asterisk and
Kamailio. A service whose rendered config or command line changed is restarted.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from softswitch import db
from softswitch.settings import Settings, load_settings, stack_env_file, url_host_port
from softswitch.stack import chroot, host, services
from softswitch.stack.render import (
    ASTERISK_ETC_DIR,
    KAMAILIO_ETC_DIR,
    render_tree,
    template_values,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTED_FILE = "started.json"
HOST_TOOLS = ["sip-tester", "debootstrap", "procps", "iproute2"]


def generate_credentials(state_dir: Path) -> Path:
    """Write stack.env with fresh secrets unless it exists; returns its path."""
    path = stack_env_file(state_dir)
    if path.is_file():
        return path
    state_dir.mkdir(parents=True, exist_ok=True)
    database_password = secrets.token_hex(16)
    lines = {
        "SOFTSWITCH_DATABASE_URL": f"postgresql://softswitch:{database_password}@127.0.0.1:5432/softswitch",
        "SOFTSWITCH_ARI_PASSWORD": secrets.token_hex(16),
        "SOFTSWITCH_AMI_PASSWORD": secrets.token_hex(16),
        "SOFTSWITCH_KAMAILIO_JSONRPC_TOKEN": secrets.token_hex(24),
        "SOFTSWITCH_ASTERISK_PEER_TOKEN": secrets.token_hex(16),
    }
    path.touch(mode=0o600)
    path.write_text("".join(f"{key}={value}\n" for key, value in lines.items()))
    return path


@dataclass(frozen=True)
class PartStatus:
    name: str
    up: bool
    detail: str


def _started(state_dir: Path) -> set[str]:
    path = state_dir / STARTED_FILE
    return set(json.loads(path.read_text())) if path.is_file() else set()


def _remember_started(state_dir: Path, name: str) -> None:
    started = _started(state_dir) | {name}
    (state_dir / STARTED_FILE).write_text(json.dumps(sorted(started)))


def up_host(settings: Settings) -> Settings:
    """Credentials, host tools, PostgreSQL, RabbitMQ and a migrated database.

    Returns the settings reloaded with the stack's credentials.
    """
    state_dir = settings.stack.state_dir
    generate_credentials(state_dir)
    settings = load_settings()
    host.ensure_packages(HOST_TOOLS)

    pg_host, pg_port = url_host_port(settings.database.url, 5432)
    if host.ensure_postgresql(pg_host, pg_port):
        _remember_started(state_dir, "postgresql")
    amqp_host, amqp_port = url_host_port(settings.amqp.url.get_secret_value(), 5672)
    if host.ensure_rabbitmq(amqp_host, amqp_port):
        _remember_started(state_dir, "rabbitmq")
    host.ensure_database(settings.database.url)
    db.upgrade(settings.database)
    return settings


def up(settings: Settings) -> Settings:
    """Bring every part up; returns the settings with the stack's credentials loaded."""
    settings = up_host(settings)
    state_dir = settings.stack.state_dir
    chroot.ensure_chroot(settings.stack)
    host.ensure_kernel_limit(host.RMEM_MAX, settings.kamailio.udp_receive_buffer_bytes)
    values = template_values(settings)
    root = settings.stack.chroot_dir
    for service, source, target in (
        (services.ASTERISK, "asterisk_cfg", ASTERISK_ETC_DIR),
        (services.KAMAILIO, "kamailio_cfg", KAMAILIO_ETC_DIR),
    ):
        changed = render_tree(REPO_ROOT / source, root / target.lstrip("/"), values)
        if service is services.KAMAILIO:
            services.check_kamailio_config(root)
        pid = services.running_pid(service, state_dir)
        # Restarted when its config or its command line (say, Kamailio's allocator) changed.
        if pid is not None and (changed or services.running_command(pid) != service.command):
            services.stop(service, state_dir)
            pid = None
        if pid is None:
            services.start(service, root, state_dir)
        services.wait_ready(service, settings)
    return settings


def down(settings: Settings) -> list[str]:
    """Stop what `up` started, newest first; returns what was stopped."""
    state_dir = settings.stack.state_dir
    stopped = [
        service.name
        for service in (services.KAMAILIO, services.ASTERISK)
        if services.stop(service, state_dir)
    ]
    started = _started(state_dir)
    if "rabbitmq" in started:
        host.stop_rabbitmq()
        stopped.append("rabbitmq")
    if "postgresql" in started:
        host.stop_postgresql()
        stopped.append("postgresql")
    (state_dir / STARTED_FILE).unlink(missing_ok=True)
    return stopped


def status(settings: Settings) -> list[PartStatus]:
    state_dir = settings.stack.state_dir
    pg_host, pg_port = url_host_port(settings.database.url, 5432)
    amqp_host, amqp_port = url_host_port(settings.amqp.url.get_secret_value(), 5672)
    versions = chroot.chroot_versions(settings.stack)
    parts = [
        PartStatus("postgresql", host.port_open(pg_host, pg_port), f"{pg_host}:{pg_port}"),
        PartStatus("rabbitmq", host.port_open(amqp_host, amqp_port), f"{amqp_host}:{amqp_port}"),
        PartStatus(
            "chroot",
            chroot.chroot_ready(settings.stack),
            f"{settings.stack.chroot_dir} asterisk {versions.get('asterisk', '?')}"
            f" kamailio {versions.get('kamailio', '?')}",
        ),
    ]
    for service, ready, endpoint in (
        (services.ASTERISK, services.asterisk_ready, f"ARI {settings.ari.url}"),
        (
            services.KAMAILIO,
            services.kamailio_ready,
            f"SIP {settings.kamailio.sip_ip}:{settings.kamailio.sip_port}",
        ),
    ):
        pid = services.running_pid(service, state_dir)
        is_up = pid is not None and ready(settings)
        parts.append(PartStatus(service.name, is_up, f"pid {pid} {endpoint}" if pid else "stopped"))
    return parts
