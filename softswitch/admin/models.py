"""Request and answer bodies of the admin API that no store already defines.

Records themselves (routes, panels, flats, queues, agents, cities, numbers) are the stores'
own models, so the API accepts exactly what `softswitch ... import` accepts and answers
exactly what `... export` prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from routing.models import Decision

SIP_USER = r"^[A-Za-z0-9._~+-]{1,64}$"  # subscriber_username_is_sip_user
SIP_DOMAIN = r"^[A-Za-z0-9.\-\[\]:]{1,64}$"  # a host name or IP literal; subscriber.domain


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Diff(_Body):
    """What an import changes in one kind of record, by key (flats: [building, number])."""

    added: list[str | list[str]]
    changed: list[str | list[str]]
    removed: list[str | list[str]]
    unchanged: list[str | list[str]]


class ImportResult(_Body):
    dry_run: bool = Field(description="true: nothing was written, this is what would change")
    changes: dict[str, Diff]


class PlannedChanges(Protocol):
    """One kind of record in a store's import plan (its keys by what happens to them)."""

    @property
    def added(self) -> Sequence[Any]: ...
    @property
    def changed(self) -> Sequence[Any]: ...
    @property
    def removed(self) -> Sequence[Any]: ...
    @property
    def unchanged(self) -> Sequence[Any]: ...


def import_result(*, dry_run: bool, **kinds: PlannedChanges) -> ImportResult:
    """What an import did (or, dry run, would do), per kind of record."""

    def keys(items: Sequence[Any]) -> list[str | list[str]]:
        return [list(key) if isinstance(key, tuple) else str(key) for key in items]

    return ImportResult(
        dry_run=dry_run,
        changes={
            kind: Diff(
                added=keys(c.added),
                changed=keys(c.changed),
                removed=keys(c.removed),
                unchanged=keys(c.unchanged),
            )
            for kind, c in kinds.items()
        },
    )


class Account(_Body):
    """A SIP account (its HA1 hashes are never returned)."""

    username: str
    domain: str


class Subscriber(Account):
    contacts: list[str] = Field(description="registered contacts as PostgreSQL's location has them")


class SubscriberBody(_Body):
    """A password to store as digest HA1 (never in clear); the domain defaults to the local
    SIP domain (SOFTSWITCH_KAMAILIO_SIP_DOMAIN)."""

    password: str = Field(min_length=8, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    domain: str | None = Field(default=None, pattern=SIP_DOMAIN)


class SkippedRoute(_Body):
    id: int
    name: str
    reason: str


class RouteTest(_Body):
    """A call decided as the routing service would, and the rows it would skip."""

    decision: Decision
    skipped: list[SkippedRoute]


class Contacts(_Body):
    username: str
    contacts: list[str] = Field(description="contact URIs Kamailio has registered now")


class Call(_Body):
    """A dialog Kamailio tracks (ringing, up, or ended and not yet freed)."""

    call_id: str
    from_uri: str
    to_uri: str
    state: str = Field(description="UNCONFIRMED, EARLY, CONFIRMED_NA, CONFIRMED or DELETED")


class FloodBan(_Body):
    address: str
    banned: bool = Field(description="Kamailio ignores this source now (anti-flood)")


class KamailioStatus(_Body):
    version: str
    uptime_seconds: int | None
    up_since: str | None


class BlockBody(_Body):
    reason: str = Field(min_length=1, max_length=200, pattern=r"\S")


class Health(_Body):
    status: str
