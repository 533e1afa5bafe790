"""A real call: sipp -> Kamailio -> Asterisk -> our Stasis app, which answers and hangs up."""

from pathlib import Path

import pytest

from softswitch.settings import Settings
from tests.e2e.conftest import ServiceProcess
from tests.e2e.sipp import run_sipp

pytestmark = pytest.mark.e2e


def test_call_through_kamailio_is_answered_and_ended_by_the_stasis_app(
    stack_settings: Settings, smoke_app: ServiceProcess, tmp_path: Path
) -> None:
    kamailio = f"{stack_settings.kamailio.sip_ip}:{stack_settings.kamailio.sip_port}"
    result = run_sipp("uac_far_end_hangs_up.xml", kamailio, service="5000", workdir=tmp_path)
    assert (result.successful, result.failed, result.exit_code) == (1, 0, 0), result.output

    call_id = result.call_id(1)
    start = smoke_app.wait_for(
        lambda r: r["msg"] == "StasisStart" and r.get("sip_call_id") == call_id
    )
    assert start["app"] == "smoke"
    assert start["args"][0] == "5000"  # the dialled number reaches the app
    smoke_app.wait_for(
        lambda r: r["msg"] == "StasisEnd" and r.get("channel_id") == start["channel_id"]
    )


def test_app_reconnects_when_asterisk_restarts(
    stack_settings: Settings, smoke_app: ServiceProcess, tmp_path: Path
) -> None:
    from softswitch.stack import services

    def connections() -> int:
        return sum(r["msg"] == "ARI connected" for r in smoke_app.records())

    state_dir = stack_settings.stack.state_dir
    before = connections()
    services.stop(services.ASTERISK, state_dir)
    smoke_app.wait_for(lambda r: r["msg"].startswith("ARI websocket closed"))
    services.start(services.ASTERISK, stack_settings.stack.chroot_dir, state_dir)
    services.wait_ready(services.ASTERISK, stack_settings)
    smoke_app.wait_for(lambda r: connections() > before, timeout=20)

    kamailio = f"{stack_settings.kamailio.sip_ip}:{stack_settings.kamailio.sip_port}"
    result = run_sipp("uac_far_end_hangs_up.xml", kamailio, service="5001", workdir=tmp_path)
    assert (result.successful, result.failed) == (1, 0), result.output
    smoke_app.wait_for(
        lambda r: r["msg"] == "StasisEnd" and r.get("sip_call_id") == result.call_id(1)
    )
