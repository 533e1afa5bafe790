from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.engine import RELAYING_DENIED, decide, destination_uri, every_route, uri_host
from routing.models import CallbackTarget, CallRequest, RouteSpec, compile_mask
from routing.table import (
    SORTED_CANDIDATES,
    DigitsMask,
    Mask,
    NumberRewrite,
    RouteTable,
    literal_prefix,
    literal_prefixes,
    literal_suffix,
)

pytestmark = pytest.mark.unit
MONDAY_NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def route(name: str, **fields: Any) -> RouteSpec:
    fields.setdefault("action", "relay")
    if fields["action"] == "relay":
        fields.setdefault("destinations", ["sip:gw.example:5060"])
    return RouteSpec.model_validate({"name": name, **fields})


def table(*specs: RouteSpec) -> RouteTable:
    return RouteTable.compile([(i + 1, spec) for i, spec in enumerate(specs)])


def call(
    callee: str, caller: str = "74951110000", *, trusted: bool = True, **hosts: str
) -> CallRequest:
    """A call from a caller Kamailio vouches for, unless ``trusted=False``."""
    return CallRequest(caller=caller, callee=callee, trusted=trusted, **hosts)


def test_first_match_by_priority_then_id_wins() -> None:
    routes = table(
        route("late", priority=20, match={"callee": "^7"}),
        route("tie-first-id", priority=10, match={"callee": "^79"}),
        route("tie-second-id", priority=10, match={"callee": "^7"}),
    )
    assert decide(call("79161234567"), routes, MONDAY_NOON).route == "tie-first-id"
    assert decide(call("74951234567"), routes, MONDAY_NOON).route == "tie-second-id"


def test_rewrite_uses_groups_of_the_matching_mask_and_fills_the_destination() -> None:
    routes = table(
        route(
            "8 to 7",
            match={"callee": r"^8(\d{10})$", "caller": r"^(\d+)$"},
            rewrite={"callee": r"7\1", "caller": r"+\1"},
        )
    )
    decision = decide(call("89161234567", caller="74951110000"), routes, MONDAY_NOON)
    assert decision.callee == "79161234567"
    assert decision.caller == "+74951110000"
    assert decision.destinations == ["sip:79161234567@gw.example:5060"]


@pytest.mark.parametrize(
    ("mask", "template", "number", "rewritten"),
    [
        (r"^8(\d{10})$", r"+7\1", "89161234567", "+79161234567"),
        (r"^(?P<area>\d{3})(?P<rest>\d+)$", r"7\g<area>-\g<rest>", "4951234", "7495-1234"),
        (r"^(\d)(\d)", r"\2\1\g<0>", "12345", "2112"),
        (r"^(00)?(\d+)$", r"[\1]\2", "4951", "[]4951"),  # a group that took no part: empty
        (r"^ñü(\d+)$", r"€\1ж", "ñü42", "€42ж"),  # UTF-8 on both sides
        (r"2(3)", r"x\1", "12345", "x3"),  # unanchored: the groups of the first match
        ("", r"\g<0>sip", "anything", "sip"),  # an empty mask: group 0 is empty
    ],
)
def test_rewrite_expands_groups_by_number_and_name(
    mask: str, template: str, number: str, rewritten: str
) -> None:
    assert NumberRewrite.compile(template, Mask(mask) if mask else None).apply(number) == rewritten


@pytest.mark.parametrize(r"template", [r"7\n\1", r"\\1", "7\\", r"\g1", r"\x37\1"])
def test_a_backslash_that_is_no_group_reference_is_refused(template: str) -> None:
    with pytest.raises(ValueError, match="a backslash must start a group reference"):
        route("bad", match={"callee": r"^8(\d+)$"}, rewrite={"callee": template})


@given(
    digits=st.text("0123456789", min_size=1, max_size=15),
    # No digit right after a reference: the wrapper reads \12 as group 12 (so would we).
    literals=st.lists(st.text("+*#-abc", max_size=3), min_size=4, max_size=4),
    references=st.lists(st.sampled_from(["\\1", "\\2", "\\g<0>", "\\g<tail>"]), max_size=3),
    split=st.integers(0, 15),
)
@settings(max_examples=300, deadline=None)
def test_rewrites_expand_like_re2s_own_expand(
    digits: str, literals: list[str], references: list[str], split: int
) -> None:
    """The precompiled expansion gives what the RE2 wrapper's ``search().expand()`` gives,
    for templates of literals and references and masks with optional groups."""
    mask = rf"(\d{{0,{split}}})(9)?(?P<tail>\d*)$"
    template = literals[0] + "".join(
        reference + literal for reference, literal in zip(references, literals[1:], strict=False)
    )
    expected = compile_mask(mask).search(digits).expand(template)
    assert NumberRewrite.compile(template, Mask(mask)).apply(digits) == expected


def test_all_four_masks_must_match() -> None:
    routes = table(
        route(
            "from trunk",
            match={"caller_host": r"^trunk\.example$", "callee_host": "^sbc"},
        )
    )
    assert (
        decide(
            call("1", caller_host="trunk.example", callee_host="sbc1"), routes, MONDAY_NOON
        ).route
        == "from trunk"
    )
    miss = decide(call("1", caller_host="other", callee_host="sbc1"), routes, MONDAY_NOON)
    assert (miss.action, miss.reject.code if miss.reject else None) == ("reject", 404)


def test_next_chain_rewrites_and_continues_after_itself_with_the_new_number() -> None:
    routes = table(
        route(
            "strip 8",
            priority=1,
            action="next",
            match={"callee": r"^8(\d+)$"},
            rewrite={"callee": r"7\1"},
            flags=["record"],
        ),
        route("local 8", priority=2, match={"callee": "^8"}),  # skipped: number is now 7...
        route("mobile", priority=3, match={"callee": "^79"}, flags=["nat"]),
    )
    decision = decide(call("89161234567"), routes, MONDAY_NOON)
    assert decision.chain == ["strip 8", "mobile"]
    assert decision.route == "mobile"
    assert decision.callee == "79161234567"
    assert decision.flags == ["record", "nat"]


def test_next_never_revisits_earlier_routes_and_long_chains_are_cut() -> None:
    chain = [route(f"hop{i}", priority=i, action="next", match={"callee": "^1"}) for i in range(5)]
    decision = decide(call("123"), table(*chain), MONDAY_NOON, max_chain=3)
    assert decision.chain == ["hop0", "hop1", "hop2"]
    assert decision.reject is not None and decision.reject.code == 482
    unbounded = decide(call("123"), table(*chain), MONDAY_NOON, max_chain=10)
    assert unbounded.chain == [f"hop{i}" for i in range(5)]
    assert unbounded.reject is not None and unbounded.reject.code == 404


def test_app_and_reject_actions() -> None:
    routes = table(
        route("queue", match={"callee": "^100$"}, action="app", app="acd", app_args=["7", "vip"]),
        route(
            "barred",
            match={"callee": "^0"},
            action="reject",
            reject={"code": 403, "reason": "Barred"},
        ),
    )
    app = decide(call("100"), routes, MONDAY_NOON)
    assert (app.action, app.app, app.app_args) == ("app", "acd", ["7", "vip"])
    barred = decide(call("0123"), routes, MONDAY_NOON)
    assert barred.reject is not None and (barred.reject.code, barred.reject.reason) == (
        403,
        "Barred",
    )


def test_disabled_and_closed_routes_do_not_match() -> None:
    office_hours = {
        "timezone": "Europe/Moscow",
        "windows": [
            {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00"}
        ],
    }
    routes = table(
        route("disabled", enabled=False),
        route("office", schedule=office_hours, priority=5),
        route("after hours", priority=6, action="app", app="voicemail"),
    )
    assert decide(call("1"), routes, MONDAY_NOON).route == "office"  # 15:00 in Moscow
    evening = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)  # 19:00 in Moscow
    assert decide(call("1"), routes, evening).route == "after hours"


def test_destination_with_a_user_part_is_used_as_is() -> None:
    assert destination_uri("sip:1001@pbx.local", "555") == "sip:1001@pbx.local"
    assert destination_uri("sips:gw:5061;transport=tls", "555") == "sips:555@gw:5061;transport=tls"


@pytest.mark.parametrize(
    ("mask", "prefix"),
    [
        (r"^7495\d{7}$", "7495"),
        (r"^\+7(\d+)", "+7"),
        ("^79?1", "7"),  # 9 is optional
        ("^12*", "1"),
        ("^12+", "12"),
        ("^1{2}", ""),
        ("^(112|01)$", ""),
        ("^1|2", ""),  # top-level alternation: anchored only on one side
        ("7495", ""),  # unanchored: may match anywhere
        (r"^8\d", "8"),
        ("^a[bc]", "a"),
        ("", ""),
    ],
)
def test_literal_prefix_is_conservative(mask: str, prefix: str) -> None:
    assert literal_prefix(mask) == prefix


@pytest.mark.parametrize(
    "mask",
    [
        r"^7495\d{7}$",
        "^74951234567$",
        "^79",
        r"^\+7\d+",
        r"^8\d{2,3}$",
        r"^1\d{2,}$",
        r"^1\d*$",
        r"^1\d{0}$",
        r"^\+\d{3}",
    ],
)
@pytest.mark.parametrize(
    "number",
    [
        "",
        "7",
        "74951234567",
        "749512345678",
        "7495123456",
        "+7",
        "+79",
        "+7a",
        "79",
        "8",
        "81",
        "812",
        "8123",
        "81234",
        "1",
        "100",
        "1a",
        "+123",
        "+12",
    ],
)
def test_digits_masks_agree_with_re2(mask: str, number: str) -> None:
    digits_mask = DigitsMask.parse(mask)
    assert digits_mask is not None
    assert digits_mask.hits(number.encode()) == (compile_mask(mask).search(number) is not None)


@pytest.mark.parametrize(
    ("mask", "suffix"),
    [
        ("5555$", "5555"),
        (r"^7\d{6}1234$", "1234"),
        (r"\d$", ""),
        ("12?$", ""),
        ("1|23$", ""),
        (r"12\$", ""),
        ("(12)$", ""),
        ("ab$", "ab"),
        ("^123$", "123"),
        ("", ""),
    ],
)
def test_literal_suffix_is_conservative(mask: str, suffix: str) -> None:
    assert literal_suffix(mask) == suffix


@pytest.mark.parametrize(
    ("mask", "prefixes"),
    [
        (r"^7(495|499)\d{7}$", ("7495", "7499")),
        ("^(?:112|01)$", ("112", "01")),
        ("^(112|01)?5", ()),  # the group may be absent
        ("^(1|2|)", ()),  # an empty alternative proves nothing
        ("^(1[0-9]|2)", ()),  # not pure literals
        ("^7(49(5|9))", ("7",)),
        (r"^\+7", ("+7",)),
        ("^1|2", ()),
        ("", ()),
    ],
)
def test_literal_prefixes_expand_alternatives_of_literals(
    mask: str, prefixes: tuple[str, ...]
) -> None:
    assert literal_prefixes(mask) == prefixes


# Property: the indexed engine decides exactly like a naive in-order scan.

digits = st.text(alphabet="0123", min_size=0, max_size=7)
numbers = st.text(alphabet="0123+a", min_size=0, max_size=9)
masks = st.one_of(
    st.just(""),
    digits.map(lambda d: f"^{d}"),
    digits.map(lambda d: f"^{d}$"),
    digits.map(lambda d: f"^{d}(\\d*)$"),
    digits.map(lambda d: f"^{d}1?2"),
    digits.map(lambda d: f"^{d}+3"),
    digits.map(lambda d: d),
    st.tuples(digits, digits).map(lambda ab: f"^({ab[0]}|{ab[1]})"),
    st.tuples(digits, digits, digits).map(lambda abc: f"^{abc[0]}(?:{abc[1]}|{abc[2]})\\d?$"),
    st.tuples(digits, digits).map(lambda ab: f"^({ab[0]}|{ab[1]})?1"),
    st.tuples(
        digits,
        st.sampled_from([r"\d{2}", r"\d{0,3}", r"\d{1,}", r"\d+", r"\d*", r"\d{2,2}", ""]),
        st.sampled_from(["", "$"]),
    ).map(lambda parts: f"^{parts[0]}{parts[1]}{parts[2]}"),
    digits.map(lambda d: f"^\\+{d}"),
    digits.map(lambda d: f"{d}$"),
    digits.map(lambda d: f"\\d{d}$"),
    digits.map(lambda d: f"{d}2?$"),
    st.tuples(digits, digits).map(lambda ab: f"^{ab[0]}|{ab[1]}$"),
)


@st.composite
def route_specs(draw: st.DrawFn, index: int) -> RouteSpec:
    action = draw(st.sampled_from(["relay", "app", "reject", "next", "next", "callback"]))
    callee_mask = draw(masks)
    rewrite = {}
    if callee_mask.endswith("(\\d*)$") and draw(st.booleans()):
        rewrite["callee"] = draw(digits) + r"\1"
    fields: dict[str, Any] = {
        "name": f"r{index}",
        "priority": draw(st.integers(0, 5)),
        "enabled": draw(st.booleans()) or True,
        "match": {"callee": callee_mask, "caller": draw(masks)},
        "rewrite": rewrite,
        "action": action,
        "flags": draw(st.lists(st.sampled_from(["record", "nat"]), max_size=2)),
    }
    if action == "relay":
        fields["destinations"] = ["sip:gw:5060"]
    elif action == "app":
        fields["app"] = "acd"
    elif action == "reject":
        fields["reject"] = {"code": 403, "reason": "No"}
    return RouteSpec.model_validate(fields)


@st.composite
def tables(draw: st.DrawFn) -> list[RouteSpec]:
    size = draw(st.integers(0, 25))
    return [draw(route_specs(i)) for i in range(size)]


@settings(max_examples=400, deadline=None)
@given(
    specs=tables(),
    calls=st.lists(st.tuples(numbers, numbers), min_size=1, max_size=8),
    reserved=st.lists(numbers, max_size=3),
)
def test_indexed_engine_decides_exactly_like_a_naive_scan(
    specs: list[RouteSpec], calls: list[tuple[str, str]], reserved: list[str]
) -> None:
    compiled = table(*specs).with_callbacks(
        {n: CallbackTarget(panel_account=f"door{n}", panel_id=n, city_id="c") for n in reserved}
    )
    for caller, callee in calls:
        request = call(callee, caller=caller)
        fast = decide(request, compiled, MONDAY_NOON, max_chain=4)
        naive = decide(request, compiled, MONDAY_NOON, max_chain=4, candidates=every_route)
        assert fast == naive


def test_many_candidates_are_merged_lazily_in_decision_order() -> None:
    """Beyond SORTED_CANDIDATES a call's candidates are merged, not sorted: same decisions.

    Even routes are indexed by callee prefix, odd ones by caller prefix, with interleaved
    priorities: taking one index's hits before the other's would decide differently."""
    specs = [
        route(f"r{i}", priority=i % 7, match={"callee": r"^7495\d*$", "caller": f"^{i % 3}$"})
        if i % 2 == 0
        else route(f"r{i}", priority=i % 7, match={"caller": f"^{i % 3}$"})
        for i in range(3 * SORTED_CANDIDATES)
    ]
    compiled = table(
        *specs,
        route(
            "8 to 7",
            priority=0,
            match={"callee": r"^8(\d*)$"},
            rewrite={"callee": r"7\1"},
            action="next",
        ),
    )
    assert len(list(compiled.candidates("1", "74951"))) > SORTED_CANDIDATES
    for caller in ("0", "1", "2", "9"):
        for callee in ("74951", "84951", "7"):
            request = call(callee, caller=caller)
            naive = decide(request, compiled, MONDAY_NOON, candidates=every_route)
            assert decide(request, compiled, MONDAY_NOON) == naive
    # The odd priority-0 route of the caller's key (r21 for "0": lower id) beats the chain.
    assert decide(call("74951", caller="0"), compiled, MONDAY_NOON).route == "r0"
    assert decide(call("84951", caller="0"), compiled, MONDAY_NOON).route == "r21"


def test_callback_to_a_reserved_pool_number_goes_to_the_panel_holding_it() -> None:
    routes = table(
        route("to E.164", match={"callee": r"^8(\d{10})$"}, rewrite={"callee": r"+7\1"},
              action="next"),
        route("pool callbacks", match={"callee": r"^\+7495000"}, action="callback"),
        route("no reservation: operator", match={"callee": r"^\+7495000"}, action="app",
              app="queue", app_args=["sos-operators"]),
    ).with_callbacks(
        {"+74950001234": CallbackTarget(panel_account="door-17", panel_id="p17", city_id="msk")}
    )  # fmt: skip
    reserved = decide(call("84950001234", caller="112"), routes, MONDAY_NOON)
    assert (reserved.action, reserved.app) == ("app", "panel")
    assert reserved.app_args == ["door-17", "sos", "msk"]
    assert reserved.chain == ["to E.164", "pool callbacks"]
    assert reserved.callee == "+74950001234"
    # Written without the +: still the same reservation.
    assert decide(call("74950001234"), table(route("cb", action="callback")).with_callbacks(
        routes.callbacks), MONDAY_NOON).app_args[0] == "door-17"  # fmt: skip
    expired = decide(call("84950009999", caller="112"), routes, MONDAY_NOON)
    assert (expired.route, expired.app, expired.app_args) == (
        "no reservation: operator", "queue", ["sos-operators"],
    )  # fmt: skip
    assert expired.chain == ["to E.164", "pool callbacks", "no reservation: operator"]


def test_callback_routes_name_no_destinations_or_args() -> None:
    with pytest.raises(ValueError, match="callback takes no app_args"):
        route("cb", action="callback", app_args=["x"])
    with pytest.raises(ValueError, match="takes no destinations"):
        route("cb", action="callback", destinations=["sip:gw"])
    assert route("cb", action="callback", app="panel2").app == "panel2"


def test_an_expired_reservation_reaches_nobody_even_before_the_next_reload() -> None:
    from datetime import timedelta

    held = CallbackTarget(panel_account="door-1", panel_id="p1", city_id="msk",
                          valid_until=MONDAY_NOON - timedelta(seconds=1))  # fmt: skip
    routes = table(
        route("cb", action="callback"), route("operators", action="app", app="queue")
    ).with_callbacks({"+74950001234": held})
    assert decide(call("+74950001234"), routes, MONDAY_NOON).app == "queue"
    live = routes.with_callbacks({"+74950001234": held.model_copy(update={"valid_until": None})})
    assert decide(call("+74950001234"), live, MONDAY_NOON).app == "panel"


LOCAL = frozenset({"pbx.example", "10.0.0.5"})


def test_an_untrusted_caller_is_not_relayed_outside_our_domain() -> None:
    routes = table(
        route("pstn", match={"callee": "^8"}, destinations=["sip:gw.example:5060"]),
        route(
            "mixed", match={"callee": "^7"}, destinations=["sip:1001@pbx.example", "sip:gw.example"]
        ),
        route(
            "account", match={"callee": "^1"}, destinations=["sip:1001@PBX.example;transport=udp"]
        ),
        route("by address", match={"callee": "^2"}, destinations=["sip:10.0.0.5:5060"]),
    )
    for callee in ("89161234567", "79161234567"):
        refused = decide(call(callee, trusted=False), routes, MONDAY_NOON, local_hosts=LOCAL)
        assert (refused.action, refused.reject) == ("reject", RELAYING_DENIED)
        assert refused.route in ("pstn", "mixed"), "the refusal names the route"
        allowed = decide(call(callee), routes, MONDAY_NOON, local_hosts=LOCAL)
        assert allowed.action == "relay"
    for callee in ("1001", "2002"):
        local = decide(call(callee, trusted=False), routes, MONDAY_NOON, local_hosts=LOCAL)
        assert local.action == "relay", callee


def test_a_public_route_relays_untrusted_callers_even_through_a_next_chain() -> None:
    routes = table(
        route("tag", action="next", match={"callee": "^8"}, flags=["public"]),
        route("pstn", match={"callee": "^8"}),
        route("other", match={"callee": "^9"}),
    )
    via_chain = decide(call("89161234567", trusted=False), routes, MONDAY_NOON)
    assert (via_chain.action, via_chain.route) == ("relay", "pstn")
    assert "public" in via_chain.flags
    plain = decide(call("99161234567", trusted=False), routes, MONDAY_NOON)
    assert plain.reject == RELAYING_DENIED


def test_apps_and_rejects_are_not_relays() -> None:
    routes = table(
        route("queue", action="app", app="acd", match={"callee": "^5"}),
        route("no", action="reject", reject={"code": 480, "reason": "Later"}),
    )
    assert decide(call("5000", trusted=False), routes, MONDAY_NOON).action == "app"
    assert decide(call("6000", trusted=False), routes, MONDAY_NOON).reject.code == 480  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("uri", "host"),
    [
        ("sip:1001@PBX.example:5060;transport=tcp", "pbx.example"),
        ("sip:gw.example", "gw.example"),
        ("sips:user@[2001:db8::1]:5061", "2001:db8::1"),
        ("sip:a@b@c.example", "c.example"),
    ],
)
def test_uri_host(uri: str, host: str) -> None:
    assert uri_host(uri) == host
