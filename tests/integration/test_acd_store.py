"""The ACD's tables on a real PostgreSQL: the migration's constraints and NOTIFY triggers,
import/export of queues and agents, the agents' persisted status, callback requests, a
caller's history and the `acd` CLI."""

from __future__ import annotations

import copy
import json
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from acd.models import CallbackRequest, Membership, Queue
from acd.store import (
    AcdFile,
    MembershipRecord,
    QueueRecord,
    apply_acd_import,
    caller_history,
    count_callback_attempt,
    current_acd,
    export_acd,
    finish_callback,
    load_acd,
    load_callbacks,
    parse_acd_file,
    reference_problems,
    save_agents,
    save_callback,
)
from softswitch.settings import DatabaseSettings
from tests.integration.conftest import softswitch_cli

pytestmark = pytest.mark.integration

EXAMPLE_TEXT = (Path(__file__).parents[2] / "docs" / "acd.example.json").read_text()
EXAMPLE: dict[str, Any] = json.loads(EXAMPLE_TEXT)
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def example() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE)


def parsed(document: dict[str, Any]) -> AcdFile:
    acd, errors = parse_acd_file(json.dumps(document))
    assert errors == []
    return acd


def import_acd(url: str, document: dict[str, Any], *, replace: bool = False) -> None:
    acd = parsed(document)
    with psycopg.connect(url, autocommit=True) as conn:
        assert reference_problems(current_acd(conn), acd, replace=replace) == []
        apply_acd_import(conn, acd, replace=replace)


def exported(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        return export_acd(conn)


async def connect(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


def test_every_acd_table_and_column_is_commented_and_constraints_are_named(
    migrated_database: DatabaseSettings,
) -> None:
    with psycopg.connect(migrated_database.url) as conn:
        tables = conn.execute(
            "SELECT relname FROM pg_class WHERE relname LIKE 'acd\\_%' AND relkind = 'r'"
            " AND obj_description(oid, 'pg_class') IS NULL"
        ).fetchall()
        columns = conn.execute(
            "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " WHERE c.relname LIKE 'acd\\_%' AND c.relkind = 'r' AND a.attnum > 0"
            " AND NOT a.attisdropped AND col_description(c.oid, a.attnum) IS NULL"
        ).fetchall()
        checks = conn.execute(
            "SELECT conname, conrelid::regclass::text FROM pg_constraint"
            " WHERE contype = 'c' AND conrelid::regclass::text LIKE 'acd\\_%'"
        ).fetchall()
    assert tables == []
    assert columns == []
    assert len(checks) > 20
    assert [name for name, table in checks if not name.startswith(f"{table}_")] == []


def test_record_models_have_the_fields_and_defaults_of_the_acd_models() -> None:
    assert tuple(QueueRecord.model_fields) == tuple(f.name for f in fields(Queue))
    assert QueueRecord(queue_id="q").to_queue() == Queue(queue_id="q")
    membership = MembershipRecord(queue_id="q")
    assert Membership(agent_id="a", **membership.model_dump()) == Membership(
        agent_id="a", queue_id="q"
    )


def test_the_example_imports_and_exports_unchanged(migrated_database: DatabaseSettings) -> None:
    url = migrated_database.url
    import_acd(url, EXAMPLE)
    assert exported(url) == EXAMPLE
    with psycopg.connect(url, autocommit=True) as conn:
        again = apply_acd_import(conn, parsed(exported(url)), replace=True)
    assert (again.queues.added, again.queues.changed, again.queues.removed) == ([], [], [])
    assert (again.agents.added, again.agents.changed, again.agents.removed) == ([], [], [])
    assert again.memberships.added + again.memberships.changed + again.memberships.removed == []
    assert len(again.memberships.unchanged) == 4


async def test_load_acd_gives_the_models_the_app_runs_on(
    migrated_database: DatabaseSettings,
) -> None:
    import_acd(migrated_database.url, EXAMPLE)
    async with await connect(migrated_database.url) as conn:
        config = await load_acd(conn)
    sales, support = config.queues
    assert sales == Queue(
        queue_id="sales",
        name="Продажи",
        strategy="linear",
        ring_timeout_seconds=20,
        max_wait_seconds=120,
        overflow="queue:support",
        wrap_up_seconds=10,
        max_no_answers=3,
    )
    assert (support.strategy, support.callback_enabled, support.max_wait_seconds) == (
        "least_recent",
        True,
        None,
    )
    assert [(a.agent_id, a.account, a.status) for a in config.agents] == [
        ("ivanova", "1101", "offline"),
        ("petrov", "1102", "offline"),
        ("sidorova", "1103", "offline"),
    ]
    assert config.memberships[:2] == (
        Membership(agent_id="ivanova", queue_id="sales"),
        Membership(agent_id="ivanova", queue_id="support", penalty=1),
    )


def test_errors_name_record_and_field_and_the_good_records_are_not_kept() -> None:
    document = example()
    document["queues"][1] |= {"strategy": "longest_idle", "callback_key": "12"}
    document["queues"].append({"queue_id": "vip", "announce_seconds": 5, "overflow": "queue:vip"})
    document["agents"][1] |= {"account": "1102@pbx.example"}
    document["agents"][2]["queues"] = [{"queue_id": "support"}, {"queue_id": "support"}]
    document["agents"].append({"agent_id": "ivanova", "account": "1101", "queues": [
        {"queue_id": "sales", "weight": 0}]})  # fmt: skip
    acd, errors = parse_acd_file(json.dumps(document))
    assert errors == [
        "queue #1 'support': strategy: Input should be 'ring_all', 'linear', 'round_robin',"
        " 'random', 'weighted_random', 'least_recent', 'fewest_calls' or 'least_talk_time'",
        "queue #2 'vip': overflow: a queue cannot overflow into itself",
        "queue #2 'vip': announce_seconds: 0 (never) or 10 to 3600",
        "agent #1 'petrov': account: a SIP account name, without @domain or spaces",
        "agent #2 'sidorova': queues.1.queue_id: 'support' is queues.0",
        "agent #3 'ivanova': queues.0.weight: Input should be greater than or equal to 1",
    ]
    # callback_key is not reported for queue #1: pydantic stopped at the strategy.
    document["queues"][1]["strategy"] = "least_recent"
    _, errors = parse_acd_file(json.dumps({"queues": document["queues"][:2]}))
    assert errors == ["queue #1 'support': callback_key: one DTMF key: 0-9, * or #"]
    assert [q.queue_id for q in acd.queues] == ["sales"]  # only good records, never written


def test_repeated_keys_and_a_bad_shape_are_refused() -> None:
    document = example()
    document["queues"].append(document["queues"][0])
    document["agents"].append({"agent_id": "new", "account": "1101"})
    _, errors = parse_acd_file(json.dumps(document))
    assert errors == [
        "queue #2 'sales': queue_id already used by queue #0 'sales'",
        "agent #3 'new': account already used by agent #0 'ivanova'",
    ]
    _, errors = parse_acd_file(json.dumps({"queues": {}, "members": []}))
    assert errors == [
        "unknown key 'members' (an ACD file has queues and agents)",
        "queues: must be a JSON list",
    ]


def test_unknown_queues_and_taken_accounts_are_refused_by_name(
    migrated_database: DatabaseSettings,
) -> None:
    url = migrated_database.url
    import_acd(url, EXAMPLE)
    incoming = parsed(
        {
            "queues": [{"queue_id": "vip", "overflow": "queue:gold"}],
            "agents": [
                {"agent_id": "kuznetsov", "account": "1103", "queues": [{"queue_id": "sales"}]},
                {"agent_id": "orlov", "account": "1104", "queues": [{"queue_id": "gold"}]},
            ],
        }
    )
    with psycopg.connect(url) as conn:
        current = current_acd(conn)
    assert reference_problems(current, incoming, replace=False) == [
        "queue #0 'vip': overflow: no queue 'gold' in the file or the database",
        "agent #1 'orlov': queues.0.queue_id: no queue 'gold' in the file or the database",
        "agent #0 'kuznetsov': account: '1103' is the account of agent 'sidorova' in the database",
    ]
    # With replace, sidorova goes (her account is free) but so does the queue sales.
    assert reference_problems(current, incoming, replace=True) == [
        "queue #0 'vip': overflow: no queue 'gold' in the file",
        "agent #0 'kuznetsov': queues.0.queue_id: no queue 'sales' in the file",
        "agent #1 'orlov': queues.0.queue_id: no queue 'gold' in the file",
    ]


def test_a_record_postgresql_refuses_leaves_everything_as_it_was(
    migrated_database: DatabaseSettings,
) -> None:
    url = migrated_database.url
    import_acd(url, EXAMPLE)
    document = example()
    document["queues"][0]["name"] = "Sales"
    document["agents"].append({"agent_id": "orlov", "account": "1104", "queues": [
        {"queue_id": "gold"}]})  # fmt: skip
    with psycopg.connect(url, autocommit=True) as conn:
        # The membership check skipped: the foreign key refuses the last record.
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            apply_acd_import(conn, parsed(document), replace=True)
        # A record PostgreSQL alone checks (built around the file's validation).
        bad = parsed(EXAMPLE).model_copy(
            update={
                "queues": (
                    QueueRecord(queue_id="aaa"),
                    QueueRecord.model_construct(
                        **(QueueRecord(queue_id="bbb").model_dump() | {"goodbye": "  "})
                    ),
                )
            }
        )
        with pytest.raises(psycopg.errors.CheckViolation, match="acd_queue_goodbye_not_blank"):
            apply_acd_import(conn, bad, replace=False)
    assert exported(url) == EXAMPLE


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        ("INSERT INTO acd_queue (queue_id) VALUES ('two words')", "acd_queue_id_shape"),
        ("UPDATE acd_queue SET strategy = 'longest_idle'", "acd_queue_strategy_known"),
        ("UPDATE acd_queue SET ring_timeout_seconds = 0", "acd_queue_ring_timeout_range"),
        ("UPDATE acd_queue SET retry_seconds = 601", "acd_queue_retry_range"),
        ("UPDATE acd_queue SET max_wait_seconds = 0.5", "acd_queue_max_wait_range"),
        ("UPDATE acd_queue SET overflow = 'queue: x'", "acd_queue_overflow_shape"),
        ("UPDATE acd_queue SET overflow = '8-800-555'", "acd_queue_overflow_shape"),
        (
            "UPDATE acd_queue SET overflow = 'queue:support' WHERE queue_id = 'support'",
            "acd_queue_overflow_not_itself",
        ),
        ("UPDATE acd_queue SET wrap_up_seconds = -1", "acd_queue_wrap_up_range"),
        ("UPDATE acd_queue SET max_no_answers = 101", "acd_queue_max_no_answers_range"),
        ("UPDATE acd_queue SET music_class = ' '", "acd_queue_music_class_not_blank"),
        ("UPDATE acd_queue SET announce_seconds = 5", "acd_queue_announce_range"),
        ("UPDATE acd_queue SET callback_key = 'A'", "acd_queue_callback_key_dtmf"),
        ("UPDATE acd_queue SET callback_order = 'random'", "acd_queue_callback_order_known"),
        ("UPDATE acd_queue SET service_level_seconds = 0", "acd_queue_service_level_range"),
        ("UPDATE acd_queue SET abandon_short_seconds = 700", "acd_queue_abandon_short_range"),
        ("UPDATE acd_queue SET goodbye = ''", "acd_queue_goodbye_not_blank"),
        ("UPDATE acd_agent SET account = '1101@pbx'", "acd_agent_account_shape"),
        ("UPDATE acd_agent SET status = 'lunch'", "acd_agent_status_known"),
        ("UPDATE acd_agent SET calls_taken = -1", "acd_agent_calls_taken_not_negative"),
        ("UPDATE acd_agent SET talk_seconds = -0.5", "acd_agent_talk_seconds_not_negative"),
        ("UPDATE acd_agent SET no_answers_in_a_row = -1", "acd_agent_no_answers_not_negative"),
        ("UPDATE acd_membership SET penalty = 101", "acd_membership_penalty_range"),
        ("UPDATE acd_membership SET weight = 0", "acd_membership_weight_range"),
        ("UPDATE acd_membership SET position = -1", "acd_membership_position_not_negative"),
        (
            "INSERT INTO acd_callback (callback_id, queue_id, number, waiting_since)"
            " VALUES ('cb', 'sales', '8 913 000', now())",
            "acd_callback_number_dialable",
        ),
        (
            "INSERT INTO acd_callback (callback_id, queue_id, number, waiting_since, state)"
            " VALUES ('cb', 'sales', '+79130000000', now(), 'done')",
            "acd_callback_finished_when_not_waiting",
        ),
        (
            "INSERT INTO acd_callback (callback_id, queue_id, number, waiting_since, state,"
            " finished_at) VALUES ('cb', 'sales', '+79130000000', now(), 'lost', now())",
            "acd_callback_state_known",
        ),
    ],
)
def test_hand_written_sql_is_refused_by_named_checks(
    migrated_database: DatabaseSettings, statement: str, constraint: str
) -> None:
    import_acd(migrated_database.url, EXAMPLE)
    with (
        psycopg.connect(migrated_database.url) as conn,
        pytest.raises(psycopg.errors.CheckViolation) as refused,
    ):
        conn.execute(statement)
    assert refused.value.diag.constraint_name == constraint


def test_accounts_are_unique_but_two_agents_may_swap_them(
    migrated_database: DatabaseSettings,
) -> None:
    url = migrated_database.url
    import_acd(url, EXAMPLE)
    # Deferred: refused at the commit.
    with pytest.raises(psycopg.errors.UniqueViolation), psycopg.connect(url) as conn:
        conn.execute("UPDATE acd_agent SET account = '1101' WHERE agent_id = 'petrov'")
    swapped = example()
    swapped["agents"][0]["account"], swapped["agents"][1]["account"] = "1102", "1101"
    import_acd(url, swapped)
    assert exported(url) == swapped


async def test_saved_agent_status_is_loaded_back(migrated_database: DatabaseSettings) -> None:
    import_acd(migrated_database.url, EXAMPLE)
    async with await connect(migrated_database.url) as conn:
        ivanova, petrov, sidorova = (await load_acd(conn)).agents
        paused = replace(
            ivanova,
            status="paused",
            status_since=NOW,
            paused_reason="no answer",
            last_call_ended_at=NOW - timedelta(minutes=3),
            calls_taken=12,
            talk_seconds=1834.5,
            no_answers_in_a_row=2,
        )
        busy = replace(petrov, status="busy", status_since=NOW, queue_id="sales", waiter_id="w1")
        ghost = replace(sidorova, agent_id="removed-meanwhile", status="free")
        await save_agents(conn, [replace(paused, status="free"), busy, ghost, paused])
        await save_agents(conn, [])
        loaded = (await load_acd(conn)).agents
    # The call the agent is on is the running app's memory, not the table's.
    assert loaded == (paused, replace(busy, queue_id=None, waiter_id=None), sidorova)


async def test_reimport_keeps_the_agents_status_and_updates_the_rest(
    migrated_database: DatabaseSettings,
) -> None:
    url = migrated_database.url
    import_acd(url, EXAMPLE)
    async with await connect(url) as conn:
        ivanova = (await load_acd(conn)).agents[0]
        busy = replace(ivanova, status="busy", status_since=NOW, calls_taken=5, talk_seconds=60)
        await save_agents(conn, [busy])
    changed = example()
    changed["agents"][0] |= {"name": "Анна Иванова-Смирнова", "account": "1201"}
    changed["agents"][0]["queues"] = [{"queue_id": "support", "penalty": 0, "weight": 3,
                                       "position": 0}]  # fmt: skip
    import_acd(url, changed)
    async with await connect(url) as conn:
        config = await load_acd(conn)
    assert config.agents[0] == replace(busy, name="Анна Иванова-Смирнова", account="1201")
    # The agent's queues are exactly the file's: sales is gone, support changed.
    assert [m for m in config.memberships if m.agent_id == "ivanova"] == [
        Membership(agent_id="ivanova", queue_id="support", weight=3)
    ]
    assert exported(url) == changed


def test_replace_deletes_what_the_file_does_not_mention(
    migrated_database: DatabaseSettings,
) -> None:
    url = migrated_database.url
    import_acd(url, EXAMPLE)
    support_only = {
        "queues": [EXAMPLE["queues"][1]],
        "agents": [
            EXAMPLE["agents"][0] | {"queues": [EXAMPLE["agents"][0]["queues"][1]]},
            EXAMPLE["agents"][2],
        ],
    }
    import_acd(url, {"queues": [], "agents": [EXAMPLE["agents"][2]]})  # without replace
    assert exported(url) == EXAMPLE
    import_acd(url, support_only, replace=True)
    assert exported(url) == support_only
    import_acd(url, {}, replace=True)
    assert exported(url) == {"queues": [], "agents": []}


async def test_callback_requests_are_kept_until_finished(
    migrated_database: DatabaseSettings,
) -> None:
    import_acd(migrated_database.url, EXAMPLE)
    early = CallbackRequest(
        callback_id="cb-1",
        queue_id="support",
        number="+79130000001",
        waiting_since=NOW - timedelta(minutes=9),
        requested_at=NOW,
        priority=1,
    )
    late = replace(early, callback_id="cb-2", number="83832000002", waiting_since=NOW)
    gone = replace(early, callback_id="cb-3", waiting_since=NOW - timedelta(hours=1))
    async with await connect(migrated_database.url) as conn:
        for request in (late, early, gone, early):  # the second early is a retry: no error
            await save_callback(conn, request)
        assert await load_callbacks(conn) == [gone, early, late]
        await count_callback_attempt(conn, "cb-1")
        await count_callback_attempt(conn, "cb-1")
        await finish_callback(conn, "cb-3", "cancelled")
        await finish_callback(conn, "cb-2", "done")
        await finish_callback(conn, "cb-2", "failed")  # too late: it was done
        await count_callback_attempt(conn, "cb-2")
        await save_callback(conn, replace(late, queue_id="sales"))  # done: left as it was
        assert await load_callbacks(conn) == [replace(early, attempts=2)]
        moved = replace(early, queue_id="sales", priority=5, attempts=2)  # by a supervisor
        await save_callback(conn, moved)
        assert await load_callbacks(conn) == [moved]
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            await save_callback(conn, replace(early, callback_id="cb-4", queue_id="gold"))
        cursor = await conn.execute(
            "SELECT callback_id, queue_id, state, attempts, finished_at IS NOT NULL"
            " FROM acd_callback ORDER BY callback_id"
        )
        assert await cursor.fetchall() == [
            ("cb-1", "sales", "waiting", 2, False),
            ("cb-2", "support", "done", 0, True),
            ("cb-3", "support", "cancelled", 0, True),
        ]


async def notified(listener: psycopg.AsyncConnection[Any], *, timeout: float = 1.0) -> int:
    """Notifications that arrive within ``timeout`` seconds."""
    return len([n async for n in listener.notifies(timeout=timeout)])


async def test_config_changes_notify_and_status_writes_do_not(
    migrated_database: DatabaseSettings,
) -> None:
    url = migrated_database.url
    async with await connect(url) as listener, await connect(url) as conn:
        await listener.execute("LISTEN acd_config_changed")
        import_acd(url, EXAMPLE)
        # One transaction, many statements: PostgreSQL folds the same notification into one.
        assert await notified(listener) == 1

        agents = (await load_acd(conn)).agents
        await save_agents(conn, [replace(agent, status="free") for agent in agents])
        await conn.execute("UPDATE acd_agent SET calls_taken = 1")
        assert await notified(listener, timeout=0.5) == 0

        for statement in (
            "UPDATE acd_queue SET wrap_up_seconds = 15 WHERE queue_id = 'sales'",
            "UPDATE acd_agent SET name = 'Пётр' WHERE agent_id = 'petrov'",
            "DELETE FROM acd_membership WHERE agent_id = 'petrov'",
            "DELETE FROM acd_agent WHERE agent_id = 'petrov'",
        ):
            await conn.execute(statement)
            assert await notified(listener) == 1, statement


async def test_caller_history_is_newest_first_with_iso_times(
    migrated_database: DatabaseSettings,
) -> None:
    caller = "+79130000001"
    rows = [
        ("c-old", caller, NOW - timedelta(days=2), "answered", "support", "ivanova"),
        ("c-new", caller, NOW - timedelta(minutes=5), "abandoned", "sales", None),
        ("c-mid", caller, NOW - timedelta(days=1), "no_answer", None, None),
        ("c-none", caller, None, None, None, None),
        ("c-other", "+79130000002", NOW, "answered", None, None),
    ]
    with psycopg.connect(migrated_database.url) as conn:
        conn.cursor().executemany(
            "INSERT INTO cdr (call_id, caller, callee, started_at, disposition, queue, agent)"
            " VALUES (%s, %s, '8800', %s, %s, %s, %s)",
            rows,
        )
    async with await connect(migrated_database.url) as conn:
        history = await caller_history(conn, caller)
        assert [row["call_id"] for row in history] == ["c-new", "c-mid", "c-old", "c-none"]
        assert [row["call_id"] for row in await caller_history(conn, caller, limit=2)] == [
            "c-new",
            "c-mid",
        ]
        assert await caller_history(conn, "+70000000000") == []
        with pytest.raises(ValueError):
            await caller_history(conn, caller, limit=0)
    newest = history[0]
    assert newest["started_at"] == (NOW - timedelta(minutes=5)).isoformat()
    assert (newest["disposition"], newest["queue"], newest["agent"]) == ("abandoned", "sales", None)
    assert history[2]["agent"] == "ivanova"
    json.dumps(history)  # JSON as it is


def test_cli_import_export_agents_and_queues(
    migrated_database: DatabaseSettings, tmp_path: Path
) -> None:
    database = migrated_database
    example_file = tmp_path / "acd.json"
    example_file.write_text(EXAMPLE_TEXT)
    dry = softswitch_cli(database, "acd", "import", "--dry-run", str(example_file))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[-3:] == [
        "queues would change: 2 added, 0 changed, 0 removed, 0 unchanged",
        "agents would change: 3 added, 0 changed, 0 removed, 0 unchanged",
        "memberships would change: 4 added, 0 changed, 0 removed, 0 unchanged",
    ]
    assert exported(database.url) == {"queues": [], "agents": []}

    imported = softswitch_cli(database, "acd", "import", str(example_file))
    assert imported.returncode == 0, imported.stderr
    assert "+ membership ivanova support" in imported.stdout.splitlines()
    assert imported.stdout.splitlines()[-1] == (
        "memberships changed: 4 added, 0 changed, 0 removed, 0 unchanged"
    )
    assert json.loads(softswitch_cli(database, "acd", "export").stdout) == EXAMPLE

    agents = softswitch_cli(database, "acd", "agents").stdout.splitlines()
    assert agents[0].split() == ["agent", "account", "status", "since", "queues"]
    assert agents[1].split()[:3] == ["ivanova", "1101", "offline"]
    assert agents[1].endswith("  sales, support")
    queues = softswitch_cli(database, "acd", "queues").stdout.splitlines()
    assert queues[1:] == [
        "sales                linear                 2  Продажи",
        "support              least_recent           2  Техподдержка",
    ]


def test_cli_import_names_record_and_field_and_writes_nothing(
    migrated_database: DatabaseSettings, tmp_path: Path
) -> None:
    bad = example()
    bad["queues"][1]["ring_timeout_seconds"] = 0
    bad["agents"][2]["queues"].append({"queue_id": "gold"})
    acd_file = tmp_path / "acd.json"
    acd_file.write_text(json.dumps(bad))
    result = softswitch_cli(migrated_database, "acd", "import", str(acd_file))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: queue #1 'support': ring_timeout_seconds: Input should be greater than or"
        " equal to 1",
        "1 error(s); nothing imported",
    ]
    bad["queues"][1]["ring_timeout_seconds"] = 15
    acd_file.write_text(json.dumps(bad))
    result = softswitch_cli(migrated_database, "acd", "import", str(acd_file))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: agent #2 'sidorova': queues.1.queue_id: no queue 'gold' in the file or the"
        " database",
        "1 error(s); nothing imported",
    ]
    assert exported(migrated_database.url) == {"queues": [], "agents": []}
