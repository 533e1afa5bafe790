"""ACD configuration: queues, agents with their queues (memberships), the whole-file import.

Checks and writes are ``acd.store``'s, as `softswitch acd import`: an agent's status and
counters belong to the running ACD and are never written here; the ACD app reloads on every
change (NOTIFY acd_config_changed). Live queues and supervisor actions: ``live.py``.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from acd.store import (
    AcdFile,
    AgentRecord,
    QueueRecord,
    agent_problems,
    apply_acd_import,
    current_acd,
    parse_acd_file,
    plan_acd_import,
    queue_problems,
    reference_problems,
)
from softswitch.admin.auth import ADMINISTER, READ
from softswitch.admin.context import Db
from softswitch.admin.errors import ApiError
from softswitch.admin.models import ImportResult, import_result
from softswitch.admin.records import (
    ERRORS,
    NOT_FOUND,
    WRITE_ERRORS,
    DryRun,
    RawBody,
    Replace,
    body_text,
    created_if,
    deleted,
    find,
    refuse_conflicts,
    refuse_import_errors,
    refuse_invalid,
    same_key,
)
from softswitch.admin.store import QueueInUse, delete_agent, delete_queue

router = APIRouter(tags=["ACD configuration"])


@router.get("/queues", dependencies=[READ], responses=ERRORS)
def list_queues(conn: Db) -> list[QueueRecord]:
    return list(current_acd(conn).queues)


@router.get("/queues/{queue_id:path}", dependencies=[READ], responses={**ERRORS, **NOT_FOUND})
def get_queue(queue_id: str, conn: Db) -> QueueRecord:
    return find(current_acd(conn).queues, lambda q: q.queue_id == queue_id, f"queue {queue_id!r}")


@router.put("/queues/{queue_id:path}", dependencies=[ADMINISTER], responses=WRITE_ERRORS)
def put_queue(queue_id: str, queue: QueueRecord, conn: Db, response: Response) -> QueueRecord:
    """Create or replace one queue (an overflow queue:<id> must exist)."""
    same_key("queue_id", queue.queue_id, queue_id)
    refuse_invalid(queue_problems(queue))
    one = AcdFile(queues=(queue,))
    refuse_conflicts(reference_problems(current_acd(conn), one, replace=False), single=True)
    plan = apply_acd_import(conn, one, replace=False)
    created_if(response, bool(plan.queues.added))
    return queue


@router.delete(
    "/queues/{queue_id:path}",
    dependencies=[ADMINISTER],
    status_code=204,
    responses={**ERRORS, **NOT_FOUND, 409: WRITE_ERRORS[409]},
)
def remove_queue(queue_id: str, conn: Db) -> Response:
    """Delete a queue with its memberships and callback requests (409 while another queue
    overflows into it)."""
    try:
        done = delete_queue(conn, queue_id)
    except QueueInUse as exc:
        raise ApiError(409, str(exc)) from None
    return deleted(done, f"queue {queue_id!r}")


@router.get("/agents", dependencies=[READ], responses=ERRORS)
def list_agents(conn: Db) -> list[AgentRecord]:
    """Every agent with its queues (live status: GET /acd/agents)."""
    return list(current_acd(conn).agents)


@router.get("/agents/{agent_id:path}", dependencies=[READ], responses={**ERRORS, **NOT_FOUND})
def get_agent(agent_id: str, conn: Db) -> AgentRecord:
    return find(current_acd(conn).agents, lambda a: a.agent_id == agent_id, f"agent {agent_id!r}")


@router.put("/agents/{agent_id:path}", dependencies=[ADMINISTER], responses=WRITE_ERRORS)
def put_agent(agent_id: str, agent: AgentRecord, conn: Db, response: Response) -> AgentRecord:
    """Create or replace one agent; it serves exactly the queues listed (which must exist),
    and keeps its status and counters."""
    same_key("agent_id", agent.agent_id, agent_id)
    refuse_invalid(agent_problems(agent))
    one = AcdFile(agents=(agent,))
    refuse_conflicts(reference_problems(current_acd(conn), one, replace=False), single=True)
    plan = apply_acd_import(conn, one, replace=False)
    created_if(response, bool(plan.agents.added))
    return agent


@router.delete(
    "/agents/{agent_id:path}",
    dependencies=[ADMINISTER],
    status_code=204,
    responses={**ERRORS, **NOT_FOUND},
)
def remove_agent(agent_id: str, conn: Db) -> Response:
    """Delete an agent and its memberships."""
    return deleted(delete_agent(conn, agent_id), f"agent {agent_id!r}")


@router.post("/acd/import", dependencies=[ADMINISTER], responses=WRITE_ERRORS)
def import_acd(
    acd: AcdFile, raw: RawBody, conn: Db, replace: Replace = False, dry_run: DryRun = False
) -> ImportResult:
    """Validate every queue and agent, then write all of them in one transaction, or none
    (`softswitch acd import`); the body is what `softswitch acd export` prints."""
    del acd  # validated by FastAPI with the store's models; the store parses the body
    incoming, errors = parse_acd_file(body_text(raw))
    refuse_import_errors(errors)
    current = current_acd(conn)
    refuse_conflicts(reference_problems(current, incoming, replace=replace), single=False)
    if dry_run:
        plan = plan_acd_import(current, incoming, replace=replace)
    else:
        plan = apply_acd_import(conn, incoming, replace=replace)
    return import_result(
        dry_run=dry_run, queues=plan.queues, agents=plan.agents, memberships=plan.memberships
    )
