"""Calls routed by the routing service through real Kamailio, Asterisk and sipp."""

from pathlib import Path

import pytest

from softswitch.settings import Settings
from tests.e2e.conftest import RoutingServiceHandle, ServiceProcess
from tests.e2e.sipp import run_sipp, sipp_server

pytestmark = pytest.mark.e2e


def kamailio(settings: Settings) -> str:
    return f"{settings.kamailio.sip_ip}:{settings.kamailio.sip_port}"


def relay(name: str, callee_mask: str, *ports: int, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "priority": 100,
        "match": {"callee": callee_mask},
        "action": "relay",
        "destinations": [f"sip:127.0.0.1:{port}" for port in ports],
        **extra,
    }


def expect(code: int, callee: str, settings: Settings, workdir: Path, caller: str = "1001"):
    return run_sipp(
        "uac_expect.tmpl.xml", kamailio(settings), service=callee, workdir=workdir,
        values={"CODE": str(code)}, extra=("-key", "caller", caller),
    )  # fmt: skip


def test_relay_through_a_next_chain_delivers_the_rewritten_numbers(
    stack_settings: Settings, routing: RoutingServiceHandle, tmp_path: Path
) -> None:
    with sipp_server("uas_no180.xml", workdir=tmp_path) as gateway:
        routing.add_routes(
            {"name": "e2e: 8 to 7", "priority": 10, "match": {"callee": r"^8(916\d{7})$"},
             "rewrite": {"callee": r"7\1"}, "action": "next"},
            relay("e2e: mobile", r"^7916\d{7}$", gateway.port,
                  match={"callee": r"^7916\d{7}$", "caller": "^(sipp)$"},
                  rewrite={"caller": r"7495000\1"}),
        )  # fmt: skip
        call = run_sipp(
            "builtin:uac", kamailio(stack_settings), service="89161234567", workdir=tmp_path
        )
        assert (call.successful, call.failed) == (1, 0), call.output
        answered = gateway.result()
    assert answered.successful == 1, answered.output
    (invite,) = answered.received("INVITE")
    assert invite.startswith(f"INVITE sip:79161234567@127.0.0.1:{gateway.port} SIP/2.0")
    assert "<sip:7495000sipp@" in invite.split("From:", 1)[1].split("\n", 1)[0]


def test_reject_route_answers_its_code(
    stack_settings: Settings, routing: RoutingServiceHandle, tmp_path: Path
) -> None:
    routing.add_routes(
        {"name": "e2e: barred", "priority": 100, "match": {"callee": "^0666$"},
         "action": "reject", "reject": {"code": 403, "reason": "Barred By Route"}}
    )  # fmt: skip
    call = expect(403, "0666", stack_settings, tmp_path)
    assert (call.successful, call.failed) == (1, 0), call.output
    assert "403 Barred By Route" in call.received("SIP/2.0 403")[0].split("\n", 1)[0]


def test_serial_failover_on_503_reaches_the_second_destination(
    stack_settings: Settings, routing: RoutingServiceHandle, tmp_path: Path
) -> None:
    failing = {"CODE": "503", "REASON": "Service Unavailable"}
    with (
        sipp_server("uas_reject.tmpl.xml", workdir=tmp_path, values=failing) as first,
        sipp_server("uas_no180.xml", workdir=tmp_path) as second,
    ):
        routing.add_routes(relay("e2e: failover", "^7000001$", first.port, second.port))
        call = run_sipp("builtin:uac", kamailio(stack_settings), service="7000001",
                        workdir=tmp_path)  # fmt: skip
        assert (call.successful, call.failed) == (1, 0), call.output
        assert first.result().successful == 1
        assert second.result().successful == 1


def test_busy_is_not_failed_over_unless_the_route_says_so(
    stack_settings: Settings, routing: RoutingServiceHandle, tmp_path: Path
) -> None:
    busy = {"CODE": "486", "REASON": "Busy Here"}
    with (
        sipp_server("uas_reject.tmpl.xml", workdir=tmp_path, values=busy) as first,
        sipp_server("uas_no180.xml", workdir=tmp_path, timeout_s=5) as second,
    ):
        routing.add_routes(relay("e2e: busy stays busy", "^7000002$", first.port, second.port))
        call = expect(486, "7000002", stack_settings, tmp_path)
        assert (call.successful, call.failed) == (1, 0), call.output
        assert second.result(timeout_s=8).received("INVITE") == []

    with (
        sipp_server("uas_reject.tmpl.xml", workdir=tmp_path, values=busy) as first,
        sipp_server("uas_no180.xml", workdir=tmp_path) as second,
    ):
        routing.add_routes(
            relay("e2e: busy fails over", "^7000003$", first.port, second.port,
                  flags=["failover_busy"])
        )  # fmt: skip
        call = run_sipp("builtin:uac", kamailio(stack_settings), service="7000003",
                        workdir=tmp_path)  # fmt: skip
        assert (call.successful, call.failed) == (1, 0), call.output
        assert second.result().successful == 1


def test_parallel_relay_rings_all_and_cancels_the_losers(
    stack_settings: Settings, routing: RoutingServiceHandle, tmp_path: Path
) -> None:
    with (
        sipp_server("uas_no180.xml", workdir=tmp_path) as winner,
        sipp_server("uas_ring_cancel.xml", workdir=tmp_path) as loser,
    ):
        routing.add_routes(
            relay("e2e: parallel", "^7000004$", winner.port, loser.port, parallel=True)
        )
        call = run_sipp("builtin:uac", kamailio(stack_settings), service="7000004",
                        workdir=tmp_path)  # fmt: skip
        assert (call.successful, call.failed) == (1, 0), call.output
        assert winner.result().successful == 1
        cancelled = loser.result()
        assert cancelled.successful == 1, cancelled.output
        assert cancelled.received("CANCEL")


def test_app_route_hands_the_call_to_the_stasis_app_with_its_args(
    stack_settings: Settings,
    routing: RoutingServiceHandle,
    smoke_app: ServiceProcess,
    tmp_path: Path,
) -> None:
    routing.add_routes(
        {"name": "e2e: queue", "priority": 100, "match": {"callee": r"^8(555\d)$"},
         "rewrite": {"callee": r"\1"}, "action": "app", "app": "smoke",
         "app_args": ["7", "vip"]}
    )  # fmt: skip
    call = run_sipp(
        "uac_far_end_hangs_up.xml", kamailio(stack_settings), service="85550", workdir=tmp_path
    )
    assert (call.successful, call.failed) == (1, 0), call.output
    start = smoke_app.wait_for(
        lambda r: r["msg"] == "StasisStart" and r.get("sip_call_id") == call.call_id(1)
    )
    assert start["args"] == ["5550", "7", "vip"]


def test_routing_service_down_means_503_with_retry_after(
    stack_settings: Settings, routing: RoutingServiceHandle, tmp_path: Path
) -> None:
    routing.stop()
    call = expect(503, "7000005", stack_settings, tmp_path)
    assert (call.successful, call.failed) == (1, 0), call.output
    assert "Retry-After: 5" in call.received("SIP/2.0 503")[0]
