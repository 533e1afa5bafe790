"""Structured logs: one JSON object per line, carrying the call's identifiers as context.

Code inside a call binds its SIP Call-ID and ARI channel id once with :func:`call_context`;
every record logged in that task (and tasks it spawns) then carries them, so one grep on a
Call-ID shows the whole call across services.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from softswitch.settings import LogSettings

_call_fields: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar(
    "softswitch_call_fields",
    default={},  # noqa: B039 - never mutated, only replaced
)


@contextlib.contextmanager
def call_context(**fields: str | None) -> Iterator[None]:
    merged = {**_call_fields.get(), **{k: v for k, v in fields.items() if v}}
    token = _call_fields.set(merged)
    try:
        yield
    finally:
        _call_fields.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_call_fields.get(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = {**_call_fields.get(), **getattr(record, "fields", {})}
        suffix = " ".join(f"{k}={v}" for k, v in context.items())
        return f"{super().format(record)} {suffix}".rstrip()


def configure(settings: LogSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if settings.json_format
        else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    # aioari logs every URL, and ARI credentials travel in the URL (api_key=...).
    for noisy in ("aioari", "aioswagger11", "aiohttp.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def event(logger: logging.Logger, message: str, **fields: Any) -> None:
    """Log one INFO record with structured fields (kept as JSON keys, not text)."""
    logger.info(message, extra={"fields": fields})
