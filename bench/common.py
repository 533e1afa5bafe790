"""What the benchmarks share: CPU time of a process, a scratch database of routes, and for the
call benchmarks of the ARI apps (multiring, acd_queue): their pre-flight checks and options, the
run's SIP accounts, sipp, our ARI process, Asterisk's events and ports, and step measurements.

routing_e2e imports this module: its helpers (free ports, CPU of a PID) are imported where they
are called, not at import time, or the two modules could not be loaded one from the other.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import random
import re
import resource
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
from routing_engine import realistic_table

from routing.models import RouteSpec
from routing.store import apply_import
from softswitch.accounts import upsert_account
from softswitch.db import temporary_database
from softswitch.settings import AriSettings, DatabaseSettings, Settings, load_settings
from softswitch.stack import services
from softswitch.stack.host import port_open

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "tests" / "e2e" / "scenarios"


def stop_cleanly_on_sigterm() -> None:
    """`kill <benchmark>` unwinds like Ctrl-C: its ``finally`` blocks stop the sipps and
    services it started and restore the stack's Kamailio, instead of leaving them running."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def database_with_routes(routes: int, *first: RouteSpec) -> Iterator[DatabaseSettings]:
    """A temporary database holding ``first`` and a realistic table of ``routes`` routes."""
    with temporary_database(load_settings().database, prefix="softswitch_bench") as database:
        rows, _ = realistic_table(routes, random.Random(7))
        with psycopg.connect(database.url) as conn:
            apply_import(conn, [*first, *(spec for _, spec in rows)], replace=False)
        yield database


# ---- a run of an ARI app: checks, options, scratch data ----


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """How every step starts: after the previous one's RTP ports are free, and after a warm-up."""
    parser.add_argument(
        "--drained",
        type=float,
        default=0.05,
        help="a step starts when at most this fraction of the RTP range is in use",
    )
    parser.add_argument("--warmup-calls", type=int, default=10)


def add_artifact_arguments(parser: argparse.ArgumentParser) -> None:
    """What a run may leave behind for a closer look: its logs and a profile of our process."""
    parser.add_argument("--keep", action="store_true", help="keep the sipp and ARI logs")
    parser.add_argument(
        "--ari-profile", type=Path, help="run the ARI process under cProfile, stats to this file"
    )


def preflight(settings: Settings, app: str) -> tuple[int, int]:
    """Refuse to run (SystemExit) where the run would measure or disturb someone else: the routing
    port taken, the stack down, the Stasis app served already. The PIDs of Asterisk and Kamailio.
    """
    routing, state_dir = settings.routing, settings.stack.state_dir
    if port_open(routing.host, routing.port):
        raise SystemExit(
            f"{routing.url}: something already listens there (`softswitch demo`, `softswitch"
            " routing` or an e2e test session?); stop it first"
        )
    asterisk_pid = services.running_pid(services.ASTERISK, state_dir)
    kamailio_pid = services.running_pid(services.KAMAILIO, state_dir)
    if asterisk_pid is None or kamailio_pid is None:
        raise SystemExit("the stack is not running: softswitch stack up")
    if any(a["name"] == app for a in ari_get(settings.ari, "applications")) and tcp_clients(
        urlsplit(settings.ari.url).port or 8088
    ):
        # Registered without any ARI client connected: leftovers of a stopped process, which
        # our ARI process adopts or cleans up when it connects.
        raise SystemExit(f"another process may serve the Stasis app {app}; stop it first")
    return asterisk_pid, kamailio_pid


def add_app_route(database_url: str, route: Mapping[str, Any]) -> None:
    """The one route of the run (to the app under test) in its scratch database."""
    with psycopg.connect(database_url) as conn:
        apply_import(conn, [RouteSpec.model_validate(route)], replace=False)


@contextmanager
def sip_accounts(settings: Settings, accounts: Sequence[tuple[str, str]]) -> Iterator[None]:
    """The run's (account, password) SIP accounts in the stack's database, where Kamailio reads
    them; removed after, with their registrations, so the shared stack keeps nothing of the run."""
    url, domain = settings.database.url, settings.kamailio.sip_domain
    try:
        for account, password in accounts:
            upsert_account(url, account, domain, password)
        yield
    finally:
        usernames = [account for account, _ in accounts]
        with psycopg.connect(url) as conn:
            conn.execute("DELETE FROM subscriber WHERE username = ANY(%s)", (usernames,))
            conn.execute("DELETE FROM location WHERE username = ANY(%s)", (usernames,))


def clean_up_workdir(workdir: Path, keep: bool) -> None:
    """The run's logs: kept (and said where) with --keep, removed otherwise."""
    if keep:
        print(f"\nlogs kept in {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


# ---- sipp ----


def register(
    sip: str, account: str, password: str, contact_port: int, expires: int, workdir: Path
) -> None:
    """REGISTER ``account`` with a sipp UAS's port as its contact (``expires`` 0: unregister)."""
    from routing_e2e import free_udp_port

    command = [
        "sipp", sip, "-sf", str(SCENARIOS / "bench_register.xml"), "-s", account,
        "-au", account, "-ap", password,
        "-key", "contact_port", str(contact_port), "-key", "expires", str(expires),
        "-i", "127.0.0.1", "-p", str(free_udp_port()), "-m", "1",
        "-timeout", "10s", "-timeout_error", "-nostdin",
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=20, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"REGISTER {account} failed ({done.returncode}): {done.stdout[-500:]}")


def step_prefix(label: str) -> str:
    """A step's name for its files and its sipp Call-IDs: its label, made unique."""
    return f"{re.sub(r'[^a-z0-9]+', '-', label)}-{secrets.token_hex(2)}"


def sipp_callers(
    sip: str,
    scenario: Path,
    service: str,
    callers_csv: Path,
    *,
    rate: float,
    calls: int,
    talk_ms: int,
    recv_timeout_ms: int,
    prefix: str,
    timeout: int,
    workdir: Path,
    options: Sequence[str] = (),
) -> list[str]:
    """The sipp UAC of a step: ``calls`` at ``rate`` to ``service``, From users in turn from
    ``callers_csv``, Call-IDs named by the step's ``prefix``, its statistics in
    ``{prefix}.csv`` and errors in ``{prefix}-errors.log``; ``options``: the bench's own."""
    from routing_e2e import free_udp_port

    return [
        "sipp", sip, "-sf", str(scenario), "-s", service, "-inf", str(callers_csv),
        "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(free_udp_port()),
        "-r", f"{rate:g}", "-rp", "1000", "-m", str(calls), "-l", str(int(rate * 30) + 20),
        "-d", str(talk_ms), "-recv_timeout", str(recv_timeout_ms),
        "-cid_str", f"{prefix}-%u@%s",
        "-timeout", f"{timeout}s", "-timeout_error", "-nostdin",
        "-trace_stat", "-stf", str(workdir / f"{prefix}.csv"),
        "-trace_err", "-error_file", str(workdir / f"{prefix}-errors.log"),
        *options,
    ]  # fmt: skip


def last_sipp_stats(stats: Path) -> dict[str, str]:
    """The last row of a sipp -trace_stat file (its totals, such as SuccessfulCall(C)); empty
    where sipp wrote none."""
    if not stats.is_file():
        return {}
    with stats.open() as lines:
        rows = list(csv.DictReader(lines, delimiter=";"))
    return rows[-1] if rows else {}


def stop_sipps(processes: Iterable[subprocess.Popen[bytes]]) -> None:
    """Stop sipp processes by their PID: SIGUSR1 to all (sipp stops, flushes its logs and
    exits), then wait for each, killing one that does not exit."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGUSR1)  # sipp: stop, flush, exit
    for process in processes:
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# ---- our ARI process and Asterisk ----


@contextmanager
def ari_app(
    app: str,
    profile: Path | None,
    database_url: str,
    log_path: Path,
    env: Mapping[str, str],
    *,
    ready: Sequence[str] = ('"ARI connected"',),
    waiting_for: str = "connect",
) -> Iterator[subprocess.Popen[bytes]]:
    """`softswitch ari --app {app}` on the run's scratch database, JSON logs, the bench's own
    ``env``, optionally under cProfile, until every ``ready`` text is in its log; SIGTERM after."""
    child = subprocess.Popen(
        [
            sys.executable,
            *(["-m", "cProfile", "-o", str(profile)] if profile else []),
            *("-m", "softswitch", "ari", "--app", app),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("wb"),
        env={
            **os.environ,
            "SOFTSWITCH_DATABASE_URL": database_url,
            "SOFTSWITCH_LOG_JSON_FORMAT": "true",
            **env,
        },
    )
    try:
        deadline = time.monotonic() + 30
        while not all(text in log_path.read_text() for text in ready):
            if child.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"softswitch ari did not {waiting_for}; see {log_path}")
            time.sleep(0.1)
        yield child
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            code = child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait()
        if code != 0:
            print(f"warning: softswitch ari exited with {code}; see {log_path}", file=sys.stderr)


def ari_params(ari: AriSettings) -> dict[str, str]:
    """The query parameters that authenticate an ARI request."""
    password = ari.password.get_secret_value() if ari.password else ""
    return {"api_key": f"{ari.user}:{password}"}


def ari_get(ari: AriSettings, path: str) -> Any:
    """GET an ARI resource; retried: Asterisk refuses HTTP sessions beyond its sessionlimit."""
    for attempt in range(5):
        try:
            answer = httpx.get(
                f"{ari.url.rstrip('/')}/ari/{path}", params=ari_params(ari), timeout=5
            )
            answer.raise_for_status()
            return answer.json()
        except httpx.TransportError:
            if attempt == 4:
                raise
            time.sleep(0.5)


def app_channels(ari: AriSettings, app: str, *, app_data_prefix: str) -> int:
    """Channels of the app still in Asterisk: its legs (their ids carry the app's prefix) and
    the calls in Stasis (their dialplan app_data starts with ``app_data_prefix``)."""
    return sum(
        1
        for c in ari_get(ari, "channels")
        if c["id"].startswith(f"{app}-")
        or c.get("dialplan", {}).get("app_data", "").startswith(app_data_prefix)
    )


def tcp_clients(port: int) -> int:
    """Established TCP connections to a local port (websockets of ARI clients)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                count += local_port == port and fields[3] == "01"
    return count


class BridgeWatcher:
    """ChannelEnteredBridge events of every channel, on an ARI websocket of our own."""

    def __init__(self, ari: AriSettings, app: str) -> None:
        self._base = ari.url.rstrip("/")
        self._params = ari_params(ari)
        self._app = app
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.entered: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BridgeWatcher:
        self._thread.start()
        if not self._ready.wait(15):
            raise SystemExit(f"ARI websocket of the bench did not come up: {self._error!r}")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        import asyncio

        try:
            asyncio.run(self._listen())
        except BaseException as exc:  # reported by __enter__ or seen as missing events
            self._error = exc

    async def _listen(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            ws_url = self._base.replace("http", "ws", 1) + "/ari/events"
            params = {**self._params, "app": self._app, "subscribeAll": "true"}
            async with http.ws_connect(ws_url, params=params) as ws:
                answer = await http.put(
                    f"{self._base}/ari/applications/{self._app}/eventFilter",
                    params=self._params,
                    json={"allowed": [{"type": "ChannelEnteredBridge"}]},
                )
                answer.raise_for_status()
                self._ready.set()
                while not self._stop.is_set():
                    try:
                        message = await ws.receive(timeout=0.5)
                    except TimeoutError:
                        continue
                    if message.type != aiohttp.WSMsgType.TEXT:
                        if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            return
                        continue
                    raw = message.json()
                    if raw.get("type") == "ChannelEnteredBridge":
                        channel = raw["channel"]
                        self.entered.append(
                            {
                                "bridge": raw["bridge"]["id"],
                                "channel": channel["id"],
                                "sip_call_id": (channel.get("channelvars") or {}).get(
                                    "SIP_CALL_ID"
                                ),
                                "at": datetime.strptime(
                                    raw["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z"
                                ).timestamp(),
                            }
                        )


def metrics(port: int) -> dict[str, float]:
    """The ARI process's Prometheus samples that matter here."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(
            (
                "softswitch_ari_active_calls",
                "softswitch_ari_command_errors_total",
                "softswitch_ari_command_seconds_sum",
                "softswitch_ari_command_seconds_count",
            )
        ):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def command_means(
    before: Mapping[str, float], after: Mapping[str, float], calls: int
) -> dict[str, tuple[float, float]]:
    """(commands per call, mean ms) of each command the ARI process carried out between two
    metrics() samples, from its softswitch_ari_command_seconds histogram."""
    means = {}
    for name, total in after.items():
        if not name.startswith("softswitch_ari_command_seconds_sum"):
            continue
        count_name = name.replace("_sum", "_count", 1)
        count = after.get(count_name, 0) - before.get(count_name, 0)
        command = re.search(r'command="(\w+)"', name)
        if count and command:
            spent = total - before.get(name, 0)
            means[command.group(1)] = (count / max(calls, 1), spent * 1000 / count)
    return means


def running_stack_pids(state_dir: Path) -> tuple[int | None, int | None]:
    """(Kamailio, Asterisk) PIDs: the stack is shared, a restart by someone else spoils a step."""
    return (
        services.running_pid(services.KAMAILIO, state_dir),
        services.running_pid(services.ASTERISK, state_dir),
    )


# ---- CPU and Asterisk's RTP ports ----


def cpu_of_processes(matches: Callable[[Path], bool]) -> float:
    """CPU seconds of every running process whose /proc entry ``matches`` (a process that
    exited meanwhile is not counted)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if matches(entry):
                total += cpu_seconds(int(entry.name))
        except (OSError, ValueError):
            continue
    return total


def kamailio_cpu(main_pid: int | None) -> float:
    """CPU seconds of the stack's Kamailio: its main process and its children (another
    Kamailio may run on the machine)."""
    from routing_e2e import process_cpu

    if main_pid is None:
        return 0.0

    def child(entry: Path) -> bool:
        return int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == main_pid

    return process_cpu(main_pid) + cpu_of_processes(child)


def postgres_cpu() -> float:
    """CPU seconds of every running PostgreSQL process (backends come and go: a backend that
    exited meanwhile is not counted, the ones of our processes live through the run)."""
    return cpu_of_processes(
        lambda entry: (entry / "comm").read_text().strip() in ("postgres", "postmaster")
    )


def children_cpu() -> float:
    """CPU seconds of our finished children (the sipp UACs of the steps)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_sample(
    pids: Mapping[str, int], sipp_pids: Iterable[int], *, postgres: bool = False
) -> dict[str, float]:
    """CPU seconds so far of each process (group) a step reports: our ARI process, Asterisk,
    Kamailio, the routing service, PostgreSQL (with ``postgres``) and sipp (our finished
    children and the running ``sipp_pids``)."""
    from routing_e2e import process_cpu

    sample = {
        "ari": process_cpu(pids["ari"]),
        "asterisk": process_cpu(pids["asterisk"]),
        "kamailio": kamailio_cpu(pids["kamailio"]),
        "routing": process_cpu(pids["routing"]),
    }
    if postgres:
        sample["postgres"] = postgres_cpu()
    sample["sipp"] = children_cpu() + sum(process_cpu(pid) for pid in sipp_pids)
    return sample


def cpu_spent(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds each process (group) used between two cpu_sample()s."""
    return {name: after[name] - before[name] for name in before}


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])
    return total - fields[3] - fields[4], total


def busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """How busy the machine was between two machine_busy() samples, 0 to 1."""
    return (after[0] - before[0]) / max(after[1] - before[1], 1)


def udp_ports_in_use(first: int, last: int) -> int:
    """Bound local UDP ports within [first, last] (Asterisk's RTP range), from /proc/net."""
    count = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                port = int(line.split()[1].rsplit(":", 1)[1], 16)
                count += first <= port <= last
    return count


class PortWatcher:
    """Peak of Asterisk's RTP ports in use while a step runs (sampled every 0.1 s)."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PortWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, udp_ports_in_use(self.first, self.last))

    def wait_drained(self, fraction: float, timeout: float) -> int:
        """Until at most ``fraction`` of the range is in use; returns what is in use."""
        deadline = time.monotonic() + timeout
        while (used := udp_ports_in_use(self.first, self.last)) > fraction * (
            self.last - self.first + 1
        ) and time.monotonic() < deadline:
            time.sleep(0.5)
        return used


# ---- results ----


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def print_command_table(
    title: str, column: str, rows: Iterable[tuple[str, dict[str, tuple[float, float]]]]
) -> None:
    """The ARI process's commands per step, as command_means() gives them: a row a step
    (``column``: what names it), a column a command that any step carried out."""
    rows = list(rows)
    commands = sorted({c for _, means in rows for c in means})
    print(title)
    print(f"\n| {column} | {' | '.join(commands)} |\n" + "|---" * (len(commands) + 1) + "|")
    for name, means in rows:
        cells = " | ".join(
            f"{means[c][0]:.1f} x {means[c][1]:.1f}" if c in means else "-" for c in commands
        )
        print(f"| {name} | {cells} |")
