"""The panel-call app's own commands and answers, and its settings."""

from __future__ import annotations

from dataclasses import dataclass

from ari_apps.models import AppCommand, AppEvent


class ClaimPanel(AppCommand):
    """Reserve the panel for this call if it is free (no SIP call in Kamailio, no claim)."""

    account: str
    call_id: str


class PanelClaim(AppEvent):
    account: str
    granted: bool
    reason: str = ""


class ReleasePanel(AppCommand):
    account: str
    call_id: str


@dataclass(frozen=True)
class PanelCallPolicy:
    """One call at a time per panel: how long a call towards a busy panel waits."""

    wait_seconds: float = 30.0
    retry_seconds: float = 2.0
    ring_seconds: float = 45.0
    sip_domain: str = "127.0.0.1"

    def endpoint(self, account: str) -> str:
        return f"PJSIP/kamailio/sip:{account}@{self.sip_domain}"
