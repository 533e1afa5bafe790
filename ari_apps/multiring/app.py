"""Builds the multiring app from settings: directory (CRM with PostgreSQL fallback), push."""

from __future__ import annotations

from contextlib import AsyncExitStack

import httpx

from ari_apps.machine import StasisAppSpec
from ari_apps.multiring.machine import APP, MultiringCall, MultiringMachine
from ari_apps.multiring.models import MultiringPolicy
from ari_apps.multiring.stasis import MultiringServices
from softswitch.directory.crm import open_directory
from softswitch.directory.models import FlatDevice
from softswitch.directory.push import PushGateway
from softswitch.settings import Settings


def policy_from(settings: Settings) -> MultiringPolicy:
    fallback = settings.multiring.fallback
    return MultiringPolicy(
        ring_seconds=settings.multiring.ring_seconds,
        no_answer=settings.multiring.no_answer,
        fallback=FlatDevice(kind="forward", target=fallback) if fallback else None,
        sip_domain=settings.kamailio.sip_domain,
    )


async def build(settings: Settings, resources: AsyncExitStack) -> StasisAppSpec[MultiringCall]:
    config = settings.directory
    directory = await resources.enter_async_context(open_directory(config, settings.database.url))
    push = None
    if config.push_url:
        client = await resources.enter_async_context(httpx.AsyncClient())
        push = PushGateway(config.push_url, config.push_timeout_seconds, client)
        resources.push_async_callback(push.aclose)
    return StasisAppSpec(
        APP, MultiringMachine(policy_from(settings)), MultiringServices(directory, push)
    )
