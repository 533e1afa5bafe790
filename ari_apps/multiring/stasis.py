"""The multiring app's I/O: the directory lookup and the push gateway, behind its commands."""

from __future__ import annotations

import logging

from ari_apps.models import AppCommand, CallEvent
from ari_apps.multiring.models import CancelPushes, FlatResolved, LookupFlat, RequestPush
from softswitch.directory.crm import Directory
from softswitch.directory.push import PushFlat, PushGateway, PushRequest

log = logging.getLogger("softswitch.multiring")


class MultiringServices:
    def __init__(self, directory: Directory, push: PushGateway | None) -> None:
        self._directory = directory
        self._push = push

    async def execute(self, command: AppCommand) -> CallEvent | None:
        match command:
            case LookupFlat(panel_account=panel_account, dialled=dialled):
                try:
                    lookup = await self._directory.lookup_flat(panel_account, dialled)
                except Exception:
                    # Every source failed: the call is refused, never left hanging.
                    log.exception("directory lookup failed for %s/%s", panel_account, dialled)
                    return FlatResolved(lookup=None)
                return FlatResolved(lookup=lookup)
            case RequestPush() if self._push is not None:
                self._push.request(
                    PushRequest(
                        account=command.account,
                        call_id=command.call_id,
                        panel_id=command.panel_id,
                        flat=PushFlat(building=command.building, number=command.flat_number),
                        caller_name=command.caller_name,
                        ring_seconds=command.ring_seconds,
                        requested_at=command.requested_at,
                    )
                )
            case CancelPushes(call_id=call_id) if self._push is not None:
                self._push.cancel(call_id)
        return None
