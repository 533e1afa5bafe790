"""Directory records as the call apps see them, whatever the source (PostgreSQL or a CRM)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DeviceKind = Literal["sip", "mobile", "forward"]
DirectorySource = Literal["crm", "database"]
# Longer keypad entries are no flat (and always fit a PostgreSQL bigint).
MAX_KEYPAD_DIGITS = 18


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Panel(_Frozen):
    """A door intercom panel: one SIP account, one entrance of one building."""

    panel_id: str = Field(min_length=1)
    account: str = Field(min_length=1, description="SIP account (subscriber.username)")
    building: str = Field(min_length=1, description="Building key shared with its flats")
    address: str = ""
    flat_first: int = Field(default=1, ge=0)
    flat_last: int = Field(default=9999, ge=0)
    flat_offset: int = Field(
        default=0, description="Flat number = dialled number + offset (panels that count from 1)"
    )
    city_id: str | None = Field(
        default=None, description="sos_city of the panel's 112 calls; None: the global fallback"
    )

    def flat_number(self, dialled: str) -> str | None:
        """The building's flat number a keypad entry means, None outside this panel's range."""
        # isdigit() alone lets through '²' and Arabic-Indic digits, and int() of thousands
        # of digits raises: neither may fail a call.
        if not (dialled.isascii() and dialled.isdigit()) or len(dialled) > MAX_KEYPAD_DIGITS:
            return None
        number = int(dialled) + self.flat_offset
        return str(number) if self.flat_first <= number <= self.flat_last else None


class FlatDevice(_Frozen):
    """One thing that rings for a flat.

    ``sip``: a SIP account (phone, handset) reached through Kamailio's registrations.
    ``mobile``: a mobile-app account; push first, then rung like ``sip`` once it registers.
    ``forward``: a fixed forward, ``target`` is a SIP URI or a number the routing service routes.
    """

    kind: DeviceKind
    target: str = Field(min_length=1)
    label: str = ""


class Flat(_Frozen):
    building: str
    number: str
    devices: tuple[FlatDevice, ...] = ()


class FlatLookup(_Frozen):
    """The answer to "panel P dialled N": the panel and flat if known, and where it came from."""

    panel: Panel | None
    flat: Flat | None
    source: DirectorySource
