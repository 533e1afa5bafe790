"""Multiring under load: a panel calls a flat of N devices, one answers, the others are CANCELed.

sipp panels -> Kamailio -> `softswitch routing` (scratch database, one route to the app) ->
Asterisk -> `softswitch ari --app multiring` (started here), which originates one leg per device
of the flat through Kamailio to N registered sipp devices: device 0 answers after
``--answer-ms``, the other N-1 ring (180 at once) until they are CANCELed. For every call:

- **200 -> bridge**: from the winning device's 200 OK (sipp -trace_msg, the time it was sent)
  to Asterisk's ChannelEnteredBridge of that leg (the event's own timestamp, ms resolution;
  events from a websocket of our own, ``subscribeAll`` with an event filter that lets only
  ChannelEnteredBridge through);
- **200 -> last CANCEL**: from the same 200 OK to the CANCEL of the last losing leg, as its
  sipp device received it;
- **200 -> panel 200**: from the same 200 OK to the panel's own 200 OK (what the caller sees).

The calls of one step are told apart by their panel: each call comes from the next of
``--panels`` panel accounts (sipp -inf), the legs carry it as their From user, and the panel's
SIP Call-ID reaches the bridge event as the channel variable SIP_CALL_ID.

First a latency run (``--latency-calls`` at ``--latency-rate``), then rate steps
(``--rates``, ``--seconds`` each). CPU (utime + stime from /proc) of our ARI process, Asterisk,
Kamailio (the stack's processes) and sipp, per call of the step, and how busy the machine was.

    .venv/bin/python bench/multiring.py [--legs 10] [--rates 2,5,10,20,40] [--seconds 20]

Needs the local stack up (softswitch stack up), the routing port free and no other process
serving the Stasis app multiring. Loopback only. SIP accounts and registrations (stack database,
where Kamailio reads them) are the run's own and removed at the end; routes, directory rows and
the calls' events live in a scratch database that the routing service and the ARI process use,
dropped at the end. Every sipp has -timeout and is stopped by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
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
from softswitch.settings import Settings, load_settings

FLAT = "15"
APP = "multiring"
LOG_LINE = re.compile(r"^(\w+) (\S+) (\S+)(?: ([\d.]+) ([\d.]+))?$")


def triple(values: list[float]) -> str:
    """p50 / p95 / p99 in ms."""
    if not values:
        return "-"
    return " / ".join(f"{percentile(values, p) * 1000:.1f}" for p in (50, 95, 99))


# ---- directory, accounts, registrations ----


@dataclass(frozen=True)
class Fixture:
    tag: str
    building: str
    panels: list[str]
    devices: list[tuple[str, str]]  # (account, password); device 0 answers


@contextmanager
def directory(settings: Settings, scratch_url: str, panels: int, legs: int) -> Iterator[Fixture]:
    """Panel accounts of one building, a flat with ``legs`` SIP devices. The SIP accounts go
    to the stack's database (Kamailio reads them there) and are removed after; the directory
    rows to the run's scratch database, which the ARI process uses (and drops with it)."""
    tag = secrets.token_hex(3)
    fixture = Fixture(
        tag,
        f"bench-{tag}",
        [f"bp{tag}{n:04d}" for n in range(panels)],
        [(f"bd{tag}{n:02d}", secrets.token_hex(8)) for n in range(legs)],
    )
    panel_accounts = [(panel, secrets.token_hex(8)) for panel in fixture.panels]
    with sip_accounts(settings, [*panel_accounts, *fixture.devices]):
        with psycopg.connect(scratch_url) as conn, conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO intercom_panel (panel_id, account, building, address)"
                " VALUES (%s, %s, %s, %s)",
                [(f"{p}-door", p, fixture.building, f"bench {p}") for p in fixture.panels],
            )
            cursor.execute(
                "INSERT INTO flat (building, number) VALUES (%s, %s)", (fixture.building, FLAT)
            )
            cursor.executemany(
                "INSERT INTO flat_device (building, number, kind, target, position)"
                " VALUES (%s, %s, 'sip', %s, %s)",
                [(fixture.building, FLAT, a, n) for n, (a, _) in enumerate(fixture.devices)],
            )
        yield fixture


@dataclass
class Device:
    index: int
    account: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    trace: Path | None


@contextmanager
def devices(
    fixture: Fixture, args: argparse.Namespace, workdir: Path, budget: int
) -> Iterator[list[Device]]:
    """One sipp UAS per device, each registered as its account; stopped by PID after."""
    started: list[Device] = []
    try:
        for index, (account, _) in enumerate(fixture.devices):
            winner = index == 0
            port = free_udp_port()
            log = workdir / f"device{index:02d}.log"
            trace = workdir / "winner-messages.log" if winner else None
            scenario = "bench_uas_winner.xml" if winner else "bench_uas_loser.xml"
            command = [
                "sipp", "-sf", str(SCENARIOS / scenario),
                "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(port),
                "-d", str(args.answer_ms), "-timeout", f"{budget}s", "-nostdin",
                "-trace_logs", "-log_file", str(log),
                "-trace_err", "-error_file", str(workdir / f"device{index:02d}-errors.log"),
                *(["-trace_msg", "-message_file", str(trace)] if trace else []),
            ]  # fmt: skip
            process = subprocess.Popen(
                command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            started.append(Device(index, account, port, process, log, trace))
        time.sleep(0.5)
        for device in started:
            if device.process.poll() is not None:
                raise SystemExit(f"sipp device {device.index} exited at start")
        yield started
    finally:
        stop_sipps(device.process for device in started)


# ---- one step ----


@dataclass
class PanelCall:
    call_id: str
    panel: str
    invite_at: float
    answered_at: float | None = None
    legs: list[str] = field(default_factory=list)


@dataclass
class Step:
    label: str
    rate: float
    calls: int
    successful: int = 0
    failed: int = 0
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # until the RTP ports were free again
    burst_cpu: dict[str, float] = field(default_factory=dict)  # while sipp placed the calls
    busy: float = 0.0
    rtp_peak: int = 0
    stack_restarted: bool = False
    panel_calls: list[PanelCall] = field(default_factory=list)
    leftover_channels: int = 0
    metrics_before: dict[str, float] = field(default_factory=dict)
    metrics_after: dict[str, float] = field(default_factory=dict)
    # filled by analyse()
    to_bridge: list[float] = field(default_factory=list)
    to_last_cancel: list[float] = field(default_factory=list)
    to_panel_200: list[float] = field(default_factory=list)
    left_ringing: int = 0
    unbridged: int = 0
    missing_legs: int = 0

    def command_errors(self) -> int:
        return int(
            sum(
                value - self.metrics_before.get(name, 0)
                for name, value in self.metrics_after.items()
                if name.startswith("softswitch_ari_command_errors_total")
            )
        )

    def ms_per_call(self, name: str) -> float:
        return self.cpu.get(name, 0.0) * 1000 / max(self.calls, 1)

    def command_ms(self) -> dict[str, tuple[float, float]]:
        """(commands per call, mean ms) of each command the ARI process carried out during the
        step (ARI round trip, or the app service for LookupFlat)."""
        return command_means(self.metrics_before, self.metrics_after, self.calls)


def parse_log(path: Path) -> list[tuple[str, str, str, float | None]]:
    """(kind, call-id, panel or From user, wall clock time) of a bench scenario's log lines."""
    lines: list[tuple[str, str, str, float | None]] = []
    if not path.is_file():
        return lines
    for line in path.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line.strip())
        if not match:
            continue
        kind, call_id, who, seconds, micros = match.groups()
        who = who.removeprefix("sip:").removesuffix("@")
        at = float(seconds) + float(micros) / 1e6 if seconds and micros else None
        lines.append((kind, call_id, who, at))
    return lines


def run_step(
    label: str, rate: float, calls: int, ctx: dict[str, Any], args: argparse.Namespace
) -> Step:
    workdir: Path = ctx["workdir"]
    prefix = step_prefix(label)
    log, stats = workdir / f"{prefix}.log", workdir / f"{prefix}.csv"
    timeout = int(calls / rate * 1.5 + args.ring_seconds + 30)
    command = sipp_callers(
        ctx["sip"],
        SCENARIOS / "bench_uac_panel.xml",
        FLAT,
        ctx["panels_csv"],
        rate=rate,
        calls=calls,
        talk_ms=args.talk_ms,
        recv_timeout_ms=int(args.ring_seconds * 1000) + 10000,
        prefix=prefix,
        timeout=timeout,
        workdir=workdir,
        options=["-trace_logs", "-log_file", str(log)],
    )
    pids: dict[str, int] = ctx["pids"]
    devices: list[Device] = ctx["devices"]
    state_dir: Path = ctx["state_dir"]
    stack_pids = running_stack_pids(state_dir)
    pids["kamailio"], pids["asterisk"] = stack_pids[0] or 0, stack_pids[1] or 0

    def sample() -> dict[str, float]:
        return cpu_sample(pids, [d.process.pid for d in devices])

    ports: PortWatcher = ctx["ports"]
    ports.wait_drained(args.drained, 60)
    metrics_before = metrics(ctx["metrics_port"])
    before, busy_before, started = sample(), machine_busy(), time.monotonic()
    with (
        PortWatcher(ports.first, ports.last) as watcher,
        contextlib.suppress(
            subprocess.TimeoutExpired  # sipp killed by its PID then
        ),
    ):
        subprocess.run(
            command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=timeout + 10, check=False,
        )  # fmt: skip
    step = Step(label, rate, calls, wall=time.monotonic() - started, rtp_peak=watcher.peak)
    step.metrics_before = metrics_before
    burst, busy_after = sample(), machine_busy()
    step.burst_cpu = cpu_spent(before, burst)
    step.busy = busy_share(busy_before, busy_after)
    if totals := last_sipp_stats(stats):
        step.successful = int(totals["SuccessfulCall(C)"])
        step.failed = int(totals["FailedCall(C)"])
    calls_by_id: dict[str, PanelCall] = {}
    for kind, call_id, panel, at in parse_log(log):
        if kind == "PANEL_INVITE" and at is not None:
            calls_by_id[call_id] = PanelCall(call_id, panel, at)
        elif kind == "PANEL_200" and call_id in calls_by_id:
            calls_by_id[call_id].answered_at = at
    step.panel_calls = list(calls_by_id.values())
    # Let the step's calls end (ring timeout at worst) before the next one; what is left is stuck.
    deadline = time.monotonic() + args.ring_seconds + 5
    left = -1  # unknown: ARI did not answer (too many HTTP sessions)
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            left = app_channels(ctx["ari"], APP, app_data_prefix=APP)
            if not left:
                break
        time.sleep(0.5)
    step.leftover_channels = left
    step.metrics_after = metrics(ctx["metrics_port"])
    # The CPU of a call includes what Asterisk does until it frees the call's RTP ports.
    ports.wait_drained(args.drained, 60)
    step.cpu = cpu_spent(before, sample())
    step.stack_restarted = stack_pids != running_stack_pids(state_dir)
    return step


# ---- analysis ----


def winner_200s(trace: Path) -> dict[str, float]:
    """Call-ID -> time the winning device sent its (first) 200 OK to the INVITE."""
    sent: dict[str, float] = {}
    if not trace.is_file():
        return sent
    blocks = re.split(r"^-{20,} (\S+ \S+)$", trace.read_text(errors="replace"), flags=re.M)
    for stamp, body in zip(blocks[1::2], blocks[2::2], strict=True):
        text = body.lstrip()
        if not text.startswith("UDP message sent"):
            continue
        message = text.split(":", 1)[1].lstrip()
        if not message.startswith("SIP/2.0 200") or not re.search(
            r"^CSeq: *\d+ INVITE", message, re.M
        ):
            continue
        call_id = re.search(r"^Call-ID: *(\S+)", message, re.M)
        if call_id and call_id.group(1) not in sent:
            sent[call_id.group(1)] = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
    return sent


def analyse(
    steps: list[Step], devices: list[Device], entered: list[dict[str, Any]], legs: int
) -> None:
    # Panel calls by panel account, in time order: a leg belongs to the latest call of its
    # panel that started before it (the same panel is used again only --panels calls later).
    by_panel: dict[str, list[PanelCall]] = defaultdict(list)
    for step in steps:
        for call in step.panel_calls:
            by_panel[call.panel].append(call)
    for calls in by_panel.values():
        calls.sort(key=lambda c: c.invite_at)
    leg_invite: dict[str, tuple[int, float]] = {}
    leg_cancel: dict[str, float] = {}
    for device in devices:
        for kind, call_id, panel, at in parse_log(device.log):
            if kind == "LEG_INVITE" and at is not None:
                leg_invite[call_id] = (device.index, at)
                candidates = [c for c in by_panel.get(panel, []) if c.invite_at <= at + 0.01]
                if candidates:
                    candidates[-1].legs.append(call_id)
            elif kind == "LEG_CANCEL" and at is not None:
                leg_cancel[call_id] = at
    sent_200 = winner_200s(devices[0].trace) if devices[0].trace else {}
    bridged: dict[str, float] = {}  # panel SIP Call-ID -> winner entered the bridge
    panel_of_bridge = {e["bridge"]: e["sip_call_id"] for e in entered if e["sip_call_id"]}
    for e in entered:
        if e["channel"].startswith(f"{APP}-") and e["bridge"] in panel_of_bridge:
            bridged.setdefault(panel_of_bridge[e["bridge"]], e["at"])
    for step in steps:
        for call in step.panel_calls:
            if len(call.legs) < legs:
                step.missing_legs += legs - len(call.legs)
            winners = [leg for leg in call.legs if leg_invite[leg][0] == 0]
            losers = [leg for leg in call.legs if leg_invite[leg][0] != 0]
            step.left_ringing += sum(1 for leg in losers if leg not in leg_cancel)
            answered = sent_200.get(winners[0]) if winners else None
            if answered is None:
                continue
            if call.call_id in bridged:
                step.to_bridge.append(bridged[call.call_id] - answered)
            else:
                step.unbridged += 1
            if losers and all(leg in leg_cancel for leg in losers):
                step.to_last_cancel.append(max(leg_cancel[leg] for leg in losers) - answered)
            if call.answered_at is not None:
                step.to_panel_200.append(call.answered_at - answered)


def report(steps: list[Step], args: argparse.Namespace, ari_log: Path, rtp_ports: int) -> None:
    print(
        "\n| step | calls/s | calls | ok % | 200->bridge ms p50/p95/p99"
        " | 200->last CANCEL ms p50/p95/p99 | 200->panel 200 ms p50/p95/p99"
        " | ARI CPU ms/call | Asterisk CPU ms/call | ARI/Asterisk | Kamailio ms/call"
        " | sipp ms/call | ARI / Asterisk % of a core | machine busy %"
        f" | RTP ports peak (of {rtp_ports}) | ARI commands refused | not bridged | left ringing"
        " | stuck channels |"
    )
    print("|---" * 19 + "|")
    for s in steps:
        ari, asterisk = s.ms_per_call("ari"), s.ms_per_call("asterisk")
        core = " / ".join(
            f"{100 * s.burst_cpu.get(name, 0) / max(s.wall, 1e-9):.0f}"
            for name in ("ari", "asterisk")
        )
        print(
            f"| {s.label} | {s.rate:g} | {s.calls} | {100 * s.successful / max(s.calls, 1):.1f}"
            f" | {triple(s.to_bridge)} | {triple(s.to_last_cancel)} | {triple(s.to_panel_200)}"
            f" | {ari:.1f} | {asterisk:.1f} | {ari / asterisk if asterisk else math.nan:.2f}"
            f" | {s.ms_per_call('kamailio'):.1f} | {s.ms_per_call('sipp'):.1f}"
            f" | {core} | {100 * s.busy:.0f} | {s.rtp_peak} | {s.command_errors()}"
            f" | {s.unbridged} | {s.left_ringing} | {s.leftover_channels} |"
        )
    notes = []
    for s in steps:
        if s.stack_restarted:
            notes.append(f"{s.label}: Kamailio or Asterisk was restarted during the step: void")
        if s.missing_legs:
            notes.append(f"{s.label}: {s.missing_legs} legs never reached a device")
        if s.wall > s.calls / s.rate + args.talk_ms / 1000 + args.ring_seconds + 5:
            notes.append(f"{s.label}: took {s.wall:.0f} s (sipp could not keep the rate)")
    last = steps[-1].metrics_after if steps else {}
    for name, value in sorted(last.items()):
        if value and "_seconds_" not in name:
            notes.append(f"ARI metric at the end: {name} = {value:g}")
    levels: dict[str, int] = defaultdict(int)
    samples: dict[str, str] = {}
    for line in ari_log.read_text(errors="replace").splitlines():
        match = re.search(
            r'"level": *"(warning|error|critical)".*?"msg": *"([^"]{0,120})', line, re.I
        )
        if match:
            text = re.sub(r"(channel|bridge)_id='[^']*'", r"\1", match.group(2))
            text = re.sub(r"\d+(\.\d+)+|\b[0-9a-f]{16,}\b", "N", text)
            reason = line.split('"msg": "', 1)[1].split('"', 1)[0].rsplit(": ", 1)[-1][:40]
            key = f"{match.group(1).upper()} {text[:45]} ... {reason}"
            levels[key] += 1
            samples.setdefault(key, line[:400])
    for key, count in sorted(levels.items(), key=lambda kv: -kv[1]):
        notes.append(f"ARI log: {count} x {key}")
    print_command_table(
        "\nCommands of the ARI process: per call x mean ms (ARI round trip; LookupFlat: directory)",
        "step",
        [(s.label, s.command_ms()) for s in steps],
    )
    print()
    for note in notes or ["nothing unusual: no ARI warnings, no stuck channels"]:
        print(f"- {note}")
    if samples:
        print("\nfirst ARI log line of each kind:")
        for line in samples.values():
            print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--legs", type=int, default=10, help="devices of the flat")
    parser.add_argument("--panels", type=int, default=300, help="panel accounts, used in turn")
    parser.add_argument("--answer-ms", type=int, default=300, help="the winner answers after")
    parser.add_argument("--talk-ms", type=int, default=500, help="the panel hangs up after")
    parser.add_argument("--ring-seconds", type=float, default=10)
    parser.add_argument("--latency-rate", type=float, default=5, help="latency run, calls/s")
    parser.add_argument("--latency-calls", type=int, default=300, help="0: no latency run")
    parser.add_argument("--rates", default="2,5,10,20,30,40", help="calls/s of the steps")
    parser.add_argument("--seconds", type=float, default=20, help="per rate step, at most")
    parser.add_argument(
        "--step-calls",
        type=int,
        default=0,
        help="calls per rate step, at most (0: rate x seconds)",
    )
    add_step_arguments(parser)
    add_artifact_arguments(parser)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r]

    settings = load_settings()
    state_dir = settings.stack.state_dir
    asterisk_pid, kamailio_pid = preflight(settings, APP)
    sip = f"{settings.kamailio.sip_ip}:{settings.kamailio.sip_port}"
    # Every live channel holds 2 ports (RTP + RTCP) of Asterisk's range: 2 x (legs + 1) per
    # call while it rings; the steps report the peak.
    first_port, last_port = settings.asterisk.rtp_start, settings.asterisk.rtp_end
    rtp_ports = last_port - first_port + 1
    step_sizes = [min(int(rate * args.seconds), args.step_calls or 1_000_000) for rate in rates]
    planned = args.latency_calls / args.latency_rate + sum(
        n / rate + 8 for n, rate in zip(step_sizes, rates, strict=True)
    )
    budget = int(planned * 1.5 + 120)
    print(
        f"panel -> Kamailio {sip} -> routing -> Asterisk -> multiring -> {args.legs} devices;"
        f" device 0 answers after {args.answer_ms} ms, the panel talks {args.talk_ms} ms;"
        f" ring time {args.ring_seconds:g} s; RTP ports {first_port}-{last_port};"
        f" about {planned / 60:.1f} min",
        flush=True,
    )
    tmp = tempfile.mkdtemp(prefix="multiring-bench-")
    workdir = Path(tmp)
    steps: list[Step] = []
    with ExitStack() as stack:
        # Routes, directory and the calls' events: a scratch database of the run's own.
        database = stack.enter_context(
            temporary_database(settings.database, prefix="softswitch_bench")
        )
        fixture = stack.enter_context(directory(settings, database.url, args.panels, args.legs))
        route = {
            "name": f"bench: panels {fixture.tag} call flats",
            "priority": 1,
            "match": {"caller": f"^bp{fixture.tag}\\d+$", "callee": r"^\d{1,4}$"},
            "action": "app",
            "app": APP,
        }
        add_app_route(database.url, route)
        routing_pid = stack.enter_context(
            routing_service(settings, database.url, workdir / "routing.log")
        )
        device_list = stack.enter_context(devices(fixture, args, workdir, budget))
        registrations = list(zip(device_list, fixture.devices, strict=True))

        def unregister() -> None:  # Expires: 0 (Kamailio caches usrloc: rows alone won't do)
            for device, (account, password) in registrations:
                with contextlib.suppress(SystemExit, subprocess.TimeoutExpired):
                    register(sip, account, password, device.port, 0, workdir)

        stack.callback(unregister)
        for device, (account, password) in registrations:
            register(sip, account, password, device.port, budget + 60, workdir)
        watcher = stack.enter_context(BridgeWatcher(settings.ari, f"bench{fixture.tag}"))
        metrics_port = free_udp_port()
        ari_log = workdir / "ari.log"
        # `softswitch ari --app multiring` on the scratch database (directory, outbox).
        ari_env = {
            "SOFTSWITCH_MULTIRING_RING_SECONDS": str(args.ring_seconds),
            "SOFTSWITCH_DIRECTORY_CRM_URL": "",
            "SOFTSWITCH_DIRECTORY_PUSH_URL": "",
            "SOFTSWITCH_METRICS_HOST": "127.0.0.1",
            "SOFTSWITCH_METRICS_PORT": str(metrics_port),
        }
        ari_process = stack.enter_context(
            ari_app(APP, args.ari_profile, database.url, ari_log, ari_env)
        )
        panels_csv = workdir / "panels.csv"
        panels_csv.write_text("SEQUENTIAL\n" + "".join(f"{p};\n" for p in fixture.panels))
        ctx: dict[str, Any] = {
            "workdir": workdir,
            "sip": sip,
            "panels_csv": panels_csv,
            "ari": settings.ari,
            "metrics_port": metrics_port,
            "devices": device_list,
            "state_dir": state_dir,
            "ports": PortWatcher(first_port, last_port),
            "pids": {
                "ari": ari_process.pid,
                "asterisk": asterisk_pid,
                "kamailio": kamailio_pid,
                "routing": routing_pid,
            },
        }
        header = (
            "| step | calls/s | calls | ok | failed | wall s | ARI ms/call | Asterisk ms/call |"
        )
        print(f"\n{header}\n" + "|---" * 8 + "|", flush=True)

        def run(label: str, rate: float, calls: int) -> Step:
            step = run_step(label, rate, calls, ctx, args)
            print(
                f"| {label} | {rate:g} | {calls} | {step.successful} | {step.failed}"
                f" | {step.wall:.1f} | {step.ms_per_call('ari'):.2f}"
                f" | {step.ms_per_call('asterisk'):.2f} |",
                flush=True,
            )
            return step

        if args.warmup_calls:
            run("warm-up", 2, args.warmup_calls)
        if args.latency_calls:
            steps.append(run("latency", args.latency_rate, args.latency_calls))
        for rate, calls in zip(rates, step_sizes, strict=True):
            steps.append(run(f"{rate:g}/s", rate, calls))
        time.sleep(1)  # the last events reach the watcher
        entered = list(watcher.entered)
    analyse(steps, device_list, entered, args.legs)
    report(steps, args, ari_log, rtp_ports)
    clean_up_workdir(workdir, args.keep)


if __name__ == "__main__":
    main()
