"""The emergency-call app's own commands and answers, and its settings."""

from __future__ import annotations

from dataclasses import dataclass

from ari_apps.models import AppCommand, AppEvent
from softswitch.sos.models import LeaseOutcome

LOCATION_HEADERS = {
    "panel_id": "X-Panel-Id",
    "address": "X-Location-Address",
    "city_name": "X-Location-City",
    "fias_code": "X-Location-FIAS",
}
"""Where the panel is, in SIP headers the gateway forwards to the emergency service."""


class LeaseNumber(AppCommand):
    panel_account: str
    call_id: str


class NumberLeased(AppEvent):
    """The pool's answer; ``outcome`` None when the pool could not be asked at all."""

    outcome: LeaseOutcome | None


class ReleaseNumber(AppCommand):
    number: str
    call_id: str


@dataclass(frozen=True)
class SosPolicy:
    """For calls the pool cannot place (panel without a city, database down): where they go."""

    fallback_gateway_uri: str | None = None
    emergency_number: str = "112"
    ring_seconds: float = 120.0

    def endpoint(self, gateway_uri: str, emergency_number: str) -> str:
        """The city's emergency number at its gateway, reached through Kamailio."""
        scheme, _, rest = gateway_uri.partition(":")
        host = rest.split("@", 1)[-1]
        return f"PJSIP/kamailio/{scheme}:{emergency_number}@{host}"
