"""The emergency-call app's I/O: leases and releases in the pool (PostgreSQL)."""

from __future__ import annotations

import logging

import psycopg

from ari_apps.models import AppCommand, CallEvent
from ari_apps.sos.models import LeaseNumber, NumberLeased, ReleaseNumber
from softswitch.db import KeptConnection
from softswitch.sos.store import lease_number, release_number

log = logging.getLogger("softswitch.sos")


class SosServices:
    def __init__(self, database: KeptConnection, *, fallback_number: str | None) -> None:
        self._db = database
        self._fallback_number = fallback_number

    async def execute(self, command: AppCommand) -> CallEvent | None:
        match command:
            case LeaseNumber(panel_account=panel_account, call_id=call_id):
                try:
                    outcome = await self._db.run(
                        lambda conn: lease_number(
                            conn,
                            panel_account=panel_account,
                            call_id=call_id,
                            fallback_number=self._fallback_number,
                        )
                    )
                except psycopg.Error:
                    # The call still goes out (global gateway, the panel's own caller ID).
                    log.exception("112 pool unreachable; calling without a pool number")
                    return NumberLeased(outcome=None)
                return NumberLeased(outcome=outcome)
            case ReleaseNumber(number=number, call_id=call_id):
                try:
                    await self._db.run(
                        lambda conn: release_number(conn, number=number, call_id=call_id)
                    )
                except psycopg.Error:
                    # The number stays leased to this panel: its next 112 call reuses it,
                    # and `softswitch sos release` frees it by hand.
                    log.exception("could not release pool number %s", number)
        return None
