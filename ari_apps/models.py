"""Typed ARI events in, typed commands out.

ARI's JSON is parsed here, at the edge, into frozen models; state machines never see raw
dicts. Commands are what a machine asks the adapter to do; only the executor turns them into
ARI requests.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class CallerId(_Frozen):
    name: str = ""
    number: str = ""


class Channel(_Frozen):
    id: str
    name: str = ""
    state: str = ""
    caller: CallerId = CallerId()
    connected: CallerId = CallerId()
    channelvars: dict[str, str | None] = Field(default_factory=dict)

    @property
    def sip_call_id(self) -> str | None:
        """SIP Call-ID of the channel's dialog (the dialplan sets SIP_CALL_ID before Stasis)."""
        return self.channelvars.get("SIP_CALL_ID") or None


class Playback(_Frozen):
    id: str
    target_uri: str = ""
    media_uri: str = ""
    state: str = ""

    @property
    def channel_id(self) -> str | None:
        kind, _, target = self.target_uri.partition(":")
        return target if kind == "channel" else None


class _StasisEvent(_Frozen):
    application: str
    timestamp: datetime | None = None


class StasisStart(_StasisEvent):
    type: Literal["StasisStart"]
    args: list[str] = Field(default_factory=list)
    channel: Channel


class StasisEnd(_StasisEvent):
    type: Literal["StasisEnd"]
    channel: Channel


class ChannelStateChange(_StasisEvent):
    type: Literal["ChannelStateChange"]
    channel: Channel


class ChannelHangupRequest(_StasisEvent):
    type: Literal["ChannelHangupRequest"]
    channel: Channel
    cause: int = 0


class ChannelDestroyed(_StasisEvent):
    type: Literal["ChannelDestroyed"]
    channel: Channel
    cause: int = 0
    cause_txt: str = ""


class ChannelDtmfReceived(_StasisEvent):
    type: Literal["ChannelDtmfReceived"]
    channel: Channel
    digit: str
    duration_ms: int = 0


class PlaybackStarted(_StasisEvent):
    type: Literal["PlaybackStarted"]
    playback: Playback


class PlaybackFinished(_StasisEvent):
    type: Literal["PlaybackFinished"]
    playback: Playback


AriEvent = Annotated[
    StasisStart
    | StasisEnd
    | ChannelStateChange
    | ChannelHangupRequest
    | ChannelDestroyed
    | ChannelDtmfReceived
    | PlaybackStarted
    | PlaybackFinished,
    Field(discriminator="type"),
]
_ARI_EVENT: TypeAdapter[AriEvent] = TypeAdapter(AriEvent)
KNOWN_EVENT_TYPES = frozenset(
    get_args(member.model_fields["type"].annotation)[0]
    for member in get_args(get_args(AriEvent)[0])
)


class MalformedEvent(ValueError):
    pass


def parse_event(raw: dict[str, Any]) -> AriEvent | None:
    """Typed event, None for event types no app consumes; malformed known events raise."""
    if raw.get("type") not in KNOWN_EVENT_TYPES:
        return None
    try:
        return _ARI_EVENT.validate_python(raw)
    except ValidationError as exc:
        raise MalformedEvent(f"{raw.get('type')}: {exc.errors(include_url=False)}") from exc


def event_channel_id(event: AriEvent) -> str | None:
    """The channel an event concerns: the call key of single-channel apps."""
    if isinstance(event, PlaybackStarted | PlaybackFinished):
        return event.playback.channel_id
    return event.channel.id


class TimerFired(_Frozen):
    """Delivered by the runtime when a timer a machine started runs out."""

    type: Literal["TimerFired"] = "TimerFired"
    name: str


# Commands: what a machine wants done. Frozen so a test can compare them with ==.


class Answer(_Frozen):
    channel_id: str


class Play(_Frozen):
    channel_id: str
    media: str
    playback_id: str


class Hangup(_Frozen):
    channel_id: str
    reason: Literal["normal", "busy", "congestion", "no_answer", "answered_elsewhere"] = "normal"


class StartTimer(_Frozen):
    name: str
    seconds: float = Field(gt=0)


Command = Answer | Play | Hangup | StartTimer
CallEvent = AriEvent | TimerFired
