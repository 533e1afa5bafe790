import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from softswitch.events.cdr import CallRecord, fold
from softswitch.events.examples import EXAMPLES, events_markdown
from softswitch.events.models import (
    EVENT_TYPES,
    AgentStatusChanged,
    CallAnswered,
    CallEnded,
    CallRinging,
    CallRouted,
    CallStarted,
    Event,
    MalformedEvent,
    SosNumberLeased,
    WaiterJoined,
    WaiterLeft,
    parse_event,
)

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def test_every_event_type_has_one_example_that_round_trips() -> None:
    assert sorted(e.routing_key for e in EXAMPLES) == sorted(EVENT_TYPES)
    for example in EXAMPLES:
        assert parse_event(example.body()) == example


def test_required_event_types_exist() -> None:
    required = {
        "call.started", "call.routed", "call.ringing", "call.answered", "call.bridged",
        "call.transferred", "call.ended", "acd.waiter.joined", "acd.waiter.left",
        "acd.waiter.priority_changed", "acd.waiter.moved", "acd.agent.status_changed",
        "acd.callback.requested", "multiring.started", "multiring.won", "multiring.timeout",
        "push.requested", "sos.number.leased", "sos.number.released", "sos.number.exhausted",
        "sos.callback.routed",
    }  # fmt: skip
    assert required <= EVENT_TYPES.keys()
    assert any(key.startswith("multiring.leg_") for key in EVENT_TYPES)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{nope", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"type": "call.exploded"}', "unknown event type 'call.exploded'"),
        (b'{"type": "call.ended", "wait_seconds": -1, "talk_seconds": 0}', "call.ended: "),
        (b'{"type": "call.started", "caller": "1", "callee": "2", "surprise": 1}', "surprise"),
    ],
)
def test_malformed_bodies_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedEvent, match=reason.replace(".", r"\.")):
        parse_event(body)


def test_docs_list_every_event_as_generated() -> None:
    assert (REPO / "docs" / "events.md").read_text() == events_markdown()


def a_call() -> list[Event]:
    ids = {"call_id": "c1", "sip_call_id": "sip-1"}
    return [
        CallStarted(**ids, caller="89161234567", callee="100", occurred_at=T0),
        CallRouted(**ids, route="Queue", action="app", caller="79161234567", callee="100",
                   occurred_at=T0),
        WaiterJoined(**ids, queue="support", position=1, occurred_at=T0),
        CallRinging(**ids, leg="agent-7", occurred_at=T0 + timedelta(seconds=3)),
        CallRinging(**ids, leg="agent-8", occurred_at=T0 + timedelta(seconds=3)),
        WaiterLeft(**ids, queue="support", reason="answered", waited_seconds=5,
                   agent="agent-7", occurred_at=T0 + timedelta(seconds=5)),
        CallAnswered(**ids, leg="agent-7", occurred_at=T0 + timedelta(seconds=5)),
        SosNumberLeased(**ids, city="Tver", number="74822000101", panel="p1", occurred_at=T0),
        CallEnded(**ids, disposition="answered", wait_seconds=5, talk_seconds=60,
                  occurred_at=T0 + timedelta(seconds=65)),
    ]  # fmt: skip


def fold_all(events: list[Event]) -> CallRecord | None:
    record = None
    for event in events:
        record = fold(record, event)
    return record


def test_a_call_folds_into_one_record() -> None:
    assert fold_all(a_call()) == CallRecord(
        call_id="c1",
        sip_call_id="sip-1",
        caller="79161234567",
        callee="100",
        route="Queue",
        started_at=T0,
        answered_at=T0 + timedelta(seconds=5),
        ended_at=T0 + timedelta(seconds=65),
        wait_seconds=5,
        talk_seconds=60,
        disposition="answered",
        cause=16,
        legs=2,
        queue="support",
        agent="agent-7",
        pool_number="74822000101",
        events=9,
    )


def test_the_record_does_not_depend_on_arrival_order() -> None:
    events = a_call()
    expected = fold_all(events)
    for order in itertools.islice(itertools.permutations(events), 0, None, 997):
        assert fold_all(list(order)) == expected


def test_events_without_a_call_make_no_record() -> None:
    status = AgentStatusChanged(agent="a", old_status="free", new_status="busy")
    assert fold(None, status) is None
