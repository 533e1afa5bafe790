import pytest

from ari_apps.models import (
    MalformedEvent,
    PlaybackFinished,
    StasisStart,
    event_channel_id,
    parse_event,
)
from softswitch.reconnect import backoff_delay

pytestmark = pytest.mark.unit


def test_stasis_start_is_typed_with_args_and_sip_call_id() -> None:
    parsed = parse_event(
        {
            "type": "StasisStart",
            "application": "smoke",
            "timestamp": "2026-11-22T10:00:00.000+0000",
            "args": ["2001", "queue=7"],
            "channel": {
                "id": "1.1",
                "name": "PJSIP/kamailio-00000001",
                "state": "Ring",
                "caller": {"name": "", "number": "1001"},
                "channelvars": {"SIP_CALL_ID": "abc@127.0.0.1"},
            },
        }
    )
    assert isinstance(parsed, StasisStart)
    assert parsed.args == ["2001", "queue=7"]
    assert parsed.channel.caller.number == "1001"
    assert parsed.channel.sip_call_id == "abc@127.0.0.1"
    assert event_channel_id(parsed) == "1.1"


def test_playback_events_belong_to_their_target_channel() -> None:
    parsed = parse_event(
        {
            "type": "PlaybackFinished",
            "application": "smoke",
            "playback": {"id": "p1", "target_uri": "channel:1.1", "state": "done"},
        }
    )
    assert isinstance(parsed, PlaybackFinished)
    assert event_channel_id(parsed) == "1.1"


def test_event_types_no_app_uses_are_skipped() -> None:
    assert parse_event({"type": "DeviceStateChanged", "application": "smoke"}) is None


def test_a_malformed_known_event_raises_a_clear_error() -> None:
    with pytest.raises(MalformedEvent, match="StasisStart"):
        parse_event({"type": "StasisStart", "application": "smoke"})


def test_reconnect_backoff_doubles_up_to_the_cap() -> None:
    delays = [backoff_delay(n, minimum=0.5, maximum=10) for n in range(8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert backoff_delay(10_000, minimum=0.5, maximum=10) == 10
