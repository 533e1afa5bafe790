"""Asterisk and Kamailio processes inside the chroot: start, readiness, stop, status.

Both run in the foreground of their own session (``setsid``), logging to files in the state
folder; their PIDs are kept there too, so ``stack down`` stops exactly what ``stack up``
started, and a status check tells a live process from a stale PID file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from softswitch.kamailio_rpc import KamailioRpcError, call_sync
from softswitch.settings import Settings
from softswitch.stack.host import StackError, run, wait_for
from softswitch.stack.render import ASTERISK_ETC_DIR, KAMAILIO_ETC_DIR


@dataclass(frozen=True)
class ChrootService:
    name: str
    binary: str  # as it appears in /proc/PID/cmdline
    command: tuple[str, ...]  # run inside the chroot
    run_dirs: tuple[str, ...] = ()

    def pid_file(self, state_dir: Path) -> Path:
        return state_dir / f"{self.name}.pid"

    def log_file(self, state_dir: Path) -> Path:
        return state_dir / f"{self.name}.log"


ASTERISK = ChrootService(
    name="asterisk",
    binary="asterisk",
    command=("/usr/sbin/asterisk", "-f", "-C", f"{ASTERISK_ETC_DIR}/asterisk.conf"),
    run_dirs=("/var/run/asterisk", "/var/log/asterisk", "/var/spool/asterisk", "/var/lib/asterisk"),
)
KAMAILIO = ChrootService(
    name="kamailio",
    binary="kamailio",
    # -DD: stay in the foreground, -E: log to stderr (our log file). Shared memory sized for
    # load tests: 128 MB ran out at 1,000 calls/s (PLATFORM.md).
    command=(
        "/usr/sbin/kamailio",
        "-DD",
        "-E",
        "-f",
        f"{KAMAILIO_ETC_DIR}/kamailio.cfg",
        "-m",
        "1024",
        "-M",
        "16",
        # TLSF (O(1)) for shared and private memory instead of q_malloc, whose first-fit search
        # grows with fragmentation: bench/routing_e2e.py found 11% of Kamailio's CPU in
        # qm_malloc, 15% in the http_async_client worker that runs every routing answer.
        "-x",
        "tlsf",
        "-X",
        "tlsf",
    ),
    run_dirs=("/var/run/kamailio",),
)


def running_pid(service: ChrootService, state_dir: Path) -> int | None:
    pid_file = service.pid_file(state_dir)
    try:
        pid = int(pid_file.read_text().strip())
        command = running_command(pid)
    except (OSError, ValueError):
        return None
    return pid if command and command[0].endswith(service.binary) else None


def running_command(pid: int) -> tuple[str, ...]:
    """The command line a process runs, to tell a service started with other options."""
    arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return tuple(argument.decode() for argument in arguments if argument)


def start(service: ChrootService, chroot_dir: Path, state_dir: Path) -> int:
    for directory in service.run_dirs:
        (chroot_dir / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)
    log = service.log_file(state_dir).open("ab")
    process = subprocess.Popen(
        ["chroot", str(chroot_dir), *service.command],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
    )
    service.pid_file(state_dir).write_text(f"{process.pid}\n")
    time.sleep(0.3)
    if process.poll() is not None:
        raise StackError(
            f"{service.name} exited at start ({process.returncode}); "
            f"see {service.log_file(state_dir)}"
        )
    return process.pid


def stop(service: ChrootService, state_dir: Path, *, timeout: float = 10) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; False when it was not running."""
    pid = running_pid(service, state_dir)
    service.pid_file(state_dir).unlink(missing_ok=True)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def asterisk_ready(settings: Settings) -> bool:
    password = settings.ari.password.get_secret_value() if settings.ari.password else ""
    try:
        response = httpx.get(
            f"{settings.ari.url.rstrip('/')}/ari/asterisk/info",
            auth=(settings.ari.user, password),
            timeout=1.0,
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def kamailio_ready(settings: Settings) -> bool:
    try:
        call_sync(settings.kamailio, "core.version")
    except KamailioRpcError:
        return False
    return True


def check_kamailio_config(chroot_dir: Path) -> None:
    """``kamailio -c``: a config error fails `stack up` with Kamailio's own message."""
    run(
        [
            "chroot",
            str(chroot_dir),
            "/usr/sbin/kamailio",
            "-c",
            "-f",
            f"{KAMAILIO_ETC_DIR}/kamailio.cfg",
        ]
    )


def wait_ready(service: ChrootService, settings: Settings, timeout: float = 60) -> None:
    probe = asterisk_ready if service is ASTERISK else kamailio_ready

    def alive_and_ready() -> bool:
        if running_pid(service, settings.stack.state_dir) is None:
            raise StackError(
                f"{service.name} died during start-up; see "
                f"{service.log_file(settings.stack.state_dir)}"
            )
        return probe(settings)

    wait_for(alive_and_ready, what=service.name, timeout=timeout)
