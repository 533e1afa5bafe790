"""The panel-call app's I/O: is the panel free? Kamailio's dialogs plus our own claims.

Kamailio counts every SIP call of the panel's account (its dialog profile), which sees calls
that never touch Asterisk. Two calls of ours checking at the same instant would both see 0,
so a claim is also recorded here, in the one ARI process; the claim lasts until the call ends.
If Kamailio cannot be asked, the panel counts as busy: waiting is better than a second call
that locks the panel's keypad.
"""

from __future__ import annotations

import logging

import httpx
from prometheus_client import Counter

from ari_apps.models import AppCommand, CallEvent
from ari_apps.panel.models import ClaimPanel, PanelClaim, ReleasePanel
from softswitch.kamailio_rpc import KamailioRpc, KamailioRpcError

log = logging.getLogger("softswitch.panel")

PANEL_CLAIMS = Counter(
    "softswitch_panel_claims_total", "Claims of a panel for a call, by result", ["result"]
)


class PanelServices:
    def __init__(self, kamailio: KamailioRpc) -> None:
        self._kamailio = kamailio
        self._claims: dict[str, str] = {}

    async def execute(self, command: AppCommand) -> CallEvent | None:
        match command:
            case ClaimPanel(account=account, call_id=call_id):
                return await self._claim(account, call_id)
            case ReleasePanel(account=account, call_id=call_id):
                if self._claims.get(account) == call_id:
                    del self._claims[account]
        return None

    async def _claim(self, account: str, call_id: str) -> PanelClaim:
        holder = self._claims.get(account)
        if holder is not None and holder != call_id:
            PANEL_CLAIMS.labels("claimed").inc()
            return PanelClaim(account=account, granted=False, reason="claimed by another call")
        try:
            calls = await self._kamailio.account_calls(account)
        except (KamailioRpcError, httpx.HTTPError) as exc:
            PANEL_CLAIMS.labels("unknown").inc()
            log.warning("cannot ask Kamailio whether %s is busy: %s", account, exc)
            return PanelClaim(account=account, granted=False, reason="Kamailio unreachable")
        if calls > 0:
            PANEL_CLAIMS.labels("busy").inc()
            return PanelClaim(account=account, granted=False, reason=f"{calls} call(s) up")
        self._claims[account] = call_id
        PANEL_CLAIMS.labels("granted").inc()
        return PanelClaim(account=account, granted=True)
