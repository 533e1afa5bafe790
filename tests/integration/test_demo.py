"""The demo data `softswitch demo` seeds: accounts, routes and the door intercom, idempotently."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from pydantic import SecretStr

from routing.engine import decide
from routing.models import CallRequest
from routing.store import export_specs
from routing.table import RouteTable
from softswitch.demo import DEMO_PANEL, DEMO_QUEUE_NUMBER, seed
from softswitch.settings import AsteriskSettings, DatabaseSettings, Settings

pytestmark = pytest.mark.integration


def test_demo_seed_twice_gives_an_intercom_ringing_every_demo_phone(
    migrated_database: DatabaseSettings,
) -> None:
    settings = Settings(
        database=migrated_database,
        asterisk=AsteriskSettings(peer_token=SecretStr("t" * 32)),
    )
    first = seed(settings)
    assert seed(settings) == first  # idempotent, same passwords
    with psycopg.connect(migrated_database.url) as conn:
        devices = conn.execute(
            "SELECT target FROM flat_device WHERE building = 'demo' AND number = '1'"
            " ORDER BY position"
        ).fetchall()
        assert [target for (target,) in devices] == ["1001", "1002", "1003"]
        routes = RouteTable.compile([(n, spec) for n, spec in enumerate(export_specs(conn))])
    now = datetime.now(UTC)
    from_door = decide(CallRequest(caller=DEMO_PANEL, callee="1"), routes, now)
    assert (from_door.action, from_door.app) == ("app", "multiring")
    to_door = decide(CallRequest(caller="1001", callee=DEMO_PANEL), routes, now)
    assert (to_door.action, to_door.app) == ("app", "panel")
    queue = decide(CallRequest(caller="1001", callee=DEMO_QUEUE_NUMBER), routes, now)
    assert (queue.action, queue.app, queue.app_args) == ("app", "acd", ["demo-support"])
    with psycopg.connect(migrated_database.url) as conn:
        agents = conn.execute(
            "SELECT a.account, a.status FROM acd_agent a JOIN acd_membership m USING (agent_id)"
            " WHERE m.queue_id = 'demo-support' ORDER BY a.account"
        ).fetchall()
    assert agents == [("1002", "free"), ("1003", "free")]
