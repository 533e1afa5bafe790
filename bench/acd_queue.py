"""ACD queue under load: calls/s through one queue end to end, and what limits them.

sipp callers -> Kamailio -> `softswitch routing` (scratch database, one route to the queue) ->
Asterisk -> `softswitch ari --app acd` (started here), which answers each caller (its own
bridge, music on hold), offers it to the longest-idle free agent (strategy least_recent) and
rings that agent's SIP account through Kamailio; one sipp UAS answers for all ``--agents``
agents (every agent account is registered with its port) after ``--answer-ms``; the answer is
bridged; the caller hangs up ``--talk-ms`` after its own 200 OK (sipp -d: waiting and talking
together, so a caller not served within it abandons). For every step:

- **attempted / answered**: the queue's own events in the outbox, acd.waiter.joined and
  acd.waiter.left with reason answered (the step's calls are told apart by their caller
  numbers, which call.started ties to the call id);
- **joined -> answered**: waited_seconds of the acd.waiter.left answered events, from the
  app's StasisStart to the agent's answer, so it includes ringing the agent (``--answer-ms``);
- **caller INVITE -> 200**: how long Asterisk and the app took to answer the caller (sipp
  -trace_rtt);
- CPU (utime + stime from /proc) per call of our ARI process, Asterisk, Kamailio (the stack's
  processes), the routing service, PostgreSQL (all its processes) and sipp, from the first
  call of the step until its calls are gone; the share of a core each used while the calls
  came in, and how busy the machine was.

Rate steps (``--rates``, ``--seconds`` each) after a short warm-up; stepping stops at the
first saturated step: under 95% of the callers who joined answered, or p99 joined -> answered
over 2 s.

    .venv/bin/python bench/acd_queue.py [--agents 160] [--rates 2,5,10,20,30,40,50,60]

Needs the local stack up (softswitch stack up), the routing port free and no other process
serving the Stasis app acd. Loopback only. SIP accounts and registrations (stack database,
where Kamailio reads them) are the run's own and removed at the end; routes, the queue, its
agents and the calls' events live in a scratch database that the routing service and the ARI
process use, dropped at the end. Every sipp has -timeout and is stopped by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    SCENARIOS,
    BridgeWatcher,
    PortWatcher,
    add_app_route,
    add_artifact_arguments,
    add_step_arguments,
    app_channels,
    ari_app,
    ari_get,
    ari_params,
    busy_share,
    clean_up_workdir,
    command_means,
    cpu_sample,
    cpu_spent,
    last_sipp_stats,
    machine_busy,
    metrics,
    percentile,
    preflight,
    print_command_table,
    register,
    running_stack_pids,
    sip_accounts,
    sipp_callers,
    step_prefix,
    stop_sipps,
)
from routing_e2e import free_udp_port, routing_service

from softswitch.db import temporary_database
from softswitch.settings import AriSettings, Settings, load_settings

APP = "acd"
SATURATED_ANSWERED = 0.95
SATURATED_P99_SECONDS = 2.0
PROCESSES = ("ari", "asterisk", "kamailio", "routing", "postgres", "sipp")
PROCESS_NAMES = {
    "ari": "our ARI process",
    "asterisk": "Asterisk",
    "kamailio": "Kamailio",
    "routing": "the routing service",
    "postgres": "PostgreSQL",
    "sipp": "sipp",
}


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ms(values: list[float], *ps: float) -> str:
    """Percentiles of seconds, in ms."""
    if not values:
        return "-"
    return " / ".join(f"{percentile(values, p) * 1000:,.0f}" for p in ps)


# ---- the queue, its agents and their accounts ----


@dataclass(frozen=True)
class Fixture:
    tag: str
    queue: str
    service: str  # the number callers dial
    agents: list[tuple[str, str, str]]  # (agent id, account, password)


@contextmanager
def queue_fixture(settings: Settings, scratch_url: str, agents: int) -> Iterator[Fixture]:
    """One queue (least_recent, ring 10 s, no retry rest, no wrap-up) and its agents. The SIP
    accounts go to the stack's database (Kamailio reads them there) and are removed after;
    queue, agents and memberships to the run's scratch database, which the ARI process uses
    (and drops with it)."""
    tag = secrets.token_hex(3)
    fixture = Fixture(
        tag,
        f"bench-{tag}",
        f"acdq{tag}",
        [(f"ba{tag}{n:03d}", f"bq{tag}{n:03d}", secrets.token_hex(8)) for n in range(agents)],
    )
    with sip_accounts(settings, [(account, password) for _, account, password in fixture.agents]):
        with psycopg.connect(scratch_url) as conn, conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO acd_queue (queue_id, name, strategy, ring_timeout_seconds,"
                " retry_seconds, wrap_up_seconds) VALUES (%s, %s, 'least_recent', 10, 0, 0)",
                (fixture.queue, f"bench {tag}"),
            )
            cursor.executemany(
                "INSERT INTO acd_agent (agent_id, account, name) VALUES (%s, %s, %s)",
                [(a, account, f"bench agent {a}") for a, account, _ in fixture.agents],
            )
            cursor.executemany(
                "INSERT INTO acd_membership (agent_id, queue_id, position) VALUES (%s, %s, %s)",
                [(a, fixture.queue, n) for n, (a, _, _) in enumerate(fixture.agents)],
            )
        yield fixture


def render(scenario: str, workdir: Path, name: str, **values: str) -> Path:
    """A copy of a tests/e2e scenario with ``@KEY@`` (templates) or ``[key]`` replaced."""
    text = (SCENARIOS / scenario).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value).replace(f"[{key}]", value)
    path = workdir / name
    path.write_text(text)
    return path


# A CANCEL while the agent's phone rings (the caller gave up) ends the ring as a phone would:
# 200 to the CANCEL, 487 to the INVITE. The e2e scenario only expects answered calls; sipp
# would abort on the CANCEL without a final answer, and Kamailio would keep the early dialog,
# which counts the agent's phone as busy, until tm's fr_inv_timer (120 s).
RING = '<pause milliseconds="@ANSWER_MS@"/>'
RING_OR_CANCEL = """<recv request="CANCEL" timeout="@ANSWER_MS@" ontimeout="answer"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send>
    <![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: [last_cseq_number] INVITE
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" next="cancelled"/>
  <label id="answer"/>"""


@dataclass(frozen=True)
class Phones:
    process: subprocess.Popen[bytes]
    port: int


@contextmanager
def agent_phones(
    args: argparse.Namespace, workdir: Path, budget: int, calls: int
) -> Iterator[Phones]:
    """One sipp UAS answering for every agent (180, ``--answer-ms``, 200, then the caller's
    BYE; or 487 to a CANCEL while it rings); stopped by its PID after."""
    scenario = render(
        "uas_ring_then_answer.tmpl.xml", workdir, "agents.xml", ANSWER_MS=str(args.answer_ms)
    )
    text = scenario.read_text()
    ring = RING.replace("@ANSWER_MS@", str(args.answer_ms))
    if ring not in text:
        raise SystemExit(f"{scenario.name}: no {ring} to answer CANCELs in")
    text = text.replace(ring, RING_OR_CANCEL.replace("@ANSWER_MS@", str(args.answer_ms)))
    scenario.write_text(text.replace("</scenario>", '  <label id="cancelled"/>\n</scenario>'))
    port = free_udp_port()
    command = [
        "sipp", "-sf", str(scenario),
        "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(port), "-m", str(calls),
        "-timeout", f"{budget}s", "-nostdin",
        "-trace_stat", "-stf", str(workdir / "agents.csv"),
        "-trace_err", "-error_file", str(workdir / "agents-errors.log"),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(0.5)
        if process.poll() is not None:
            raise SystemExit(f"the agents' sipp UAS exited at start ({process.returncode})")
        yield Phones(process, port)
    finally:
        stop_sipps([process])


# ---- our ARI process ----


class Supervisor:
    """The app's supervisor API."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> Any:
        answer = httpx.get(f"{self.base}{path}", timeout=10)
        answer.raise_for_status()
        return answer.json()

    def login(self, agent_id: str) -> None:
        answer = httpx.post(
            f"{self.base}/acd/agents/{agent_id}/status", json={"action": "login"}, timeout=10
        )
        if answer.status_code != 200:
            raise SystemExit(f"login of {agent_id}: {answer.status_code} {answer.text}")

    def agents(self) -> list[dict[str, Any]]:
        agents: list[dict[str, Any]] = self.get("/acd/agents")["agents"]
        return agents

    def waiting(self, queue: str) -> int:
        views = [q for q in self.get("/acd/queues")["queues"] if q["queue_id"] == queue]
        return sum(len(q["waiters"]) for q in views)


def hang_up_leftovers(ari: AriSettings, queue_args: str) -> None:
    """After the ARI process stopped: hang up the run's calls still in Asterisk (a caller
    whose BYE never came, with the agent leg bridged to it) and remove their bridges, so the
    shared Asterisk keeps nothing of the run."""
    base, params = f"{ari.url.rstrip('/')}/ari", ari_params(ari)
    with contextlib.suppress(httpx.HTTPError):
        callers = [
            c["id"]
            for c in ari_get(ari, "channels")
            if c.get("dialplan", {}).get("app_data", "").startswith(queue_args)
        ]
        ours = [c["id"] for c in ari_get(ari, "channels") if c["id"].split("-", 1)[0] == APP]
        legs = [c for c in ours if any(c.startswith(f"{APP}-{caller}-") for caller in callers)]
        for channel in (*callers, *legs):
            httpx.delete(f"{base}/channels/{channel}", params=params, timeout=5)
        time.sleep(1)
        for caller in callers:
            httpx.delete(f"{base}/bridges/{APP}-{caller}", params=params, timeout=5)
        if callers:
            print(
                f"warning: hung up {len(callers)} calls of the run left in Asterisk"
                f" ({len(legs)} agent legs)",
                file=sys.stderr,
            )


# ---- one step ----


def queue_cpu_sample(pids: dict[str, int], uas: Phones) -> dict[str, float]:
    """CPU seconds so far of each process (group) the steps report; PostgreSQL too: the queue
    reads and writes it on every call."""
    return cpu_sample(pids, [uas.process.pid], postgres=True)


@dataclass
class Step:
    label: str
    index: int
    rate: float
    calls: int
    sipp_ok: int = 0
    sipp_failed: int = 0
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # until the step's calls were gone
    burst_cpu: dict[str, float] = field(default_factory=dict)  # while sipp placed the calls
    busy: float = 0.0
    rtp_peak: int = 0
    stack_restarted: bool = False
    answer_rtt: list[float] = field(default_factory=list)  # caller INVITE -> 200, s
    not_idle: str = ""  # what was still going on after the drain
    started_at: float = 0.0  # wall clock: the step's first call ...
    ended_at: float = 0.0  # ... and when its calls were gone
    metrics_before: dict[str, float] = field(default_factory=dict)
    metrics_after: dict[str, float] = field(default_factory=dict)
    # filled by analyse()
    joined: int = 0
    answered: int = 0
    left: Counter[str] = field(default_factory=Counter)
    waits: list[float] = field(default_factory=list)
    agent_reasons: Counter[str] = field(default_factory=Counter)
    unbridged: list[str] = field(default_factory=list)  # answered, no agent leg in the bridge

    def ms_per_call(self, name: str, idle: dict[str, float] | None = None) -> float:
        """CPU ms per caller; less what the process uses without calls (``idle``: share of a
        core) over the same time."""
        spent = self.cpu.get(name, 0.0)
        if idle:
            spent -= idle.get(name, 0.0) * (self.ended_at - self.started_at)
        return spent * 1000 / max(self.joined or self.calls, 1)

    def core(self, name: str) -> float:
        """Share of one core the process used while the calls came in, %."""
        return 100 * self.burst_cpu.get(name, 0.0) / max(self.wall, 1e-9)

    @property
    def answered_ratio(self) -> float:
        return self.answered / self.joined if self.joined else 0.0

    @property
    def saturated(self) -> bool:
        p99 = percentile(self.waits, 99)
        return (
            self.answered_ratio < SATURATED_ANSWERED
            or self.joined < SATURATED_ANSWERED * self.calls
            or not (p99 <= SATURATED_P99_SECONDS)
        )

    def other_load(self) -> float:
        """What the rest of the machine used while the calls came in, % of a core (the
        machine is shared: another run's load spoils a step)."""
        return 100 * self.busy * (os.cpu_count() or 1) - sum(self.core(n) for n in PROCESSES)

    def busiest(self) -> str:
        return max(PROCESSES, key=self.core)

    def command_errors(self) -> dict[str, int]:
        """ARI commands Asterisk refused during the step, by command."""
        errors: dict[str, int] = {}
        for name, value in self.metrics_after.items():
            command = re.search(r'command="(\w+)"', name)
            count = int(value - self.metrics_before.get(name, 0))
            if name.startswith("softswitch_ari_command_errors_total") and command and count:
                errors[command.group(1)] = count
        return errors

    def command_ms(self) -> dict[str, tuple[float, float]]:
        """(commands per call, mean ms) of each command the ARI process carried out during the
        step (ARI round trips, and the app's own services such as JoinQueue)."""
        return command_means(self.metrics_before, self.metrics_after, self.calls)


def caller_number(step: int, n: int) -> str:
    """The step's index is in the caller's number: events of a call name its caller."""
    return f"79{step:02d}{n:07d}"


def read_rtt(path: Path) -> list[float]:
    """Response times (s) of sipp -trace_rtt: one per call, INVITE -> 200 here."""
    times: list[float] = []
    if not path.is_file():
        return times
    for row in csv.reader(path.open(), delimiter=";"):
        with contextlib.suppress(IndexError, ValueError):
            times.append(float(row[1]) / 1000)
    return times


def run_step(
    label: str, index: int, rate: float, calls: int, ctx: dict[str, Any], args: argparse.Namespace
) -> Step:
    workdir: Path = ctx["workdir"]
    prefix = step_prefix(label)
    callers = workdir / f"{prefix}-callers.csv"
    callers.write_text(
        "SEQUENTIAL\n" + "".join(f"{caller_number(index, n)};\n" for n in range(calls))
    )
    stats = workdir / f"{prefix}.csv"
    timeout = int(calls / rate * 1.5 + args.talk_ms / 1000 + 30)
    command = sipp_callers(
        ctx["sip"],
        ctx["caller_scenario"],
        ctx["service"],
        callers,
        rate=rate,
        calls=calls,
        talk_ms=args.talk_ms,
        recv_timeout_ms=15000,
        prefix=prefix,
        timeout=timeout,
        workdir=workdir,
        options=[
            # A stray 100 Trying after the 200 OK (seen under load) must not abort the call:
            # sipp would send a BYE without the route set, which Kamailio refuses (404), and
            # leave the caller in Asterisk, talking to an agent, for good.
            *("-default_behaviors", "all,-abortunexp"),
            *("-trace_rtt", "-rtt_freq", "1"),
        ],
    )
    pids: dict[str, int] = ctx["pids"]
    state_dir: Path = ctx["state_dir"]
    uas: Phones = ctx["uas"]
    supervisor: Supervisor = ctx["supervisor"]
    stack_pids = running_stack_pids(state_dir)
    pids["kamailio"], pids["asterisk"] = stack_pids[0] or 0, stack_pids[1] or 0

    ports: PortWatcher = ctx["ports"]
    ports.wait_drained(args.drained, 60)
    metrics_before = metrics(ctx["api_port"])
    before, busy_before, started = queue_cpu_sample(pids, uas), machine_busy(), time.monotonic()
    started_at = time.time()
    with PortWatcher(ports.first, ports.last) as watcher:
        caller = subprocess.Popen(
            command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            caller.wait(timeout + 10)
        except subprocess.TimeoutExpired:
            caller.kill()
            caller.wait(5)
    step = Step(label, index, rate, calls, wall=time.monotonic() - started, rtp_peak=watcher.peak)
    step.metrics_before, step.started_at = metrics_before, started_at
    burst, busy_after = queue_cpu_sample(pids, uas), machine_busy()
    step.burst_cpu = cpu_spent(before, burst)
    step.busy = busy_share(busy_before, busy_after)
    if totals := last_sipp_stats(stats):
        step.sipp_ok = int(totals["SuccessfulCall(C)"])
        step.sipp_failed = int(totals["FailedCall(C)"])
    step.answer_rtt = read_rtt(workdir / f"{ctx['caller_scenario'].stem}_{caller.pid}_rtt.csv")
    # The step is over when the queue is empty, every agent is free again and Asterisk has
    # none of the app's channels left (a ring times out after 10 s at worst).
    deadline = time.monotonic() + 20
    while True:
        pending = []
        with contextlib.suppress(httpx.HTTPError):
            if waiting := supervisor.waiting(ctx["queue"]):
                pending.append(f"{waiting} callers in the queue")
            statuses = Counter(a["status"] for a in supervisor.agents())
            if set(statuses) != {"free"}:
                pending.append(f"agents {dict(statuses)}")
            if channels := app_channels(ctx["ari"], APP, app_data_prefix=f"{APP},"):
                pending.append(f"{channels} channels in Asterisk")
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    step.not_idle = ", ".join(pending)
    step.metrics_after = metrics(ctx["api_port"])
    # The CPU of a call includes what Asterisk does until it frees the call's RTP ports.
    ports.wait_drained(args.drained, 30)
    after, step.ended_at = queue_cpu_sample(pids, uas), time.time()
    step.cpu = cpu_spent(before, after)
    step.stack_restarted = stack_pids != running_stack_pids(state_dir)
    return step


# ---- analysis ----


def outbox(database_url: str, *, every: bool = False) -> list[dict[str, Any]]:
    """The events analyse() reads (``every``: all of them), in the order they were written."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT payload FROM event_outbox WHERE %s OR routing_key IN"
            " ('call.started', 'acd.waiter.joined', 'acd.waiter.left',"
            "  'acd.agent.status_changed') ORDER BY id",
            (every,),
        ).fetchall()
    return [row[0] for row in rows]


def analyse(steps: list[Step], events: list[dict[str, Any]], entered: list[dict[str, Any]]) -> None:
    """The steps' callers, answers and waits from the outbox, and answered calls whose agent
    leg never entered the caller's bridge (Asterisk's own ChannelEnteredBridge events); from
    scratch on every call."""
    bridged = {e["bridge"] for e in entered if e["channel"].startswith(f"{e['bridge']}-")}
    by_index = {step.index: step for step in steps}
    for step in steps:
        step.joined = step.answered = 0
        step.left.clear()
        step.waits.clear()
        step.agent_reasons.clear()
        step.unbridged.clear()
    step_of_call: dict[str, Step] = {}
    for event in events:
        caller = event.get("caller") or ""
        if event["type"] == "call.started" and re.fullmatch(r"79\d{9}", caller):
            owner = by_index.get(int(caller[2:4]))
            if owner is not None:
                step_of_call[event["call_id"]] = owner
    for event in events:
        if event["type"] == "acd.agent.status_changed":
            # Not a call's: counted in the step that was running then (steps do not overlap).
            if event.get("reason"):
                at = datetime.fromisoformat(event["occurred_at"]).timestamp()
                reason = re.sub(r"^offered .*", "offered", event["reason"])
                for step in steps:
                    if step.started_at <= at <= step.ended_at:
                        step.agent_reasons[f"{event['new_status']} ({reason})"] += 1
            continue
        of_call = step_of_call.get(event.get("call_id") or "")
        if of_call is None:
            continue
        if event["type"] == "acd.waiter.joined":
            of_call.joined += 1
        elif event["type"] == "acd.waiter.left":
            of_call.left[event["reason"]] += 1
            if event["reason"] == "answered":
                of_call.answered += 1
                of_call.waits.append(float(event["waited_seconds"]))
                if f"{APP}-{event['call_id']}" not in bridged:
                    of_call.unbridged.append(event["call_id"])


def log_summary(ari_log: Path) -> list[tuple[int, str, str]]:
    """(count, kind, first line) of the ARI process's warnings and errors."""
    counts: Counter[str] = Counter()
    samples: dict[str, str] = {}
    for line in ari_log.read_text(errors="replace").splitlines():
        match = re.search(
            r'"level": *"(warning|error|critical)".*?"msg": *"([^"]{0,200})', line, re.I
        )
        if not match:
            continue
        text = re.sub(r"\d+(\.\d+)+|\b[0-9a-f]{8,}\b|\d{4,}", "N", match.group(2))
        text = re.sub(r"acd-\S+|bq\w+|ba\w+", "X", text)
        key = f"{match.group(1).upper()} {text[:90]}"
        counts[key] += 1
        samples.setdefault(key, line[:500])
    return [(count, key, samples[key]) for key, count in counts.most_common()]


def report(
    steps: list[Step],
    args: argparse.Namespace,
    ari_log: Path,
    agents_stats: Path,
    idle: dict[str, float],
) -> None:
    print(
        "\n| calls/s | callers | answered % | joined -> answered ms p50 / p99 / max"
        " | caller INVITE -> 200 ms p50 / p99 | ARI CPU ms/call | Asterisk CPU ms/call"
        " | ARI / Asterisk | Kamailio ms/call | routing ms/call | PostgreSQL ms/call"
        " | % of a core: ARI / Asterisk / Kamailio / PostgreSQL | machine busy %"
        " | answered, not bridged |"
    )
    print("|---" * 14 + "|")
    for s in steps:
        ari, asterisk = s.ms_per_call("ari"), s.ms_per_call("asterisk")
        cores = " / ".join(
            f"{s.core(name):.0f}" for name in ("ari", "asterisk", "kamailio", "postgres")
        )
        print(
            f"| {s.rate:g} | {s.joined:,} | {100 * s.answered_ratio:.1f}"
            f" | {ms(s.waits, 50, 99, 100)} | {ms(s.answer_rtt, 50, 99)}"
            f" | {ari:.1f} | {asterisk:.1f} | {ari / asterisk if asterisk else math.nan:.2f}"
            f" | {s.ms_per_call('kamailio'):.1f} | {s.ms_per_call('routing'):.2f}"
            f" | {s.ms_per_call('postgres'):.1f} | {cores} | {100 * s.busy:.0f}"
            f" | {len(s.unbridged)} |"
        )
    notes = [
        "idle (agents logged in, no calls), % of a core: "
        + ", ".join(f"{PROCESS_NAMES[name]} {100 * value:.1f}" for name, value in idle.items())
    ]
    if totals := last_sipp_stats(agents_stats):
        notes.append(
            f"agents' sipp UAS: {totals['SuccessfulCall(C)']} calls ok,"
            f" {totals['FailedCall(C)']} failed"
        )
    for s in steps:
        ok = f"{s.label}: sipp {s.sipp_ok} ok / {s.sipp_failed} failed of {s.calls}"
        left = ", ".join(f"{reason} {n}" for reason, n in sorted(s.left.items()))
        agents = ", ".join(f"{what} {n}" for what, n in sorted(s.agent_reasons.items()))
        notes.append(
            f"{ok}; joined {s.joined}, left: {left or '-'}; agents: {agents or '-'};"
            f" busiest: {PROCESS_NAMES[s.busiest()]} ({s.core(s.busiest()):.0f}% of a core);"
            f" ARI without its idle load {s.ms_per_call('ari', idle):.1f} ms/call;"
            f" other load on the machine {s.other_load():.0f}% of a core;"
            f" sipp {s.ms_per_call('sipp'):.1f} ms/call; RTP ports peak {s.rtp_peak};"
            f" ARI commands refused: {s.command_errors() or 0}"
        )
        if s.unbridged:
            notes.append(
                f"{s.label}: {len(s.unbridged)} calls answered (acd.waiter.left answered,"
                " call.bridged) whose agent leg never entered the caller's bridge: "
                + ", ".join(s.unbridged[:5])
            )
        if s.stack_restarted:
            notes.append(f"{s.label}: Kamailio or Asterisk was restarted during the step: void")
        if s.not_idle:
            notes.append(f"{s.label}: still going on 20 s after its last call: {s.not_idle}")
        if s.wall > s.calls / s.rate + args.talk_ms / 1000 + 15:
            notes.append(f"{s.label}: took {s.wall:.0f} s (sipp could not keep the rate)")
    saturated = [s for s in steps if s.saturated]
    if saturated:
        s = saturated[0]
        notes.append(
            f"saturated at {s.rate:g} calls/s ({100 * s.answered_ratio:.1f}% answered, p99 wait"
            f" {ms(s.waits, 99)} ms); busiest there: {PROCESS_NAMES[s.busiest()]}"
            f" ({s.core(s.busiest()):.0f}% of a core)"
        )
    else:
        notes.append(f"not saturated up to {steps[-1].rate:g} calls/s" if steps else "no steps")
    for count, key, _ in log_summary(ari_log):
        notes.append(f"ARI log: {count} x {key}")
    print_command_table(
        "\nCommands of the ARI process: per call x mean ms",
        "calls/s",
        [(f"{s.rate:g}", s.command_ms()) for s in steps],
    )
    print()
    for note in notes:
        print(f"- {note}")
    samples = log_summary(ari_log)
    if samples:
        print("\nfirst ARI log line of each kind:")
        for _, _, line in samples[:10]:
            print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=160, help="agents of the queue")
    parser.add_argument("--answer-ms", type=int, default=200, help="an agent answers after")
    parser.add_argument("--talk-ms", type=int, default=2000, help="caller's -d: wait + talk")
    parser.add_argument("--rates", default="2,5,10,20,30,40,50,60", help="calls/s of the steps")
    parser.add_argument("--seconds", type=float, default=20, help="per rate step")
    add_step_arguments(parser)
    parser.add_argument("--idle-seconds", type=float, default=5, help="idle CPU sample")
    add_artifact_arguments(parser)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r]

    settings = load_settings()
    state_dir = settings.stack.state_dir
    asterisk_pid, kamailio_pid = preflight(settings, APP)
    sip = f"{settings.kamailio.sip_ip}:{settings.kamailio.sip_port}"
    first_port, last_port = settings.asterisk.rtp_start, settings.asterisk.rtp_end
    step_sizes = [int(rate * args.seconds) for rate in rates]
    planned = sum(
        n / rate + args.talk_ms / 1000 + 6 for n, rate in zip(step_sizes, rates, strict=True)
    )
    budget = int(planned * 1.5 + 180)
    busiest_agents = max(rates) * args.talk_ms / 1000
    print(
        f"callers -> Kamailio {sip} -> routing -> Asterisk -> acd -> {args.agents} agents (one"
        f" sipp UAS) answering after {args.answer_ms} ms; callers stay {args.talk_ms} ms after"
        f" their 200 (wait + talk); strategy least_recent, no wrap-up; at most"
        f" {busiest_agents:.0f} agents busy at {max(rates):g} calls/s; about"
        f" {(planned + 60) / 60:.1f} min",
        flush=True,
    )
    if busiest_agents > 0.8 * args.agents:
        print(
            f"warning: {args.agents} agents are too few for {max(rates):g} calls/s x"
            f" {args.talk_ms} ms: the agents, not the software, would limit the queue",
            file=sys.stderr,
        )
    workdir = Path(tempfile.mkdtemp(prefix="acd-queue-bench-"))
    steps: list[Step] = []
    idle: dict[str, float] = {}
    with ExitStack() as stack:
        # Routes, the queue and the calls' events: a scratch database of the run's own.
        database = stack.enter_context(
            temporary_database(settings.database, prefix="softswitch_bench")
        )
        fixture = stack.enter_context(queue_fixture(settings, database.url, args.agents))
        route = {
            "name": f"bench: queue {fixture.queue}",
            "priority": 1,
            "match": {"callee": f"^{fixture.service}$"},
            "action": "app",
            "app": APP,
            "app_args": [fixture.queue],
        }
        add_app_route(database.url, route)
        routing_pid = stack.enter_context(
            routing_service(settings, database.url, workdir / "routing.log")
        )
        total_calls = args.warmup_calls + sum(step_sizes)
        uas = stack.enter_context(agent_phones(args, workdir, budget, total_calls * 2 + 100))

        def registrar(expires: int) -> None:
            with ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(
                        lambda agent: register(sip, agent[1], agent[2], uas.port, expires, workdir),
                        fixture.agents,
                    )
                )

        def unregister() -> None:  # Expires: 0 (Kamailio caches usrloc: rows alone won't do)
            with contextlib.suppress(SystemExit, subprocess.TimeoutExpired):
                registrar(0)

        stack.callback(unregister)
        registrar(budget + 60)
        watcher = stack.enter_context(BridgeWatcher(settings.ari, f"bench{fixture.tag}"))
        api_port = free_tcp_port()
        ari_log = workdir / "ari.log"
        stack.callback(hang_up_leftovers, settings.ari, f"{APP},{fixture.service},{fixture.queue}")
        # `softswitch ari --app acd` on the scratch database (queue, agents, outbox), its
        # supervisor API on api_port, until connected and loaded.
        ari_process = stack.enter_context(
            ari_app(
                APP,
                args.ari_profile,
                database.url,
                ari_log,
                {"SOFTSWITCH_ACD_API_HOST": "127.0.0.1", "SOFTSWITCH_ACD_API_PORT": str(api_port)},
                ready=('"ARI connected"', '"ACD loaded'),
                waiting_for="connect and load",
            )
        )
        supervisor = Supervisor(api_port)
        for agent_id, _, _ in fixture.agents:
            supervisor.login(agent_id)
        deadline = time.monotonic() + 15
        while Counter(a["status"] for a in supervisor.agents()) != {"free": args.agents}:
            if time.monotonic() > deadline:
                raise SystemExit(f"agents not all free after login: {supervisor.agents()[:3]}")
            time.sleep(0.2)
        pids = {
            "ari": ari_process.pid,
            "asterisk": asterisk_pid,
            "kamailio": kamailio_pid,
            "routing": routing_pid,
        }
        ctx: dict[str, Any] = {
            "workdir": workdir,
            "sip": sip,
            "service": fixture.service,
            "queue": fixture.queue,
            "caller_scenario": render(
                "uac_queue_caller.xml", workdir, "acd_caller.xml", caller="[field0]"
            ),
            "ari": settings.ari,
            "api_port": api_port,
            "supervisor": supervisor,
            "uas": uas,
            "state_dir": state_dir,
            "ports": PortWatcher(first_port, last_port),
            "pids": pids,
        }
        # What the processes use with agents logged in and no calls (the app checks their
        # phones with Kamailio every few seconds): part of every step's CPU per call.
        idle_before, idle_started = queue_cpu_sample(pids, uas), time.monotonic()
        time.sleep(args.idle_seconds)
        idle_after, idle_wall = queue_cpu_sample(pids, uas), time.monotonic() - idle_started
        idle = {name: (idle_after[name] - idle_before[name]) / idle_wall for name in idle_after}
        print(
            "\n| step | calls/s | calls | sipp ok | sipp failed | wall s | ARI ms/call"
            " | Asterisk ms/call | busiest, % of a core |\n" + "|---" * 9 + "|",
            flush=True,
        )

        def run(label: str, index: int, rate: float, calls: int) -> Step:
            step = run_step(label, index, rate, calls, ctx, args)
            print(
                f"| {label} | {rate:g} | {calls} | {step.sipp_ok} | {step.sipp_failed}"
                f" | {step.wall:.1f} | {step.ms_per_call('ari'):.2f}"
                f" | {step.ms_per_call('asterisk'):.2f}"
                f" | {step.busiest()} {step.core(step.busiest()):.0f} |",
                flush=True,
            )
            return step

        if args.warmup_calls:
            run("warm-up", 0, 2, args.warmup_calls)
        for index, (rate, calls) in enumerate(zip(rates, step_sizes, strict=True), start=1):
            steps.append(run(f"{rate:g}/s", index, rate, calls))
            time.sleep(0.5)  # the last bridge events reach the watcher
            analyse(steps, outbox(database.url), list(watcher.entered))
            if steps[-1].saturated:
                break
        if args.keep:
            (workdir / "events.jsonl").write_text(
                "".join(json.dumps(event) + "\n" for event in outbox(database.url, every=True))
            )
    report(steps, args, ari_log, workdir / "agents.csv", idle)
    clean_up_workdir(workdir, args.keep)


if __name__ == "__main__":
    main()
