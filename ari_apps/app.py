"""Composition root of `softswitch ari`: the selected apps, their services, the event writer
and the runtime, built from one settings object."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AsyncExitStack

from ari_apps.registry import AppBuilder
from ari_apps.runtime import AriRuntime
from softswitch.events.writer import OutboxWriter
from softswitch.settings import Settings


async def run_ari_apps(
    settings: Settings, builders: Sequence[AppBuilder], stop: asyncio.Event
) -> None:
    """Serve the apps until ``stop``; events the calls emitted are flushed before returning."""
    writer = OutboxWriter(settings.database)
    writer_stop = asyncio.Event()
    writing = asyncio.create_task(writer.run(writer_stop))
    try:
        async with AsyncExitStack() as resources:
            specs = [await build(settings, resources) for build in builders]
            await AriRuntime(settings.ari, specs, events=writer).run(stop)
    finally:
        writer_stop.set()
        await writing
