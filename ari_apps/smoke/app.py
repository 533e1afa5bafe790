"""Builds the smoke app (nothing to configure)."""

from __future__ import annotations

from contextlib import AsyncExitStack

from ari_apps.machine import StasisAppSpec
from ari_apps.smoke.machine import SMOKE_APP, SmokeCall
from softswitch.settings import Settings


async def build(settings: Settings, resources: AsyncExitStack) -> StasisAppSpec[SmokeCall]:
    return SMOKE_APP
