"""End-to-end call rate: sipp -> Kamailio -> routing service -> sipp UAS, vs static relaying.

One run measures both modes against the same Kamailio binary and rendered config:

- **routed**: the stack's Kamailio as it runs, asking `softswitch routing` (started here on
  the routing port, on a scratch database holding a realistic 10k-route table plus one route
  that relays the benchmark's callee to the sipp UAS) for every initial INVITE;
- **static**: the same Kamailio started with ``-A WITH_STATIC_BENCH``, relaying each initial
  INVITE to its R-URI without any HTTP query. The stack's Kamailio is stopped for this mode
  and restored (started and waited for) in a ``finally``.

sipp's built-in uac sends every call to Kamailio (``-rsa``) with the UAS as R-URI host, so the
two modes run the very same sipp command line. For each mode the rate ramps up by ``--step``
until a step fails (more than ``--max-failures`` of its calls failed or never completed, or it
could not keep its rate), then bisects down to ``--resolution``. A failed step is repeated
(``--retries``, once by default) before it counts: on a shared machine a burst of other load
must not end a ramp early. Kamailio CPU (all its processes, from /proc) and the routing
service's CPU are divided by the calls of the step. Prints every step, then a markdown table
and the ratio routed/static.

    .venv/bin/python bench/routing_e2e.py [--seconds 10] [--start 1000] [--step 500]

Needs the local stack up (softswitch stack up) and the routing port free (no `softswitch
demo` or e2e test session running). Loopback only; every sipp has -timeout and a subprocess
timeout and is stopped by its PID; the whole run stops ramping after ``--budget`` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds, database_with_routes, stop_cleanly_on_sigterm

from routing.models import RouteSpec
from softswitch.settings import Settings, load_settings
from softswitch.stack import services
from softswitch.stack.host import port_open

REPO = Path(__file__).resolve().parents[1]
UAS_SCENARIO = REPO / "tests" / "e2e" / "scenarios" / "uas_no180.xml"
# A DID-like callee, routed by a route placed before the realistic table's own routes.
CALLEE = "74959999999"
# Socket buffers of both sipps (their default, 64 KB, drops datagrams of bursts at these rates:
# the benchmark would measure sipp, not Kamailio); Kamailio's own is `maxbuffer` in its config.
SIPP_BUFFER = str(4 * 1024 * 1024)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def kamailio_cpu() -> float:
    """User + system CPU seconds of every running kamailio process (one instance at a time)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "kamailio":
                total += cpu_seconds(int(entry.name))
        except OSError:  # exited meanwhile
            continue
    return total


def route_to_uas(uas_port: int) -> RouteSpec:
    """The benchmark's callee to the sipp UAS, ahead of the realistic table's own routes."""
    return RouteSpec.model_validate(
        {
            "name": "bench: callee to the sipp UAS",
            "priority": 1,
            "match": {"callee": f"^{CALLEE}$"},
            "action": "relay",
            "destinations": [f"sip:127.0.0.1:{uas_port}"],
        }
    )


@contextmanager
def routing_service(settings: Settings, database_url: str, log_path: Path) -> Iterator[int]:
    """`softswitch routing` on the port Kamailio asks; yields its PID once the table is loaded."""
    health = f"http://{settings.routing.host}:{settings.routing.port}/health"
    child = subprocess.Popen(
        [sys.executable, "-m", "softswitch", "routing"],
        env={**os.environ, "SOFTSWITCH_DATABASE_URL": database_url},
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("wb"),
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if child.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"routing service did not come up; see {log_path}")
            try:
                if httpx.get(health, timeout=1).json()["routes"] > 0:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        yield child.pid
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@contextmanager
def sipp_uas(port: int, workdir: Path, seconds: int) -> Iterator[int]:
    command = [
        "sipp", "-sf", str(UAS_SCENARIO),
        "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(port), "-buff_size", SIPP_BUFFER,
        "-timeout", f"{seconds}s", "-nostdin",
    ]  # fmt: skip
    child = subprocess.Popen(
        command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(0.5)
        if child.poll() is not None:
            raise SystemExit(f"sipp UAS exited at start ({child.returncode}); port {port} busy?")
        yield child.pid
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(10)


@dataclass(frozen=True)
class Step:
    mode: str
    rate: int
    calls: int
    successful: int
    retransmissions: int
    wall: float
    kamailio_cpu: float
    routing_cpu: float

    @property
    def failed(self) -> int:
        # Calls never completed (lost, still open at -timeout) count as failed too.
        return self.calls - self.successful

    def ok(self, seconds: float, max_failures: float, call_ms: int) -> bool:
        # A step that needed much longer than planned did not keep its rate.
        kept_rate = self.wall <= seconds * 1.2 + call_ms / 1000 + 3
        return kept_rate and self.failed <= self.calls * max_failures

    def ms_per_call(self, cpu: float) -> float:
        return cpu * 1000 / max(self.successful, 1)


def run_step(
    mode: str, rate: int, args: argparse.Namespace, uas_port: int, routing_pid: int | None,
    workdir: Path, sip: str,
) -> Step:  # fmt: skip
    calls = int(rate * args.seconds)
    prefix = f"{mode}-{rate}-{secrets.token_hex(3)}"
    stats = workdir / f"{prefix}.csv"
    timeout = int(args.seconds * 1.5) + 15
    command = [
        "sipp", f"127.0.0.1:{uas_port}", "-sn", "uac", "-s", CALLEE, "-rsa", sip,
        "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(free_udp_port()),
        "-buff_size", SIPP_BUFFER,
        "-r", str(rate), "-rp", "1000", "-m", str(calls), "-l", str(rate * 5),
        "-d", str(args.call_ms), "-recv_timeout", "5000",
        "-timeout", f"{timeout}s", "-timeout_error", "-nostdin",
        "-trace_stat", "-stf", str(stats),
    ]  # fmt: skip
    kamailio_before, routing_before = kamailio_cpu(), process_cpu(routing_pid)
    started = time.monotonic()
    # On TimeoutExpired, subprocess.run has already killed sipp by its PID.
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(
            command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=timeout + 10, check=False,
        )  # fmt: skip
    wall = time.monotonic() - started
    successful = retransmissions = 0
    if stats.is_file():
        rows = list(csv.DictReader(stats.open(), delimiter=";"))
        if rows:
            successful = int(rows[-1]["SuccessfulCall(C)"])
            retransmissions = int(rows[-1]["Retransmissions(C)"])
    return Step(
        mode, rate, calls, successful, retransmissions, wall,
        kamailio_cpu() - kamailio_before, process_cpu(routing_pid) - routing_before,
    )  # fmt: skip


def ramp(
    mode: str, args: argparse.Namespace, uas_port: int, routing_pid: int | None, workdir: Path,
    sip: str, deadline: float,
) -> Step | None:  # fmt: skip
    """Highest passing step: linear ramp until a step fails, then bisection."""
    best: Step | None = None
    failed_rate: int | None = None

    def attempt(rate: int) -> bool:
        """One step; a failed step is repeated ``--retries`` times (the machine is shared,
        a burst of other load must not end a ramp), and passes if any repetition passes."""
        nonlocal best, failed_rate
        for _ in range(1 + args.retries):
            step = run_step(mode, rate, args, uas_port, routing_pid, workdir, sip)
            passed = step.ok(args.seconds, args.max_failures, args.call_ms)
            print(
                f"| {mode} | {rate:,} | {step.calls:,} | {step.failed:,}"
                f" | {step.retransmissions:,} | {step.wall:.1f}"
                f" | {step.ms_per_call(step.kamailio_cpu):.3f}"
                f" | {step.ms_per_call(step.routing_cpu):.3f} | {'yes' if passed else 'no'} |",
                flush=True,
            )
            time.sleep(args.settle)  # let transactions and dialogs of the step end
            if passed:
                best = step
                return True
            if time.monotonic() > deadline:
                break
        failed_rate = rate
        return False

    rate = args.start
    while time.monotonic() < deadline and rate <= args.max_rate and attempt(rate):
        rate += args.step
    low = best.rate if best else 0
    while (
        failed_rate is not None
        and failed_rate - low > args.resolution
        and time.monotonic() < deadline
    ):
        middle = (low + failed_rate) // 2
        if attempt(middle):
            low = middle
    return best


# The stack's Kamailio command with the static relay switch (pid and log in our temp folder).
STATIC_KAMAILIO = dataclasses.replace(
    services.KAMAILIO,
    name="kamailio-static-bench",
    command=(*services.KAMAILIO.command, "-A", "WITH_STATIC_BENCH"),
)


def wait_kamailio_gone(timeout: float = 15) -> None:
    """The main process exits first; its children may still hold the SIP port a moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = []
        for entry in Path("/proc").iterdir():
            try:
                names.append((entry / "comm").read_text().strip())
            except OSError:
                continue
        if "kamailio" not in names:
            return
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="per rate step")
    parser.add_argument("--start", type=int, default=1000, help="first rate, calls/s")
    parser.add_argument("--step", type=int, default=500, help="ramp increment, calls/s")
    parser.add_argument("--resolution", type=int, default=125, help="bisection stops here")
    parser.add_argument("--max-rate", type=int, default=10000)
    parser.add_argument("--max-failures", type=float, default=0.001, help="fraction of calls")
    parser.add_argument("--call-ms", type=int, default=100, help="sipp -d (call length)")
    parser.add_argument("--settle", type=float, default=3, help="pause between steps, s")
    parser.add_argument("--retries", type=int, default=1, help="repeats of a failed step")
    parser.add_argument("--routes", type=int, default=10000)
    parser.add_argument("--modes", default="routed,static")
    parser.add_argument("--budget", type=float, default=450, help="ramping time of all modes, s")
    args = parser.parse_args()
    modes = args.modes.split(",")
    stop_cleanly_on_sigterm()

    settings = load_settings()
    stack_dir, chroot = settings.stack.state_dir, settings.stack.chroot_dir
    routing = settings.routing
    if port_open(routing.host, routing.port):
        raise SystemExit(
            f"{routing.url}: something already listens there (`softswitch demo`, `softswitch"
            " routing` or an e2e test session?); stop it first"
        )
    if services.running_pid(services.KAMAILIO, stack_dir) is None:
        raise SystemExit("the stack's Kamailio is not running: softswitch stack up")
    sip = f"{settings.kamailio.sip_ip}:{settings.kamailio.sip_port}"
    mode_budget = args.budget / len(modes)  # each mode its share: no mode starves the other
    uas_port = free_udp_port()
    best: dict[str, Step | None] = {}
    print(
        f"sipp uac -> Kamailio {sip} -> sipp UAS 127.0.0.1:{uas_port}; {args.seconds:.0f} s"
        f" per step, call length {args.call_ms} ms, {args.routes:,} routes;"
        f" pass = failed calls <= {args.max_failures:.1%} and rate kept\n"
    )
    print(
        "| mode | calls/s | calls | failed | retransmissions | wall s"
        " | Kamailio CPU ms/call | routing CPU ms/call | pass |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with (
        tempfile.TemporaryDirectory(prefix="routing-e2e-") as tmp,
        database_with_routes(args.routes, route_to_uas(uas_port)) as database,
        sipp_uas(uas_port, Path(tmp), int(args.budget) + 120),
    ):
        workdir = Path(tmp)
        if "routed" in modes:
            with routing_service(settings, database.url, workdir / "routing.log") as pid:
                deadline = time.monotonic() + mode_budget
                best["routed"] = ramp("routed", args, uas_port, pid, workdir, sip, deadline)
        if "static" in modes:
            bench_settings = settings.model_copy(
                update={"stack": settings.stack.model_copy(update={"state_dir": workdir})}
            )
            services.stop(services.KAMAILIO, stack_dir)
            try:
                wait_kamailio_gone()
                services.start(STATIC_KAMAILIO, chroot, workdir)
                services.wait_ready(STATIC_KAMAILIO, bench_settings, timeout=30)
                deadline = time.monotonic() + mode_budget
                best["static"] = ramp("static", args, uas_port, None, workdir, sip, deadline)
            finally:
                services.stop(STATIC_KAMAILIO, workdir)
                wait_kamailio_gone()
                services.start(services.KAMAILIO, chroot, stack_dir)
                services.wait_ready(services.KAMAILIO, settings, timeout=60)

    print(
        "\n| mode | max calls/s with <0.1% failures | failed calls at that rate"
        " | Kamailio CPU ms/call | routing service CPU ms/call |"
    )
    print("|---|---|---|---|---|")
    for mode, step in best.items():
        if step is None:
            print(f"| {mode} | none passed (from {args.start:,}) | | | |")
            continue
        routing_ms = f"{step.ms_per_call(step.routing_cpu):.3f}" if mode == "routed" else "-"
        print(
            f"| {mode} | {step.rate:,} | {step.failed} of {step.calls:,}"
            f" | {step.ms_per_call(step.kamailio_cpu):.3f} | {routing_ms} |"
        )
    routed, static_step = best.get("routed"), best.get("static")
    if routed and static_step:
        print(f"\nratio routed/static: {routed.rate / static_step.rate:.2f}")


if __name__ == "__main__":
    main()
