"""Rendering of kamailio_cfg/ and asterisk_cfg/ into the chroot.

Files ending in ``.tmpl`` have ``@@KEY@@`` placeholders (Asterisk and Kamailio both use
``${...}`` themselves, so the usual template syntaxes would collide). A placeholder without a
value is an error, never an empty string in a live config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from softswitch.settings import Settings, url_host_port

_PLACEHOLDER = re.compile(r"@@([A-Z0-9_]+)@@")
TEMPLATE_SUFFIX = ".tmpl"

# Paths inside the chroot.
KAMAILIO_ETC_DIR = "/etc/softswitch/kamailio"
ASTERISK_ETC_DIR = "/etc/softswitch/asterisk"


class TemplateError(ValueError):
    pass


def render_template(text: str, values: Mapping[str, str], *, source: str) -> str:
    missing = sorted({key for key in _PLACEHOLDER.findall(text) if key not in values})
    if missing:
        raise TemplateError(f"{source}: no value for {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def render_tree(source_dir: Path, target_dir: Path, values: Mapping[str, str]) -> bool:
    """Render every file of ``source_dir`` into ``target_dir``; True when any file changed."""
    target_dir.mkdir(parents=True, exist_ok=True)
    changed = False
    for source in sorted(p for p in source_dir.iterdir() if p.is_file()):
        text = source.read_text()
        name = source.name
        if name.endswith(TEMPLATE_SUFFIX):
            text = render_template(text, values, source=str(source))
            name = name.removesuffix(TEMPLATE_SUFFIX)
        target = target_dir / name
        if not target.is_file() or target.read_text() != text:
            target.write_text(text)
            target.chmod(0o640)
            changed = True
    return changed


def _secret(value: object) -> str:
    getter = getattr(value, "get_secret_value", None)
    if getter is None:
        raise TemplateError("a stack secret is missing: run `softswitch stack up` to generate it")
    return str(getter())


def kamailio_db_url(database_url: str) -> str:
    """Kamailio's db_postgres wants ``postgres://`` and an explicit port."""
    rest = database_url.split("://", 1)[1]
    authority, _, path = rest.partition("/")
    if ":" not in authority.rpartition("@")[2]:
        authority += ":5432"
    return f"postgres://{authority}/{path.split('?', 1)[0]}"


def template_values(settings: Settings) -> dict[str, str]:
    """Every placeholder value, from the one settings object."""
    _, ari_port = url_host_port(settings.ari.url, 8088)
    _, jsonrpc_port = url_host_port(settings.kamailio.jsonrpc_url, 5065)
    return {
        "SIP_IP": settings.kamailio.sip_ip,
        "SIP_PORT": str(settings.kamailio.sip_port),
        "SIP_DOMAIN": settings.kamailio.sip_domain,
        "JSONRPC_PORT": str(jsonrpc_port),
        "JSONRPC_TOKEN": _secret(settings.kamailio.jsonrpc_token),
        "KAMAILIO_DB_URL": kamailio_db_url(settings.database.url),
        "ASTERISK_SIP_PORT": str(settings.asterisk.sip_port),
        "ASTERISK_PEER_TOKEN": _secret(settings.asterisk.peer_token),
        "ARI_PORT": str(ari_port),
        "ARI_USER": settings.ari.user,
        "ARI_PASSWORD": _secret(settings.ari.password),
        "AMI_PORT": str(settings.ami.port),
        "AMI_USER": settings.ami.user,
        "AMI_PASSWORD": _secret(settings.ami.password),
        "ASTERISK_ETC_DIR": ASTERISK_ETC_DIR,
        "ASTERISK_RUN_DIR": "/var/run/asterisk",
        "ASTERISK_LOG_DIR": "/var/log/asterisk",
        "ASTERISK_SPOOL_DIR": "/var/spool/asterisk",
        "ASTERISK_LIB_DIR": "/var/lib/asterisk",
        "ASTERISK_RTP_START": str(settings.asterisk.rtp_start),
        "ASTERISK_RTP_END": str(settings.asterisk.rtp_end),
        "ROUTING_URL": settings.routing.url,
        "ROUTING_TIMEOUT_MS": str(settings.routing.kamailio_timeout_ms),
        "ROUTING_FALLBACK_URI": settings.routing.fallback_uri,
        "DEFAULT_STASIS_APP": settings.ari.apps[0] if settings.ari.apps else "smoke",
        "FLOOD_REQUESTS": str(settings.kamailio.flood_requests),
        "FLOOD_BAN_SECONDS": str(settings.kamailio.flood_ban_seconds),
        "UDP_RECEIVE_BUFFER": str(settings.kamailio.udp_receive_buffer_bytes),
        "TRUSTED_SOURCES_DEFINE": (
            f'#!define TRUSTED_SOURCES "{settings.kamailio.trusted_sources}"'
            if settings.kamailio.trusted_sources
            else "# (none)"
        ),
    }
