"""Typed ARI events in, typed commands out.

ARI's JSON is parsed here, at the edge, into frozen models; state machines never see raw
dicts. Commands are what a machine asks the adapter to do; only the executor turns them into
ARI requests.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from softswitch.events.models import Event


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class CallerId(_Frozen):
    name: str = ""
    number: str = ""


class DialplanLocation(_Frozen):
    context: str = ""
    exten: str = ""
    app_name: str = ""
    app_data: str = ""


class Channel(_Frozen):
    id: str
    name: str = ""
    state: str = ""
    caller: CallerId = CallerId()
    connected: CallerId = CallerId()
    dialplan: DialplanLocation = DialplanLocation()
    channelvars: dict[str, str | None] = Field(default_factory=dict)

    @property
    def stasis_app(self) -> str | None:
        """The Stasis app the channel sits in, from its dialplan location (``Stasis(app,..)``)."""
        if self.dialplan.app_name != "Stasis":
            return None
        return self.dialplan.app_data.split(",", 1)[0] or None

    @property
    def sip_call_id(self) -> str | None:
        """SIP Call-ID of the channel's dialog (the dialplan sets SIP_CALL_ID before Stasis)."""
        return self.channelvars.get("SIP_CALL_ID") or None


class Bridge(_Frozen):
    id: str
    bridge_type: str = ""
    channels: tuple[str, ...] = ()


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
    resynced: bool = False
    """Made by the runtime from Asterisk's channel list after a reconnect, not sent by ARI."""


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


class ChannelEnteredBridge(_StasisEvent):
    type: Literal["ChannelEnteredBridge"]
    bridge: Bridge
    channel: Channel


class ChannelLeftBridge(_StasisEvent):
    type: Literal["ChannelLeftBridge"]
    bridge: Bridge
    channel: Channel


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
    | ChannelEnteredBridge
    | ChannelLeftBridge
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


def ended_channel(event: object) -> str | None:
    """The channel an event says is gone or going: hangup asked, destroyed, or out of Stasis."""
    if isinstance(event, StasisEnd | ChannelDestroyed | ChannelHangupRequest):
        return event.channel.id
    return None


class TimerFired(_Frozen):
    """Delivered by the runtime when a timer a machine started runs out."""

    type: Literal["TimerFired"] = "TimerFired"
    name: str


class AppEvent(_Frozen):
    """Base of what an app's own services feed back into a call (a directory answer, ...)."""


class CommandFailed(_Frozen):
    """Asterisk refused a command (the channel was gone, an endpoint was invalid, ...).

    Delivered to the call so a machine can react: an originate that fails never produces a
    ChannelDestroyed for its channel.
    """

    type: Literal["CommandFailed"] = "CommandFailed"
    command: Command
    status: int | None = None


class RuntimeStopping(_Frozen):
    """The process is shutting down: end what cannot survive without us, keep what can."""

    type: Literal["RuntimeStopping"] = "RuntimeStopping"


# Commands: what a machine wants done. Frozen so a test can compare them with ==.

HangupReason = Literal[
    "normal", "busy", "congestion", "no_answer", "answered_elsewhere", "rejected", "unallocated"
]


class Answer(_Frozen):
    channel_id: str


class Ring(_Frozen):
    """180 Ringing towards the channel's caller, so a panel does not give up while we work."""

    channel_id: str


class Play(_Frozen):
    channel_id: str
    media: str
    playback_id: str


class Hangup(_Frozen):
    channel_id: str
    reason: HangupReason = "normal"


class Originate(_Frozen):
    """A new outgoing channel that enters the app (with ``app_args``) when it answers.

    The machine chooses ``channel_id``, so events about the channel can be routed to its call
    from the first one on, before the originate request even returns.
    """

    channel_id: str
    endpoint: str
    caller_id: str = ""
    timeout_seconds: int = Field(default=30, gt=0)
    app_args: tuple[str, ...] = ()
    variables: dict[str, str] = Field(default_factory=dict)


class CreateBridge(_Frozen):
    bridge_id: str
    name: str = ""


class AddToBridge(_Frozen):
    bridge_id: str
    channel_ids: tuple[str, ...]


class DestroyBridge(_Frozen):
    bridge_id: str


class StartMoh(_Frozen):
    """Music on hold to everyone in the bridge (a queue's waiting caller)."""

    bridge_id: str
    music_class: str = "default"


class StopMoh(_Frozen):
    bridge_id: str


class StartTimer(_Frozen):
    name: str
    seconds: float = Field(gt=0)


class Emit(_Frozen):
    """Publish a call event (through the outbox; never waited for)."""

    event: Event


class AppCommand(_Frozen):
    """Base of commands an app's own services carry out (directory lookup, push, ...)."""


AriCommand = (
    Answer
    | Ring
    | Play
    | Hangup
    | Originate
    | CreateBridge
    | AddToBridge
    | DestroyBridge
    | StartMoh
    | StopMoh
)


class InOrder(_Frozen):
    """ARI commands one after the other, as one branch of a ``Concurrently``."""

    commands: tuple[AriCommand, ...]


class Concurrently(_Frozen):
    """ARI commands sent at once, not one after the other (hang up nine losing legs while
    the winner is answered and bridged)."""

    commands: tuple[AriCommand | InOrder, ...]


Command = AriCommand | StartTimer | Emit | AppCommand | Concurrently | InOrder
CallEvent = AriEvent | TimerFired | AppEvent | CommandFailed | RuntimeStopping

CommandFailed.model_rebuild()
