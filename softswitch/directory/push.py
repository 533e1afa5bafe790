"""Waking mobile apps for a door call: requests to the push gateway, off the call's path.

The gateway contract::

    POST {push_url}
    Content-Type: application/json

    {"account": "app-52-anna", "call_id": "c-8f2e", "panel_id": "p-17",
     "flat": {"building": "lenina-5", "number": "52"}, "caller_name": "Lenina 5, entrance 2",
     "ring_seconds": 30.0, "requested_at": "2026-11-22T10:15:00Z"}

Any 2xx means accepted. Nothing is retried: the flat rings for seconds, and a push that
arrives after the door call is over wakes a phone for nothing. For the same reason
``cancel(call_id)`` drops the pushes of an ended call that are still waiting for a free slot.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx
from prometheus_client import Counter
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

log = logging.getLogger("softswitch.directory")

PUSH_REQUESTS = Counter(
    "softswitch_push_requests_total",
    "Push requests by outcome: sent (2xx), rejected (other status), timeout, error"
    " (gateway unreachable), cancelled (call over before it was sent, or shutdown)",
    ["outcome"],
)
for _outcome in ("sent", "rejected", "timeout", "error", "cancelled"):
    PUSH_REQUESTS.labels(_outcome)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PushFlat(_Frozen):
    building: str = Field(min_length=1)
    number: str = Field(min_length=1)


class PushRequest(_Frozen):
    """Someone is at the door of the app's flat: the JSON body the gateway receives."""

    account: str = Field(min_length=1, description="Mobile-app account to wake")
    call_id: str = Field(min_length=1, description="Our call id, shared by the call's legs")
    panel_id: str = Field(min_length=1)
    flat: PushFlat
    caller_name: str = Field(default="", description="What the app shows, e.g. the address")
    ring_seconds: float = Field(gt=0, description="How long the flat rings")
    requested_at: AwareDatetime


@dataclass
class _Delivery:
    call_id: str
    sending: bool = False


class PushGateway:
    """Sends push requests in background tasks; the call never waits for the gateway.

    At most ``max_in_flight`` requests are on the wire at once; the rest wait for a slot,
    and that wait is what ``cancel`` can still stop. The client is the caller's to close.
    """

    def __init__(
        self,
        url: str,
        timeout_seconds: float,
        client: httpx.AsyncClient,
        *,
        max_in_flight: int = 16,
        close_grace_seconds: float = 1.0,
    ) -> None:
        self._url = url
        self._timeout = timeout_seconds
        self._client = client
        self._slots = asyncio.Semaphore(max_in_flight)
        self._close_grace = close_grace_seconds
        # Also the strong references: the event loop keeps only weak ones to tasks.
        self._deliveries: dict[asyncio.Task[None], _Delivery] = {}
        self._closed = False

    def request(self, push: PushRequest) -> None:
        """Send ``push`` in the background; returns at once."""
        if self._closed:
            raise RuntimeError("push gateway is closed")
        delivery = _Delivery(push.call_id)
        task = asyncio.get_running_loop().create_task(self._deliver(push, delivery))
        self._deliveries[task] = delivery
        task.add_done_callback(self._forget)

    def cancel(self, call_id: str) -> int:
        """Drop the call's pushes not sent yet (the call is over); returns how many."""
        waiting = [
            task
            for task, delivery in self._deliveries.items()
            if delivery.call_id == call_id and not delivery.sending
        ]
        for task in waiting:
            task.cancel()
        return len(waiting)

    async def aclose(self) -> None:
        """Refuse new requests, give those under way ``close_grace_seconds``, cancel the rest."""
        self._closed = True
        if not self._deliveries:
            return
        _, late = await asyncio.wait(list(self._deliveries), timeout=self._close_grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def _deliver(self, push: PushRequest, delivery: _Delivery) -> None:
        async with self._slots:
            delivery.sending = True
            outcome = await self._post(push)
        PUSH_REQUESTS.labels(outcome).inc()

    async def _post(self, push: PushRequest) -> str:
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.post(
                    self._url,
                    content=push.model_dump_json(),
                    headers={"Content-Type": "application/json"},
                    timeout=self._timeout,
                )
        except (TimeoutError, httpx.TimeoutException):
            log.warning("push for call %s to %s timed out", push.call_id, push.account)
            return "timeout"
        except httpx.HTTPError as exc:
            log.warning(
                "push for call %s to %s failed: %s: %s",
                push.call_id, push.account, type(exc).__name__, exc,
            )  # fmt: skip
            return "error"
        if response.is_success:
            return "sent"
        log.warning(
            "push for call %s to %s refused: HTTP %d",
            push.call_id, push.account, response.status_code,
        )  # fmt: skip
        return "rejected"

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._deliveries.pop(task, None)
        # Counted here: a task cancelled before its first step never runs _deliver at all.
        if task.cancelled():
            PUSH_REQUESTS.labels("cancelled").inc()
        elif (exc := task.exception()) is not None:
            PUSH_REQUESTS.labels("error").inc()
            log.error("push task failed", exc_info=exc)
