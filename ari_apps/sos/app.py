"""Builds the emergency-call app from settings."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from contextlib import AsyncExitStack

import psycopg

from ari_apps.machine import CallControl, StasisAppSpec
from ari_apps.sos.machine import APP, EmergencyCall, EmergencyCallMachine
from ari_apps.sos.models import SosPolicy
from ari_apps.sos.stasis import SosServices
from softswitch.db import KeptConnection
from softswitch.settings import Settings
from softswitch.sos.store import refresh_pool_gauges

log = logging.getLogger("softswitch.sos")

POOL_GAUGE_SECONDS = 15.0


async def build(settings: Settings, resources: AsyncExitStack) -> StasisAppSpec[EmergencyCall]:
    database = await resources.enter_async_context(
        KeptConnection(
            settings.database.url,
            connections=settings.sos.database_connections,
            what="112 pool database",
        )
    )
    policy = SosPolicy(
        fallback_gateway_uri=settings.sos.fallback_gateway_uri,
        emergency_number=settings.sos.emergency_number,
    )
    return StasisAppSpec(
        APP,
        EmergencyCallMachine(policy),
        SosServices(database, fallback_number=settings.sos.fallback_number),
        functools.partial(refresh_pool_metrics, database),
    )


async def refresh_pool_metrics(
    database: KeptConnection, _: CallControl, stop: asyncio.Event
) -> None:
    """Pool usage per city as gauges (free/reserved/leased/blocked), every few seconds:
    reservations expire by time alone, so no lease or release event would tell."""
    while not stop.is_set():
        try:
            await database.run(refresh_pool_gauges)
        except psycopg.Error as exc:
            log.warning("cannot refresh 112 pool gauges: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POOL_GAUGE_SECONDS)
