"""Where a call app asks who lives behind a door: PostgreSQL, the CRM, or the CRM first with
PostgreSQL as its fallback (``open_directory`` picks by settings).

The CRM contract (``HttpCrmDirectory``)::

    GET {crm_url}/panels/{panel_account}/flats/{dialled}     (both segments URL-encoded)
    Accept: application/json

    200 {"panel": {"panel_id": "p-17", "account": "door-17", "building": "lenina-5",
                   "address": "Lenina 5, entrance 2",
                   "flat_first": 41, "flat_last": 80, "flat_offset": 40},
         "flat": {"building": "lenina-5", "number": "52",
                  "devices": [{"kind": "sip", "target": "1052", "label": "Hall"},
                              {"kind": "mobile", "target": "app-52-anna", "label": "Anna"},
                              {"kind": "forward", "target": "+79161234567", "label": ""}]}}
    404 the CRM knows no panel with that account (the body is ignored)

In a 200, ``flat`` is null (or left out) when the panel is known but the keypad entry rings
no flat; ``address``, ``flat_first``, ``flat_last``, ``flat_offset``, ``devices`` and
``label`` may be left out (defaults "", 1, 9999, 0, [], ""). Devices ring in list order.
Everything else counts as the CRM failing and the call is answered from PostgreSQL: no answer
within ``crm_timeout_seconds`` (connection included), another status, a body that is not
exactly this JSON (unknown keys included), a panel other than the one asked for, a flat of
another building, a device target PostgreSQL would refuse (sip and mobile: an account name
without @domain; forward: a sip:/sips: URI or digits with an optional leading +).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol
from urllib.parse import quote

import httpx
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, ValidationError

from softswitch.db import KeptConnection
from softswitch.directory import store
from softswitch.directory.models import Flat, FlatLookup, Panel
from softswitch.settings import DirectorySettings

log = logging.getLogger("softswitch.directory")

LOOKUP_SECONDS = Histogram(
    "softswitch_directory_lookup_seconds",
    "Flat lookups, failed ones included, by where they were asked",
    ["source"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5),
)
FALLBACKS = Counter(
    "softswitch_directory_fallbacks_total",
    "Lookups answered by the fallback because the primary (the CRM) failed",
    ["reason"],
)
for _reason in ("timeout", "error", "garbage"):
    FALLBACKS.labels(_reason)  # exported as 0 from the start, so rate() sees the first one


class DirectoryError(Exception):
    """A directory could not answer (unreachable, or an HTTP status outside the contract)."""


class DirectoryGarbage(DirectoryError):
    """A directory answered something that breaks its contract."""


class Directory(Protocol):
    async def lookup_flat(self, panel_account: str, dialled: str) -> FlatLookup:
        """Who ``panel_account`` dialling ``dialled`` rings; raises when it cannot tell."""
        ...


class DatabaseDirectory:
    """Lookups in PostgreSQL on one kept-open connection (see ``KeptConnection``)."""

    def __init__(self, conninfo: str, *, connect_timeout_seconds: int = 3) -> None:
        self._db = KeptConnection(
            conninfo, connect_timeout_seconds=connect_timeout_seconds, what="directory database"
        )

    async def __aenter__(self) -> DatabaseDirectory:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._db.aclose()

    async def lookup_flat(self, panel_account: str, dialled: str) -> FlatLookup:
        with LOOKUP_SECONDS.labels("database").time():
            return await self._db.run(lambda conn: store.lookup_flat(conn, panel_account, dialled))


class CrmAnswer(BaseModel):
    """The body of the CRM's 200 answer (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    panel: Panel
    flat: Flat | None = None


def parse_crm_answer(status: int, body: bytes, panel_account: str) -> FlatLookup:
    """The CRM's answer to "who does ``panel_account`` ring", checked against the contract.

    Raises DirectoryGarbage for a body that breaks it, DirectoryError for another status.
    """
    if status == 404:
        return FlatLookup(panel=None, flat=None, source="crm")
    if status != 200:
        raise DirectoryError(f"CRM answered HTTP {status}")
    try:
        answer = CrmAnswer.model_validate_json(body)
    except ValidationError as exc:
        raise DirectoryGarbage(
            "CRM answer breaks the contract: " + "; ".join(store.describe_validation_error(exc))
        ) from None
    problems = [f"panel.{why}" for why in store.panel_problems(answer.panel)]
    if answer.panel.account != panel_account:
        problems.append(f"panel.account: {answer.panel.account!r} is not the panel asked for")
    if answer.flat is not None:
        problems += [f"flat.{why}" for why in store.flat_problems(answer.flat)]
        if answer.flat.building != answer.panel.building:
            problems.append(f"flat.building: {answer.flat.building!r} is not the panel's")
    if problems:
        raise DirectoryGarbage("CRM answer breaks the contract: " + "; ".join(problems))
    return FlatLookup(panel=answer.panel, flat=answer.flat, source="crm")


class HttpCrmDirectory:
    """The CRM over HTTP (contract in the module docstring); the client is the caller's."""

    def __init__(self, base_url: str, timeout_seconds: float, client: httpx.AsyncClient) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout_seconds
        self._client = client

    async def lookup_flat(self, panel_account: str, dialled: str) -> FlatLookup:
        panel, keypad = quote(panel_account, safe=""), quote(dialled, safe="")
        url = f"{self._base_url}/panels/{panel}/flats/{keypad}"
        with LOOKUP_SECONDS.labels("crm").time():
            try:
                # httpx's timeout bounds each phase (connect, write, read) on its own; the
                # door call waits for one budget in all.
                async with asyncio.timeout(self._timeout):
                    response = await self._client.get(
                        url, timeout=self._timeout, headers={"Accept": "application/json"}
                    )
            except httpx.TimeoutException as exc:
                raise TimeoutError(f"CRM did not answer within {self._timeout}s") from exc
            except httpx.HTTPError as exc:
                raise DirectoryError(f"CRM unreachable: {type(exc).__name__}: {exc}") from exc
            return parse_crm_answer(response.status_code, response.content, panel_account)


def _fallback_reason(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, DirectoryGarbage):
        return "garbage"
    return "error"


class FallbackDirectory:
    """``primary`` (the CRM) answers; when it times out, fails or answers garbage, ``fallback``
    (PostgreSQL) does, so a CRM outage never leaves a door call unanswered."""

    def __init__(self, primary: Directory, fallback: Directory) -> None:
        self._primary = primary
        self._fallback = fallback

    async def lookup_flat(self, panel_account: str, dialled: str) -> FlatLookup:
        try:
            return await self._primary.lookup_flat(panel_account, dialled)
        except Exception as exc:  # whatever broke, the fallback may still answer the call
            reason = _fallback_reason(exc)
            FALLBACKS.labels(reason).inc()
            log.warning(
                "directory lookup falls back (%s): %s: %s",
                reason, type(exc).__name__, exc,
                extra={"fields": {"panel_account": panel_account, "dialled": dialled}},
            )  # fmt: skip
        return await self._fallback.lookup_flat(panel_account, dialled)


@asynccontextmanager
async def open_directory(
    settings: DirectorySettings, database_url: str
) -> AsyncIterator[Directory]:
    """The directory call apps ask: the CRM with PostgreSQL as fallback when ``crm_url`` is
    set, PostgreSQL alone otherwise."""
    async with DatabaseDirectory(database_url) as database:
        if settings.crm_url is None:
            yield database
            return
        async with httpx.AsyncClient() as client:
            yield FallbackDirectory(
                HttpCrmDirectory(settings.crm_url, settings.crm_timeout_seconds, client), database
            )
