"""ACD queues end to end: sipp callers dial a queue, registered sipp agents answer (or not).

Real Kamailio, Asterisk, PostgreSQL and our `softswitch ari --app acd`; the queues, agents
and SIP accounts are the test's own and removed after. Supervisor actions, statuses and KPIs
go through `softswitch admin serve` with a supervisor's token, which fronts the app's own
supervisor API: every action of a supervisor is exercised against the running app.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from softswitch.accounts import upsert_account
from softswitch.admin.auth import new_token, token_digest
from softswitch.admin.store import add_token
from softswitch.settings import Settings
from tests.conftest import free_tcp_port
from tests.e2e.conftest import RoutingServiceHandle, ServiceProcess, ari_apps, start_service
from tests.e2e.sipp import SippResult, SippServer, run_sipp, sipp_server

pytestmark = pytest.mark.e2e

RING_SECONDS = 3


@dataclass
class QueueFixture:
    settings: Settings
    tag: str
    queue: str
    other_queue: str
    service: str
    agents: dict[str, tuple[str, str]]  # agent id -> (account, password)
    customer: tuple[str, str]
    routing: RoutingServiceHandle
    api: str = ""
    """The admin API's /api/v1."""
    token: str = ""
    """A supervisor's token for it."""
    workdir: Path = Path()
    stack: ExitStack = field(default_factory=ExitStack)

    @property
    def kamailio(self) -> str:
        return f"{self.settings.kamailio.sip_ip}:{self.settings.kamailio.sip_port}"

    def register(self, account: str, password: str, port: int) -> None:
        registration = run_sipp(
            "register_auth.xml",
            self.kamailio,
            service=account,
            workdir=self.workdir,
            timeout_s=10,
            extra=("-au", account, "-ap", password, "-key", "contact_port", str(port)),
        )
        assert (registration.successful, registration.failed) == (1, 0), registration.output

    def phone(
        self, account: tuple[str, str], scenario: str, values: dict[str, str] | None = None
    ) -> SippServer:
        """A registered sipp phone of ``account`` answering one call with ``scenario``."""
        server = self.stack.enter_context(
            sipp_server(scenario, workdir=self.workdir, values=values, timeout_s=40)
        )
        self.register(*account, server.port)
        return server

    def agent_phone(
        self, agent_id: str, scenario: str, values: dict[str, str] | None = None
    ) -> SippServer:
        return self.phone(self.agents[agent_id], scenario, values)

    def call(self, scenario: str, caller: str, *extra: str, timeout_s: int = 40) -> SippResult:
        return run_sipp(
            scenario,
            self.kamailio,
            service=self.service,
            workdir=self.workdir,
            timeout_s=timeout_s,
            extra=("-key", "caller", caller, *extra),
        )

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.request(method, f"{self.api}{path}", json=body, headers=headers, timeout=5)

    def get(self, path: str) -> Any:
        response = self.request("GET", path)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.request("POST", path, body or {})

    def login(self, *agent_ids: str) -> None:
        for agent_id in agent_ids:
            response = self.post(f"/acd/agents/{agent_id}/status", {"action": "login"})
            assert response.status_code == 200, response.text

    def waiting(self, queue: str | None = None) -> list[dict[str, Any]]:
        [view] = [
            q for q in self.get("/acd/queues")["queues"] if q["queue_id"] == (queue or self.queue)
        ]
        return [w for w in view["waiters"] if w["state"] in ("waiting", "ringing")]

    def agent(self, agent_id: str) -> dict[str, Any]:
        agents: list[dict[str, Any]] = self.get("/acd/agents")["agents"]
        [found] = [a for a in agents if a["agent_id"] == agent_id]
        return found

    def kpi(self) -> dict[str, Any]:
        kpi: dict[str, Any] = self.get("/acd/kpi")["queues"][self.queue]
        return kpi


def eventually(check: Callable[[], Any], timeout: float = 10, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (AssertionError, KeyError, ValueError, httpx.HTTPError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what or check}")
        time.sleep(0.1)


@pytest.fixture
def acd(
    stack_settings: Settings, routing: RoutingServiceHandle, tmp_path: Path
) -> Iterator[QueueFixture]:
    """Two queues (linear, callbacks on key 1), agents a1 and a2 in the first, a customer."""
    tag = secrets.token_hex(3)
    digits = str(int(tag, 16)).zfill(8)[-8:]
    queue, other = f"q{tag}", f"q{tag}b"
    agents = {
        f"a1{tag}": (f"71{digits}", secrets.token_hex(6)),
        f"a2{tag}": (f"72{digits}", secrets.token_hex(6)),
    }
    customer = (f"79{digits}", secrets.token_hex(6))
    url, domain = stack_settings.database.url, stack_settings.kamailio.sip_domain
    accounts = [account for account, _ in (*agents.values(), customer)]
    for account, password in (*agents.values(), customer):
        upsert_account(url, account, domain, password)
    with psycopg.connect(url) as conn:
        for queue_id in (queue, other):
            conn.execute(
                "INSERT INTO acd_queue (queue_id, name, strategy, ring_timeout_seconds,"
                " retry_seconds, callback_enabled, callback_key, wrap_up_seconds)"
                " VALUES (%s, %s, 'linear', %s, 5, true, '1', 0)",
                (queue_id, f"e2e {queue_id}", RING_SECONDS),
            )
        for position, (agent_id, (account, _)) in enumerate(agents.items()):
            conn.execute(
                "INSERT INTO acd_agent (agent_id, account, name) VALUES (%s, %s, %s)",
                (agent_id, account, f"Agent {position + 1}"),
            )
            conn.execute(
                "INSERT INTO acd_membership (agent_id, queue_id, position) VALUES (%s, %s, %s)",
                (agent_id, queue, position),
            )
    service = f"acd{tag}"
    routing.add_routes(
        {
            "name": f"e2e: queue {queue}",
            "priority": 40,
            "match": {"callee": f"^{service}$"},
            "action": "app",
            "app": "acd",
            "app_args": [queue],
        },
        {
            "name": f"e2e: customer {customer[0]}",
            "priority": 41,
            "match": {"callee": f"^{customer[0]}$"},
            "action": "relay",
            "destinations": [f"sip:{customer[0]}@{domain}"],
        },
    )
    fixture = QueueFixture(stack_settings, tag, queue, other, service, agents, customer, routing)
    fixture.workdir = tmp_path
    with fixture.stack:
        yield fixture
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM acd_queue WHERE queue_id = ANY(%s)", ([queue, other],))
        conn.execute("DELETE FROM acd_agent WHERE agent_id = ANY(%s)", (list(agents),))
        conn.execute("DELETE FROM subscriber WHERE username = ANY(%s)", (accounts,))
        conn.execute("DELETE FROM location WHERE username = ANY(%s)", (accounts,))


def token(acd: QueueFixture, role: str) -> str:
    secret = new_token()
    with psycopg.connect(acd.settings.database.url) as conn:
        add_token(conn, f"e2e-{acd.tag}-{role}", role, token_digest(secret))
    return secret


@pytest.fixture
def acd_app(acd: QueueFixture, tmp_path: Path) -> Iterator[ServiceProcess]:
    """The ACD app, and the admin API in front of its supervisor API."""
    ports = {"SOFTSWITCH_ACD_API_PORT": str(free_tcp_port())}
    admin_port = free_tcp_port()
    acd.api = f"http://127.0.0.1:{admin_port}/api/v1"
    acd.token = token(acd, "supervisor")
    admin = start_service(
        ["admin", "serve"], tmp_path / "admin.log", SOFTSWITCH_ADMIN_PORT=str(admin_port), **ports
    )
    try:
        with ari_apps(
            ["acd"], tmp_path / "ari.log", SOFTSWITCH_ACD_PHONE_CHECK_SECONDS="1", **ports
        ) as service:
            eventually(lambda: acd.get("/acd/kpi"), what="admin API and supervisor API up")
            yield service
    finally:
        assert admin.stop() == 0, admin.log_path.read_text()[-4000:]
        with psycopg.connect(acd.settings.database.url) as conn:
            conn.execute("DELETE FROM admin_token WHERE name LIKE %s", (f"e2e-{acd.tag}-%",))


def outbox(
    settings: Settings, call_ids: list[str] | None = None, kinds: str = "acd.%"
) -> list[dict[str, Any]]:
    with psycopg.connect(settings.database.url) as conn:
        rows = conn.execute(
            "SELECT payload FROM event_outbox WHERE routing_key LIKE %s ORDER BY id", (kinds,)
        ).fetchall()
    events = [row[0] for row in rows]
    return [e for e in events if call_ids is None or e.get("call_id") in call_ids]


def from_number(message: str) -> str:
    match = re.search(r"^From:.*?sip:([^@>;]+)", message, flags=re.MULTILINE)
    assert match, message
    return match.group(1)


def test_the_first_agent_of_a_linear_queue_answers_and_kpis_count_the_call(
    acd: QueueFixture, acd_app: ServiceProcess
) -> None:
    a1, a2 = acd.agents
    phone = acd.agent_phone(a1, "uas_ring_then_answer.tmpl.xml", {"ANSWER_MS": "400"})
    acd.login(a1, a2)  # a2 has no phone registered: linear rings a1 first anyway
    caller = acd.call("uac_queue_caller.xml", "79990000001", "-d", "3000")
    assert (caller.successful, caller.failed) == (1, 0), caller.output
    answered = phone.result()
    assert (answered.successful, answered.failed) == (1, 0), answered.output
    assert from_number(answered.received("INVITE")[0]) == "79990000001"
    agent = eventually(lambda: (a := acd.agent(a1))["status"] == "free" and a, what="a1 free")
    assert agent["calls_taken"] == 1
    kpi = acd.kpi()
    assert (kpi["joined"], kpi["answered"], kpi["abandoned"]) == (1, 1, 0)
    assert kpi["max_talk_seconds"] >= 1.5
    statuses = [
        e["new_status"]
        for e in outbox(acd.settings)
        if e.get("agent") == a1 and e["type"] == "acd.agent.status_changed"
    ]
    assert statuses[-3:] == ["ringing", "busy", "free"]
    left = [
        e
        for e in outbox(acd.settings)
        if e["type"] == "acd.waiter.left" and e["queue"] == acd.queue
    ]
    assert [(e["reason"], e["agent"]) for e in left] == [("answered", a1)]


def test_an_agent_who_does_not_answer_is_passed_over_for_the_next(
    acd: QueueFixture, acd_app: ServiceProcess
) -> None:
    a1, a2 = acd.agents
    silent = acd.agent_phone(a1, "uas_ring_until_cancel.xml")
    answering = acd.agent_phone(a2, "uas_ring_then_answer.tmpl.xml", {"ANSWER_MS": "300"})
    acd.login(a1, a2)
    caller = acd.call("uac_queue_caller.xml", "79990000002", "-d", str((RING_SECONDS + 3) * 1000))
    assert (caller.successful, caller.failed) == (1, 0), caller.output
    assert silent.result().received("CANCEL"), "a1's ring was not stopped"
    assert answering.result().successful == 1
    assert acd.get("/acd/kpi")["agents"][a1]["missed"] == 1
    assert acd.get("/acd/kpi")["agents"][a2]["answered"] == 1


def test_an_agent_on_a_call_not_from_the_queue_is_not_offered_one(
    acd: QueueFixture, acd_app: ServiceProcess
) -> None:
    a1, a2 = acd.agents
    a1_account = acd.agents[a1][0]
    direct = acd.agent_phone(a1, "uas_no180.xml")
    answering = acd.agent_phone(
        a2, "uas_answer_then_bye.tmpl.xml", {"ANSWER_MS": "300", "TALK_MS": "500"}
    )
    acd.routing.add_routes(
        {
            "name": f"e2e: agent {a1_account} direct",
            "priority": 42,
            "match": {"callee": f"^{a1_account}$"},
            "action": "relay",
            "destinations": [f"sip:{a1_account}@{acd.settings.kamailio.sip_domain}"],
        }
    )
    acd.login(a1, a2)
    with ThreadPoolExecutor(1) as pool:
        # The customer calls a1 directly (not through the queue), for 6 s.
        private = pool.submit(
            run_sipp, "uac_account_call.xml", acd.kamailio, service=a1_account,
            workdir=acd.workdir, timeout_s=20,
            extra=("-key", "caller", acd.customer[0], "-d", "6000"),
        )  # fmt: skip
        busy = eventually(
            lambda: (a := acd.agent(a1))["busy_elsewhere"] and a, what="a1 busy elsewhere"
        )
        assert busy["status"] == "busy"
        # Linear would ring a1 first: a2 gets the queue call.
        queued = acd.call("uac_queue_until_bye.xml", "79990000031")
        assert (queued.successful, queued.failed) == (1, 0), queued.output
        assert from_number(answering.result().received("INVITE")[0]) == "79990000031"
        assert private.result().successful == 1
    assert len(direct.result().received("INVITE")) == 1, "a1 rang for its own call only"
    healed = eventually(
        lambda: (a := acd.agent(a1))["status"] == "free" and a, what="a1 free after its call"
    )
    assert healed["busy_elsewhere"] is False


def test_a_caller_hanging_up_while_waiting_is_counted_as_abandoned(
    acd: QueueFixture, acd_app: ServiceProcess
) -> None:
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(acd.call, "uac_queue_caller.xml", "79990000003", "-d", "2500")
        waiting = eventually(acd.waiting, what="the caller waits")
        assert [(w["number"], w["position"]) for w in waiting] == [("79990000003", 1)]
        assert call.result().successful == 1
    eventually(lambda: not acd.waiting(), what="the queue empties")
    kpi = acd.kpi()
    assert (kpi["joined"], kpi["abandoned"], kpi["answered"]) == (1, 1, 0)


def test_every_supervisor_action_through_the_admin_api_changes_the_order_of_service(
    acd: QueueFixture, acd_app: ServiceProcess
) -> None:
    a1, a2 = acd.agents
    numbers = ["79990000011", "79990000012", "79990000013"]
    with ThreadPoolExecutor(3) as pool:
        calls: list[Future[SippResult]] = []
        for number in numbers:
            calls.append(pool.submit(acd.call, "uac_queue_until_bye.xml", number))
            eventually(lambda n=number: any(w["number"] == n for w in acd.waiting()))  # type: ignore[misc]
        ids = {w["number"]: w["waiter_id"] for w in acd.waiting()}
        assert [w["number"] for w in acd.waiting()] == numbers

        bumped = acd.post(f"/acd/waiters/{ids[numbers[2]]}/priority", {"priority": 5, "by": "sup"})
        assert bumped.status_code == 200, bumped.text
        assert [w["number"] for w in acd.waiting()] == [numbers[2], numbers[0], numbers[1]]

        waited = next(w["wait_seconds"] for w in acd.waiting() if w["number"] == numbers[0])
        moved = acd.post(f"/acd/waiters/{ids[numbers[0]]}/move", {"queue_id": acd.other_queue})
        assert moved.status_code == 200, moved.text
        [in_other] = acd.waiting(acd.other_queue)
        assert in_other["number"] == numbers[0] and in_other["wait_seconds"] >= waited
        assert [w["number"] for w in acd.waiting()] == [numbers[2], numbers[1]]

        removed = acd.request("DELETE", f"/acd/waiters/{ids[numbers[1]]}")
        assert removed.status_code == 200, removed.text
        assert calls[1].result().successful == 1, "the removed caller was hung up"

        # Order of service follows the change: the re-prioritised caller goes first.
        phone = acd.agent_phone(
            a1, "uas_answer_then_bye.tmpl.xml", {"ANSWER_MS": "300", "TALK_MS": "1000"}
        )
        acd.login(a1)
        talked = phone.result()
        assert (talked.successful, talked.failed) == (1, 0), talked.output
        assert from_number(talked.received("INVITE")[0]) == numbers[2]
        assert calls[2].result().successful == 1

        # The moved caller, looked up by number, is sent to a2 though a2 is not logged in.
        [seen] = acd.get(f"/acd/callers/{numbers[0]}")["waiting"]
        assert (seen["waiter_id"], seen["queue_id"]) == (ids[numbers[0]], acd.other_queue)
        sent_to = acd.agent_phone(
            a2, "uas_answer_then_bye.tmpl.xml", {"ANSWER_MS": "300", "TALK_MS": "500"}
        )
        assert acd.agent(a2)["status"] == "offline"
        sent = acd.post(f"/acd/waiters/{ids[numbers[0]]}/send", {"agent_id": a2, "by": "sup"})
        assert sent.status_code == 200, sent.text
        talked = sent_to.result()
        assert (talked.successful, talked.failed) == (1, 0), talked.output
        assert from_number(talked.received("INVITE")[0]) == numbers[0]
        assert calls[0].result().successful == 1

    # Force an agent's status: pause with a reason, unpause, log out.
    eventually(lambda: acd.agent(a1)["status"] == "free", what="a1 free after the call")
    for action, status in (("pause", "paused"), ("unpause", "free"), ("logout", "offline")):
        changed = acd.post(f"/acd/agents/{a1}/status", {"action": action, "reason": "lunch"})
        assert changed.status_code == 200, changed.text
        assert acd.agent(a1)["status"] == status
        if status == "paused":
            assert acd.agent(a1)["paused_reason"] == "lunch"

    # A read-only token sees the queues but may not act; no token is refused outright.
    reader = token(acd, "read_only")
    assert acd.request("GET", "/acd/queues", token=reader).status_code == 200
    refused = acd.request("POST", f"/acd/agents/{a1}/status", {"action": "login"}, token=reader)
    assert refused.status_code == 403, refused.text
    assert httpx.get(f"{acd.api}/acd/queues", timeout=5).status_code == 401
    assert acd.agent(a1)["status"] == "offline"

    assert acd.post("/acd/waiters/nobody/priority", {"priority": 1}).status_code == 404
    bad = acd.post(f"/acd/agents/{a1}/status", {"action": "dance"})
    assert bad.status_code == 400 and bad.json()["fields"][0]["field"] == "action"
    moves = [e for e in outbox(acd.settings, [ids[numbers[0]]]) if e["type"] == "acd.waiter.moved"]
    assert [(e["from_queue"], e["to_queue"]) for e in moves] == [(acd.queue, acd.other_queue)]


def test_a_callback_request_keeps_the_place_and_the_agent_then_calls_the_customer(
    acd: QueueFixture, acd_app: ServiceProcess
) -> None:
    a1, _ = acd.agents
    number = acd.customer[0]
    asked = acd.call("uac_queue_callback.xml", number, "-d", "1500")
    assert (asked.successful, asked.failed) == (1, 0), asked.output
    [waiter] = eventually(acd.waiting, what="the callback waits in the queue")
    assert (waiter["number"], waiter["callback"], waiter["position"]) == (number, True, 1)
    with psycopg.connect(acd.settings.database.url) as conn:
        state = conn.execute(
            "SELECT state FROM acd_callback WHERE queue_id = %s AND number = %s",
            (acd.queue, number),
        ).fetchone()
    assert state == ("waiting",)

    customer = acd.phone(acd.customer, "uas_ring_then_answer.tmpl.xml", {"ANSWER_MS": "300"})
    agent = acd.agent_phone(
        a1, "uas_answer_then_bye.tmpl.xml", {"ANSWER_MS": "300", "TALK_MS": "2000"}
    )
    acd.login(a1)
    talked = agent.result()
    assert (talked.successful, talked.failed) == (1, 0), talked.output
    reached = customer.result()
    assert (reached.successful, reached.failed) == (1, 0), reached.output
    kpi = acd.kpi()
    assert (kpi["callbacks_requested"], kpi["callbacks_completed"]) == (1, 1)
    with psycopg.connect(acd.settings.database.url) as conn:
        done = conn.execute(
            "SELECT state FROM acd_callback WHERE queue_id = %s", (acd.queue,)
        ).fetchone()
    assert done == ("done",)


def test_asterisk_restart_during_a_queue_call_leaves_no_agent_stuck(
    acd: QueueFixture, acd_app: ServiceProcess, stack_settings: Settings
) -> None:
    from softswitch.stack import services

    a1, _ = acd.agents
    acd.agent_phone(a1, "uas_ring_then_answer.tmpl.xml", {"ANSWER_MS": "200"})
    acd.login(a1)
    state_dir = stack_settings.stack.state_dir
    with ThreadPoolExecutor(1) as pool:
        pool.submit(acd.call, "uac_queue_until_bye.xml", "79990000021", timeout_s=20)
        eventually(lambda: acd.agent(a1)["status"] == "busy", what="a1 talking")
        services.stop(services.ASTERISK, state_dir)
        services.start(services.ASTERISK, stack_settings.stack.chroot_dir, state_dir)
        services.wait_ready(services.ASTERISK, stack_settings)
        agent = eventually(
            lambda: (a := acd.agent(a1))["status"] in ("free", "wrap_up") and a,
            timeout=30,
            what="a1 released after the restart",
        )
    assert agent["busy_elsewhere"] is False
    assert acd.kpi()["answered"] == 1
