"""Routes as admins write them (JSON and SQL), calls as Kamailio asks, decisions as we answer.

``RouteSpec`` is the admin-facing form with exactly the JSON field names of the route file;
its validators refuse anything the engine could not run (masks RE2 cannot compile, rewrite
groups the mask lacks, incomplete actions, non-SIP destinations, bad schedules), each error
naming the field.
"""

from __future__ import annotations

import re
from datetime import datetime, time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import re2
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

RouteAction = Literal["relay", "app", "reject", "next", "callback"]
CALLBACK_APP = "panel"
"""The Stasis app a ``callback`` route hands a reserved number's call to (one call per panel)."""
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

RE2_OPTIONS = re2.Options()
RE2_OPTIONS.log_errors = False  # errors are reported to the admin, not to stderr
RE2_OPTIONS.max_mem = 64 << 20
# sip:/sips: URI with a host part; user part, port and parameters optional.
_SIP_URI = re.compile(r"^sips?:([^@\s;]+@)?[A-Za-z0-9.\-\[\]:]+(;[^\s]*)?$")
_APP_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_FLAG_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# A backslash in a rewrite: a group reference \N, \g<N> or \g<name>, or nothing valid.
_REWRITE_ESCAPE = re.compile(r"\\(?:(\d+)|g<(\w+)>)?")


def compile_mask(pattern: str) -> Any:
    """An RE2 regexp (linear time whatever the admin wrote); ValueError with RE2's reason."""
    try:
        return re2.compile(pattern, RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if isinstance(exc.args[0], bytes) else str(exc.args[0])
        raise ValueError(f"RE2 cannot compile '{pattern}': {reason}") from None


def rewrite_parts(template: str) -> tuple[tuple[str, ...], tuple[int | str, ...]]:
    """``template``'s literal pieces and the group references between them:
    ``+7\\1`` -> (('+7', ''), (1,)); names stay names (``\\g<rest>`` -> 'rest').

    A rewrite is literal text and group references, nothing else: a backslash that starts
    no reference is refused, so a rewrite never means more than it shows.
    """
    pieces: list[str] = []
    groups: list[int | str] = []
    start = 0
    for escape in _REWRITE_ESCAPE.finditer(template):
        number, name = escape.groups()
        if number is None and name is None:
            raise ValueError(
                f"rewrite '{template}': a backslash must start a group reference"
                " (\\1, \\g<1>, \\g<name>)"
            )
        pieces.append(template[start : escape.start()])
        groups.append(int(number) if number is not None else int(name) if name.isdigit() else name)
        start = escape.end()
    pieces.append(template[start:])
    return tuple(pieces), tuple(groups)


def check_rewrite(template: str, mask: str, mask_field: str) -> None:
    """Every \\N or \\g<name> in a rewrite must be a group of the mask it rewrites."""
    if not template:
        return
    compiled = compile_mask(mask) if mask else None
    groups = compiled.groups if compiled else 0
    names = dict(compiled.groupindex) if compiled else {}
    for group in rewrite_parts(template)[1]:
        if isinstance(group, str) and group not in names:
            raise ValueError(f"rewrite '{template}' uses group '{group}' missing in {mask_field}")
        if isinstance(group, int) and group > groups:
            raise ValueError(
                f"rewrite '{template}' uses group \\{group} but {mask_field} '{mask}'"
                f" has {groups} group(s)"
            )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Strict):
    caller: str = ""
    caller_host: str = ""
    callee: str = ""
    callee_host: str = ""

    @field_validator("caller", "caller_host", "callee", "callee_host")
    @classmethod
    def _compiles_in_re2(cls, mask: str) -> str:
        if mask:
            compile_mask(mask)
        return mask


class Rewrite(_Strict):
    caller: str = ""
    callee: str = ""


class Reject(_Strict):
    code: int = Field(ge=400, le=699)
    reason: str = Field(min_length=1, max_length=128, pattern=r"^[^\r\n]+$")


class Window(_Strict):
    """Weekdays and a time-of-day window [start, end); end before start runs past midnight."""

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    start: time = time(0, 0)
    end: time = time(0, 0)  # 00:00 as end means midnight (end of day)

    def contains(self, local: datetime) -> bool:
        day = WEEKDAYS[local.weekday()]
        previous_day = WEEKDAYS[(local.weekday() - 1) % 7]
        now = local.time()
        if self.start < self.end:
            return day in self.days and self.start <= now < self.end
        if self.end == time(0, 0):  # to midnight
            return day in self.days and now >= self.start
        return (day in self.days and now >= self.start) or (
            previous_day in self.days and now < self.end
        )


class Schedule(_Strict):
    timezone: str = "UTC"
    windows: list[Window] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}") from None
        return name

    def is_open(self, at: datetime) -> bool:
        local = at.astimezone(ZoneInfo(self.timezone))
        return any(window.contains(local) for window in self.windows)


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class RouteSpec(_Strict):
    """One route, exactly as the JSON route file and `routes export` spell it."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[^\r\n]+$")
    group: str = ""
    priority: int = Field(default=100, ge=-1_000_000, le=1_000_000)
    enabled: bool = True
    match: Match = Match()
    rewrite: Rewrite = Rewrite()
    action: RouteAction
    destinations: list[str] = Field(default_factory=list)
    parallel: bool = False
    app: str = ""
    app_args: Annotated[list[str], BeforeValidator(_one_or_many)] = Field(default_factory=list)
    reject: Reject | None = None
    flags: list[str] = Field(default_factory=list)
    schedule: Schedule | None = None

    @field_validator("destinations")
    @classmethod
    def _sip_uris(cls, uris: list[str]) -> list[str]:
        bad = [uri for uri in uris if not _SIP_URI.match(uri)]
        if bad:
            raise ValueError(f"not SIP URIs: {bad}")
        return uris

    @field_validator("app_args")
    @classmethod
    def _plain_args(cls, args: list[str]) -> list[str]:
        # Args travel comma-separated in one SIP header to Asterisk's Stasis().
        bad = [arg for arg in args if re.search(r"[,\r\n]", arg)]
        if bad:
            raise ValueError(f"app_args may not contain commas or newlines: {bad}")
        return args

    @field_validator("flags")
    @classmethod
    def _flag_names(cls, flags: list[str]) -> list[str]:
        bad = [flag for flag in flags if not _FLAG_NAME.match(flag)]
        if bad:
            raise ValueError(f"flag names are lowercase words ([a-z][a-z0-9_]*): {bad}")
        return list(dict.fromkeys(flags))

    @model_validator(mode="after")
    def _action_is_complete(self) -> RouteSpec:
        check_rewrite(self.rewrite.caller, self.match.caller, "match.caller")
        check_rewrite(self.rewrite.callee, self.match.callee, "match.callee")
        problems = []
        if self.action == "relay" and not self.destinations:
            problems.append("relay needs at least one destination")
        if self.action != "relay" and self.destinations:
            problems.append(f"{self.action} takes no destinations")
        if self.action != "relay" and self.parallel:
            problems.append("parallel applies to relay only")
        if self.action == "app" and not _APP_NAME.match(self.app):
            problems.append("app needs an app name ([A-Za-z0-9_.-], up to 64)")
        if self.action == "callback" and self.app and not _APP_NAME.match(self.app):
            problems.append("callback's app must be an app name ([A-Za-z0-9_.-], up to 64)")
        if self.action == "callback" and self.app_args:
            problems.append("callback takes no app_args (the panel's account is looked up)")
        if self.action not in ("app", "callback") and (self.app or self.app_args):
            problems.append(f"{self.action} takes no app or app_args")
        if self.action == "reject" and self.reject is None:
            problems.append("reject needs reject.code and reject.reason")
        if self.action != "reject" and self.reject is not None:
            problems.append(f"{self.action} takes no reject")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class CallbackTarget(_Strict):
    """Who a call to a reserved emergency-pool number goes to: the panel that used it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    panel_account: str
    panel_id: str
    city_id: str
    valid_until: datetime | None = None  # None while the emergency call itself lasts


class CallRequest(_Strict):
    """What Kamailio tells us about a new call."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    caller: str = Field(default="", max_length=256)
    caller_host: str = Field(default="", max_length=256)
    callee: str = Field(default="", max_length=256)
    callee_host: str = Field(default="", max_length=256)
    call_id: str = Field(default="", max_length=512)
    trusted: bool = False
    """Kamailio vouches for the caller: a digest-authenticated account, a trusted peer
    address, or Asterisk. Untrusted callers are not relayed outside our domain unless the
    route has flag ``public`` (no open relay)."""


class Decision(_Strict):
    """Where a call goes; the JSON of `routes test --json` and the core of the HTTP answer."""

    route: str | None
    chain: list[str]
    action: Literal["relay", "app", "reject"]
    caller: str
    callee: str
    destinations: list[str] = Field(default_factory=list)
    parallel: bool = False
    app: str | None = None
    app_args: list[str] = Field(default_factory=list)
    reject: Reject | None = None
    flags: list[str] = Field(default_factory=list)
