"""The multiring app's own commands and answers, and its settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ari_apps.models import AppCommand, AppEvent
from softswitch.directory.models import FlatDevice, FlatLookup

NoAnswerOutcome = Literal["hangup", "fallback"]


class LookupFlat(AppCommand):
    panel_account: str
    dialled: str


class FlatResolved(AppEvent):
    """The directory's answer; ``lookup`` None when no directory source answered at all."""

    lookup: FlatLookup | None


class RequestPush(AppCommand):
    call_id: str
    account: str
    panel_id: str
    building: str
    flat_number: str
    caller_name: str
    ring_seconds: int
    requested_at: datetime


class CancelPushes(AppCommand):
    """The call is over or answered: pushes not sent yet are dropped."""

    call_id: str


@dataclass(frozen=True)
class MultiringPolicy:
    """How a flat is rung; from settings, passed to the pure machine."""

    ring_seconds: float = 30.0
    no_answer: NoAnswerOutcome = "hangup"
    fallback: FlatDevice | None = None
    sip_domain: str = "127.0.0.1"

    def endpoint(self, device: FlatDevice) -> str:
        """Every leg leaves through Kamailio, which finds the account's registered devices."""
        target = device.target
        if target.startswith(("sip:", "sips:")):
            return f"PJSIP/kamailio/{target}"
        return f"PJSIP/kamailio/sip:{target}@{self.sip_domain}"
