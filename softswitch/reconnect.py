"""Staying connected: how every long-running client outlives its server going away.

A service's session (connect, then work until the connection drops) is wrapped here; on a
connection failure it is started again after an exponential backoff, until ``stop``. Domain
code never retries by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("softswitch.reconnect")


def backoff_delay(attempt: int, *, minimum: float, maximum: float) -> float:
    """Exponential backoff: minimum, 2x, 4x, ... capped at maximum."""
    return float(min(maximum, minimum * 2 ** min(attempt, 30)))


async def keep_connected(
    session: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
    *,
    what: str,
    failures: tuple[type[BaseException], ...],
    on_failure: Callable[[BaseException], None] | None = None,
    minimum: float = 0.2,
    maximum: float = 5.0,
) -> None:
    """Run ``session`` until ``stop``; after a failure, again after a backoff.

    A session that returns normally (its server closed the connection cleanly) is started
    again at once; the backoff only grows while attempts keep failing.
    """
    attempt = 0
    while not stop.is_set():
        try:
            await session(stop)
            attempt = 0
        except failures as exc:
            if on_failure is not None:
                on_failure(exc)
            delay = backoff_delay(attempt, minimum=minimum, maximum=maximum)
            attempt += 1
            log.warning(
                "%s interrupted (%s: %s); retry in %.1fs",
                what, type(exc).__name__, str(exc).strip(), delay,
            )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
