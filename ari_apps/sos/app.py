"""Builds the emergency-call app from settings."""

from __future__ import annotations

from contextlib import AsyncExitStack

from ari_apps.machine import StasisAppSpec
from ari_apps.sos.machine import APP, EmergencyCall, EmergencyCallMachine
from ari_apps.sos.models import SosPolicy
from ari_apps.sos.stasis import SosServices
from softswitch.db import KeptConnection
from softswitch.settings import Settings


async def build(settings: Settings, resources: AsyncExitStack) -> StasisAppSpec[EmergencyCall]:
    database = await resources.enter_async_context(
        KeptConnection(settings.database.url, what="112 pool database")
    )
    policy = SosPolicy(
        fallback_gateway_uri=settings.sos.fallback_gateway_uri,
        emergency_number=settings.sos.emergency_number,
    )
    return StasisAppSpec(
        APP,
        EmergencyCallMachine(policy),
        SosServices(database, fallback_number=settings.sos.fallback_number),
    )
