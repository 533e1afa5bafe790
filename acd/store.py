"""The only SQL of the ACD: loading queues, agents and memberships, persisting the agents'
runtime status and the callback requests, a caller's history, and JSON import/export.

The ACD app loads its configuration with ``load_acd`` at start and again on NOTIFY
acd_config_changed (sent by triggers on every change of queues, memberships and the agents'
account or name, but not of their status, which the app writes itself with ``save_agents``).

The import works like `sos import`: the whole file is checked first (every error names its
record and field, with the checks of the tables' constraints), then written in one
transaction, upserting by key; ``replace`` also deletes what the file does not mention. An
agent's status and counters belong to the running ACD and are never touched by an import.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import pq
from psycopg.rows import class_row, dict_row
from pydantic import BaseModel, ConfigDict, Field

from acd.models import (
    Agent,
    CallbackOrder,
    CallbackRequest,
    Membership,
    Queue,
    Strategy,
)
from softswitch.directory.store import (
    KeyedDiff,
    diff_by_key,
    parse_document,
    parse_records,
    reused_keys,
)

CallbackState = Literal["done", "failed", "cancelled"]
MembershipKey = tuple[str, str]  # agent_id, queue_id

# The same shapes as the CHECK constraints of sql/migrations/0007_acd.sql.
_KEY = re.compile(r"\S+")
_ACCOUNT = re.compile(r"[^@\s]+")
_OVERFLOW = re.compile(r"queue:\S+|sips?:\S+|\+?[0-9*#]{1,32}")
_DTMF = re.compile(r"[0-9*#]")
_NOT_BLANK = re.compile(r"\S")
_MAX_INTEGER = 2**31 - 1  # PostgreSQL integer


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class QueueRecord(_Record):
    """A queue as the import file lists it: the fields and defaults of ``acd.models.Queue``."""

    queue_id: str
    name: str = ""
    strategy: Strategy = "ring_all"
    ring_timeout_seconds: float = Field(default=15.0, ge=1, le=600)
    retry_seconds: float = Field(default=5.0, ge=0, le=600)
    max_wait_seconds: float | None = Field(default=None, ge=1, le=86400)
    overflow: str | None = None
    wrap_up_seconds: float = Field(default=0.0, ge=0, le=3600)
    max_no_answers: int = Field(default=0, ge=0, le=100)
    music_class: str = "default"
    announce_seconds: float = 0.0
    callback_enabled: bool = False
    callback_key: str = "1"
    callback_order: CallbackOrder = "agent_first"
    service_level_seconds: float = Field(default=20.0, ge=1, le=3600)
    abandon_short_seconds: float = Field(default=5.0, ge=0, le=600)
    goodbye: str = "sound:vm-goodbye"

    def to_queue(self) -> Queue:
        return Queue(**self.model_dump())


class MembershipRecord(_Record):
    """One queue of an agent in the import file."""

    queue_id: str
    penalty: int = Field(default=0, ge=0, le=100)
    weight: int = Field(default=1, ge=1, le=1000)
    position: int = Field(default=0, ge=0, le=_MAX_INTEGER)


class AgentRecord(_Record):
    """An agent as the import file lists it, with its queues (its status is not the file's
    business: the running ACD owns it)."""

    agent_id: str
    account: str
    name: str = ""
    queues: tuple[MembershipRecord, ...] = ()


class AcdFile(_Record):
    """Every queue and agent, as `acd import` reads them and `acd export` writes them."""

    queues: tuple[QueueRecord, ...] = ()
    agents: tuple[AgentRecord, ...] = ()


@dataclass(frozen=True)
class AcdConfig:
    """What the ACD app runs on: the queues, the agents with their persisted status and
    counters, and who serves which queue."""

    queues: tuple[Queue, ...]
    agents: tuple[Agent, ...]
    memberships: tuple[Membership, ...]


@dataclass(frozen=True)
class AcdPlan:
    """What an import changes (the diff a dry run prints)."""

    queues: KeyedDiff[str]
    agents: KeyedDiff[str]
    memberships: KeyedDiff[MembershipKey]


# The running ACD.

_QUEUE_FIELDS = tuple(QueueRecord.model_fields)
_QUEUE_COLUMNS = ", ".join(_QUEUE_FIELDS)
_AGENT_STATUS_FIELDS = (
    "status",
    "status_since",
    "paused_reason",
    "last_call_ended_at",
    "calls_taken",
    "talk_seconds",
    "no_answers_in_a_row",
)
_AGENT_COLUMNS = ", ".join(("agent_id", "account", "name", *_AGENT_STATUS_FIELDS))
_MEMBERSHIP_COLUMNS = "agent_id, queue_id, penalty, weight, position"
_CALLBACK_COLUMNS = "callback_id, queue_id, number, waiting_since, requested_at, priority, attempts"

# COLLATE "C": the same order whatever the database's collation, and as Python sorts.
_SELECT_QUEUES = f'SELECT {_QUEUE_COLUMNS} FROM acd_queue ORDER BY queue_id COLLATE "C"'
_SELECT_MEMBERSHIPS = (
    f"SELECT {_MEMBERSHIP_COLUMNS} FROM acd_membership"
    ' ORDER BY agent_id COLLATE "C", queue_id COLLATE "C"'
)

_SAVE_AGENTS = f"""
UPDATE acd_agent a
SET {", ".join(f"{field} = s.{field}" for field in _AGENT_STATUS_FIELDS)}
FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::text[], %s::timestamptz[],
            %s::integer[], %s::float8[], %s::integer[])
    AS s(agent_id, {", ".join(_AGENT_STATUS_FIELDS)})
WHERE a.agent_id = s.agent_id
"""

_CALLER_HISTORY = """
SELECT call_id, caller, callee, route, started_at, answered_at, ended_at, wait_seconds,
       talk_seconds, disposition, cause, queue, agent
FROM cdr
WHERE caller = %s
ORDER BY started_at DESC NULLS LAST, call_id DESC
LIMIT %s
"""


async def load_acd(conn: psycopg.AsyncConnection[Any]) -> AcdConfig:
    """Every queue, agent (with its persisted status and counters) and membership."""
    outermost = conn.info.transaction_status == pq.TransactionStatus.IDLE
    async with conn.transaction():
        if outermost:
            # One snapshot for the three reads: an import committing between them would
            # otherwise give memberships of queues this load does not have.
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        async with conn.cursor(row_factory=class_row(Queue)) as cursor:
            await cursor.execute(_SELECT_QUEUES)
            queues = tuple(await cursor.fetchall())
        async with conn.cursor(row_factory=class_row(Agent)) as agent_cursor:
            await agent_cursor.execute(
                f'SELECT {_AGENT_COLUMNS} FROM acd_agent ORDER BY agent_id COLLATE "C"'
            )
            agents = tuple(await agent_cursor.fetchall())
        async with conn.cursor(row_factory=class_row(Membership)) as membership_cursor:
            await membership_cursor.execute(_SELECT_MEMBERSHIPS)
            memberships = tuple(await membership_cursor.fetchall())
    return AcdConfig(queues=queues, agents=agents, memberships=memberships)


async def save_agents(conn: psycopg.AsyncConnection[Any], agents: Sequence[Agent]) -> None:
    """Persist the status and counters of ``agents`` in one statement; agents no longer in
    the table (removed by an import meanwhile) are skipped. The agents' account and name are
    left alone, so this write sends no acd_config_changed."""
    # The last state of an agent listed twice wins (an UPDATE ... FROM would pick either).
    latest = list({agent.agent_id: agent for agent in agents}.values())
    if not latest:
        return
    await conn.execute(
        _SAVE_AGENTS,
        (
            [agent.agent_id for agent in latest],
            [agent.status for agent in latest],
            [agent.status_since for agent in latest],
            [agent.paused_reason for agent in latest],
            [agent.last_call_ended_at for agent in latest],
            [agent.calls_taken for agent in latest],
            [agent.talk_seconds for agent in latest],
            [agent.no_answers_in_a_row for agent in latest],
        ),
    )


async def load_callbacks(conn: psycopg.AsyncConnection[Any]) -> list[CallbackRequest]:
    """The callback requests still waiting, the longest-waiting caller first."""
    async with conn.cursor(row_factory=class_row(CallbackRequest)) as cursor:
        await cursor.execute(
            f"SELECT {_CALLBACK_COLUMNS} FROM acd_callback WHERE state = 'waiting'"
            " ORDER BY waiting_since, callback_id"
        )
        return await cursor.fetchall()


async def save_callback(conn: psycopg.AsyncConnection[Any], request: CallbackRequest) -> None:
    """Keep a caller's callback request, or its new queue/priority after a supervisor's
    change. Idempotent (a KeptConnection whose connection died after the commit runs it
    again); a request no longer waiting (done, failed, cancelled) is left as it is."""
    await conn.execute(
        f"INSERT INTO acd_callback ({_CALLBACK_COLUMNS})"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (callback_id) DO UPDATE SET"
        " queue_id = EXCLUDED.queue_id, priority = EXCLUDED.priority,"
        " attempts = EXCLUDED.attempts WHERE acd_callback.state = 'waiting'",
        (
            request.callback_id,
            request.queue_id,
            request.number,
            request.waiting_since,
            request.requested_at,
            request.priority,
            request.attempts,
        ),
    )


async def finish_callback(
    conn: psycopg.AsyncConnection[Any], callback_id: str, state: CallbackState
) -> None:
    """End a waiting callback request as ``state``; a request already finished keeps its
    first ending (a late "failed" must not undo "done")."""
    await conn.execute(
        "UPDATE acd_callback SET state = %s, finished_at = now()"
        " WHERE callback_id = %s AND state = 'waiting'",
        (state, callback_id),
    )


async def count_callback_attempt(conn: psycopg.AsyncConnection[Any], callback_id: str) -> None:
    """One more callback of a waiting request did not reach the caller."""
    await conn.execute(
        "UPDATE acd_callback SET attempts = attempts + 1"
        " WHERE callback_id = %s AND state = 'waiting'",
        (callback_id,),
    )


async def caller_history(
    conn: psycopg.AsyncConnection[Any], number: str, limit: int = 20
) -> list[dict[str, Any]]:
    """The last ``limit`` CDRs of calls from ``number``, newest first (calls not started yet
    last), as JSON values: times as ISO 8601 strings."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(_CALLER_HISTORY, (number, limit))
        rows = await cursor.fetchall()
    return [
        {
            column: value.isoformat() if isinstance(value, datetime) else value
            for column, value in row.items()
        }
        for row in rows
    ]


# Import and export of queues, agents and memberships.


def queue_problems(queue: QueueRecord) -> list[str]:
    """What the acd_queue constraints would refuse (beyond the model's ranges), as
    'field: why'."""
    checks = (
        ("queue_id", _KEY.fullmatch(queue.queue_id), "a key without spaces"),
        (
            "overflow",
            queue.overflow is None or _OVERFLOW.fullmatch(queue.overflow),
            "queue:<queue_id>, a sip:/sips: URI, or up to 32 digits, * and # with an optional"
            " leading +",
        ),
        (
            "overflow",
            queue.overflow != f"queue:{queue.queue_id}",
            "a queue cannot overflow into itself",
        ),
        ("music_class", _NOT_BLANK.search(queue.music_class), "must not be blank"),
        (
            "announce_seconds",
            queue.announce_seconds == 0 or 10 <= queue.announce_seconds <= 3600,
            "0 (never) or 10 to 3600",
        ),
        ("callback_key", _DTMF.fullmatch(queue.callback_key), "one DTMF key: 0-9, * or #"),
        ("goodbye", _NOT_BLANK.search(queue.goodbye), "must not be blank"),
    )
    return [f"{field}: {why}" for field, good, why in checks if not good]


def agent_problems(agent: AgentRecord) -> list[str]:
    """What the acd_agent and acd_membership constraints would refuse, as 'field: why'."""
    problems = []
    if not _KEY.fullmatch(agent.agent_id):
        problems.append("agent_id: a key without spaces")
    if not _ACCOUNT.fullmatch(agent.account):
        problems.append("account: a SIP account name, without @domain or spaces")
    first_of: dict[str, int] = {}
    for index, membership in enumerate(agent.queues):
        first = first_of.setdefault(membership.queue_id, index)
        if first != index:
            problems.append(f"queues.{index}.queue_id: {membership.queue_id!r} is queues.{first}")
    return problems


def parse_acd_file(text: str) -> tuple[AcdFile, list[str]]:
    """The queues and agents in a JSON file, and every error naming its record and field.

    The file is usable only when the error list is empty.
    """
    document, errors = parse_document(text, "an ACD file", ("queues", "agents"))
    queues, queue_errors = parse_records(
        document, "queues", QueueRecord, ("queue_id",), queue_problems
    )
    agents, agent_errors = parse_records(
        document, "agents", AgentRecord, ("agent_id",), agent_problems
    )
    errors += queue_errors + agent_errors
    errors += reused_keys(queues, "queue_id", lambda queue: queue.queue_id)
    errors += reused_keys(agents, "agent_id", lambda agent: agent.agent_id)
    errors += reused_keys(agents, "account", lambda agent: agent.account)
    return AcdFile(
        queues=tuple(queue for _, queue in queues), agents=tuple(agent for _, agent in agents)
    ), errors


def reference_problems(current: AcdFile, incoming: AcdFile, *, replace: bool) -> list[str]:
    """What a parsed file names that will not exist, labelled as the parse labels them:
    queues of memberships and overflows that are neither in the file nor (without
    ``replace``) in the database, and accounts of agents the import keeps."""
    queues = {queue.queue_id for queue in incoming.queues}
    where = " in the file" if replace else " in the file or the database"
    if not replace:
        queues |= {queue.queue_id for queue in current.queues}
    problems = [
        f"queue #{index} {queue.queue_id!r}: overflow: no queue"
        f" {queue.overflow.removeprefix('queue:')!r}{where}"
        for index, queue in enumerate(incoming.queues)
        if queue.overflow is not None
        and queue.overflow.startswith("queue:")
        and queue.overflow.removeprefix("queue:") not in queues
    ]
    problems += [
        f"agent #{index} {agent.agent_id!r}: queues.{position}.queue_id:"
        f" no queue {membership.queue_id!r}{where}"
        for index, agent in enumerate(incoming.agents)
        for position, membership in enumerate(agent.queues)
        if membership.queue_id not in queues
    ]
    in_file = {agent.agent_id for agent in incoming.agents}
    kept_accounts = (
        {}
        if replace
        else {
            agent.account: agent.agent_id
            for agent in current.agents
            if agent.agent_id not in in_file
        }
    )
    problems += [
        f"agent #{index} {agent.agent_id!r}: account: {agent.account!r} is the account of"
        f" agent {kept_accounts[agent.account]!r} in the database"
        for index, agent in enumerate(incoming.agents)
        if agent.account in kept_accounts
    ]
    return problems


def _memberships(
    file: AcdFile, agent_ids: set[str] | None = None
) -> dict[MembershipKey, MembershipRecord]:
    return {
        (agent.agent_id, membership.queue_id): membership
        for agent in file.agents
        if agent_ids is None or agent.agent_id in agent_ids
        for membership in agent.queues
    }


def plan_acd_import(current: AcdFile, incoming: AcdFile, *, replace: bool) -> AcdPlan:
    """Queues by queue_id, agents (account and name) by agent_id, memberships by agent and
    queue. An agent in the file has exactly the queues the file lists; agents not in the
    file keep theirs (unless ``replace`` removes the agent)."""
    in_file = {agent.agent_id for agent in incoming.agents}
    return AcdPlan(
        queues=diff_by_key(
            {queue.queue_id: queue for queue in current.queues},
            {queue.queue_id: queue for queue in incoming.queues},
            replace=replace,
        ),
        agents=diff_by_key(
            {agent.agent_id: (agent.account, agent.name) for agent in current.agents},
            {agent.agent_id: (agent.account, agent.name) for agent in incoming.agents},
            replace=replace,
        ),
        memberships=diff_by_key(
            _memberships(current, None if replace else in_file),
            _memberships(incoming),
            replace=True,
        ),
    )


def current_acd(conn: psycopg.Connection[Any]) -> AcdFile:
    """Every queue and agent with its queues, in export order."""
    with conn.cursor(row_factory=dict_row) as cursor:
        queue_rows = cursor.execute(_SELECT_QUEUES).fetchall()
        agent_rows = cursor.execute(
            'SELECT agent_id, account, name FROM acd_agent ORDER BY agent_id COLLATE "C"'
        ).fetchall()
        membership_rows = cursor.execute(_SELECT_MEMBERSHIPS).fetchall()
    queues_of: dict[str, list[MembershipRecord]] = {row["agent_id"]: [] for row in agent_rows}
    for row in membership_rows:
        queues_of[row.pop("agent_id")].append(MembershipRecord.model_validate(row))
    return AcdFile(
        queues=tuple(QueueRecord.model_validate(row) for row in queue_rows),
        agents=tuple(
            AgentRecord.model_validate(row | {"queues": tuple(queues_of[row["agent_id"]])})
            for row in agent_rows
        ),
    )


def export_acd(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Queues and agents as the JSON `acd import` reads (export then import is a no-op)."""
    return current_acd(conn).model_dump(mode="json", exclude_none=True)


_UPSERT_QUEUE = (
    f"INSERT INTO acd_queue ({_QUEUE_COLUMNS})"
    f" VALUES ({', '.join(f'%({field})s' for field in _QUEUE_FIELDS)})"
    " ON CONFLICT (queue_id) DO UPDATE SET "
    + ", ".join(f"{field} = EXCLUDED.{field}" for field in _QUEUE_FIELDS[1:])
)
# Only account and name: the status columns of an existing agent are the running ACD's.
_UPSERT_AGENT = (
    "INSERT INTO acd_agent (agent_id, account, name) VALUES (%s, %s, %s)"
    " ON CONFLICT (agent_id) DO UPDATE SET account = EXCLUDED.account, name = EXCLUDED.name"
)
_UPSERT_MEMBERSHIP = (
    f"INSERT INTO acd_membership ({_MEMBERSHIP_COLUMNS}) VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (agent_id, queue_id) DO UPDATE SET"
    " penalty = EXCLUDED.penalty, weight = EXCLUDED.weight, position = EXCLUDED.position"
)


def apply_acd_import(conn: psycopg.Connection[Any], file: AcdFile, *, replace: bool) -> AcdPlan:
    """Write the file in one transaction (all or nothing); upsert by key, optionally replace.

    Existing agents keep their status and counters. Removing a queue removes its memberships
    and callback requests. Raises psycopg.errors.IntegrityError when PostgreSQL refuses a
    record (for example a membership of a queue that is nowhere: see reference_problems).
    """
    with conn.transaction(), conn.cursor() as cursor:
        # Serialises imports. The running ACD never writes acd_queue, so its status writes
        # and callback requests go on meanwhile.
        cursor.execute("LOCK TABLE acd_queue IN SHARE ROW EXCLUSIVE MODE")
        plan = plan_acd_import(current_acd(conn), file, replace=replace)
        if plan.memberships.removed:
            cursor.execute(
                "DELETE FROM acd_membership WHERE (agent_id, queue_id) IN"
                " (SELECT * FROM unnest(%s::text[], %s::text[]))",
                (
                    [agent_id for agent_id, _ in plan.memberships.removed],
                    [queue_id for _, queue_id in plan.memberships.removed],
                ),
            )
        if plan.agents.removed:
            cursor.execute("DELETE FROM acd_agent WHERE agent_id = ANY(%s)", (plan.agents.removed,))
        if plan.queues.removed:
            cursor.execute("DELETE FROM acd_queue WHERE queue_id = ANY(%s)", (plan.queues.removed,))
        queues = {queue.queue_id: queue for queue in file.queues}
        cursor.executemany(
            _UPSERT_QUEUE,
            [queues[key].model_dump() for key in plan.queues.added + plan.queues.changed],
        )
        agents = {agent.agent_id: agent for agent in file.agents}
        cursor.executemany(
            _UPSERT_AGENT,
            [
                (key, agents[key].account, agents[key].name)
                for key in plan.agents.added + plan.agents.changed
            ],
        )
        memberships = _memberships(file)
        cursor.executemany(
            _UPSERT_MEMBERSHIP,
            [
                (agent_id, queue_id, m.penalty, m.weight, m.position)
                for agent_id, queue_id in plan.memberships.added + plan.memberships.changed
                for m in (memberships[agent_id, queue_id],)
            ],
        )
    return plan
