"""Builds the panel-call app from settings."""

from __future__ import annotations

from contextlib import AsyncExitStack

from ari_apps.machine import StasisAppSpec
from ari_apps.panel.machine import APP, PanelCall, PanelCallMachine
from ari_apps.panel.models import PanelCallPolicy
from ari_apps.panel.stasis import PanelServices
from softswitch.kamailio_rpc import KamailioRpc
from softswitch.settings import Settings


async def build(settings: Settings, resources: AsyncExitStack) -> StasisAppSpec[PanelCall]:
    kamailio = await resources.enter_async_context(KamailioRpc(settings.kamailio))
    policy = PanelCallPolicy(
        wait_seconds=settings.panel.wait_seconds,
        retry_seconds=settings.panel.retry_seconds,
        ring_seconds=settings.panel.ring_seconds,
        sip_domain=settings.kamailio.sip_domain,
    )
    return StasisAppSpec(APP, PanelCallMachine(policy), PanelServices(kamailio))
