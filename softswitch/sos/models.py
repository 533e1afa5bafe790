"""The 112 pool as the call apps and admins see it: cities, pool numbers, leases."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ExhaustionPolicy = Literal["take_oldest", "fallback"]
NumberState = Literal["free", "leased", "blocked"]
# What a number is at a moment: a free number whose reservation has not expired is reserved.
NumberStatus = Literal["free", "reserved", "leased", "blocked"]
LeaseHow = Literal["reused", "lru", "taken_over", "fallback"]
# Why a lease ended as it did; anything but "leased" means no pool number was used.
LeaseReason = Literal["leased", "unknown_panel", "no_city", "no_numbers", "exhausted"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class City(_Frozen):
    """A city of the pool: where its emergency calls go and what an exhausted pool does."""

    city_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    fias_code: str = Field(description="FIAS/GAR GUID, lowercase 8-4-4-4-12 hex")
    emergency_number: str = "112"
    gateway_uri: str = Field(description="sip:/sips: URI of the city's VoIP gateway")
    time_zone: str = "Europe/Moscow"
    fallback_number: str = Field(description="E.164 caller ID when the pool has no number")
    exhaustion_policy: ExhaustionPolicy = "take_oldest"
    reservation_minutes: int = Field(default=60, ge=1, le=1440)


class NumberEntry(_Frozen):
    """A pool number as the import file lists it (its lease state is not the file's business)."""

    number: str
    city_id: str = Field(min_length=1)
    blocked_reason: str | None = None


class PoolNumber(_Frozen):
    """A pool number with its lease state, as a row of sos_number."""

    number: str
    city_id: str
    state: NumberState = "free"
    panel_id: str | None = None
    call_id: str | None = None
    leased_at: datetime | None = None
    released_at: datetime | None = None
    reserved_until: datetime | None = None
    last_used_at: datetime | None = None
    blocked_reason: str | None = None

    def status(self, now: datetime) -> NumberStatus:
        """The state, with a free number whose holder's callback window is open as reserved."""
        if self.state == "free" and self.reserved_until is not None and self.reserved_until > now:
            return "reserved"
        return self.state


class PanelLocation(_Frozen):
    """Where the calling panel is, for the emergency service."""

    panel_id: str
    account: str
    address: str
    city_id: str | None
    city_name: str | None
    fias_code: str | None


class Lease(_Frozen):
    """The caller ID an emergency call uses, and where the call goes.

    ``gateway_uri`` and ``emergency_number`` are None for a panel without a city: then only a
    global fallback number is known and the call app has to route the call otherwise.
    """

    number: str
    how: LeaseHow
    call_id: str
    panel_account: str
    panel_id: str | None
    city_id: str | None
    gateway_uri: str | None
    emergency_number: str | None
    leased_at: datetime
    location: PanelLocation | None


class LeaseOutcome(_Frozen):
    """What ``lease_number`` did and why; ``lease`` is None when not even a fallback was known."""

    reason: LeaseReason
    lease: Lease | None


class Release(_Frozen):
    """A lease that ended: the number is reserved for its panel until ``reserved_until``."""

    number: str
    city_id: str
    panel_id: str
    call_id: str
    held_seconds: float
    reserved_until: datetime


class Reservation(_Frozen):
    """Who a callback to a pool number reaches (``valid_until`` is None while the call lasts)."""

    number: str
    panel_id: str
    panel_account: str
    city_id: str
    status: Literal["leased", "reserved"]
    valid_until: datetime | None
    since: datetime = Field(description="start of the lease, or of the reservation")


class CityUsage(_Frozen):
    """How many numbers of a city are in each status now."""

    city_id: str
    name: str
    free: int
    reserved: int
    leased: int
    blocked: int
