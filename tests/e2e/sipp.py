"""Running sipp from tests: bounded in time, on loopback, results read from its statistics."""

from __future__ import annotations

import csv
import re
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class SippResult:
    exit_code: int
    successful: int
    failed: int
    call_id_prefix: str
    output: str
    messages: str

    def call_id(self, number: int = 1) -> str:
        return f"{self.call_id_prefix}-{number}@127.0.0.1"

    def received(self, method_or_status: str) -> list[str]:
        """Messages sipp received whose first line starts with ``method_or_status``
        (``INVITE``, ``SIP/2.0 503``)."""
        received = [
            block.split(" bytes :", 1)[1].lstrip()
            for block in re.split(r"^-{20,} \S+ \S+$", self.messages, flags=re.MULTILINE)
            if re.match(r"\s*\w+ message received \[", block)
        ]
        return [message for message in received if message.startswith(method_or_status)]


def free_udp_port(ip: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((ip, 0))
        return int(probe.getsockname()[1])


def _scenario_source(
    scenario: str, values: dict[str, str] | None, workdir: Path, prefix: str
) -> list[str]:
    """sipp options naming the scenario: a file in scenarios/ (``*.tmpl.xml`` rendered with
    ``values`` for its ``@KEY@`` placeholders) or ``builtin:<name>`` (sipp -sn)."""
    if scenario.startswith("builtin:"):
        return ["-sn", scenario.removeprefix("builtin:")]
    path = SCENARIOS / scenario
    if values:
        text = path.read_text()
        for key, value in values.items():
            text = text.replace(f"@{key}@", value)
        assert "@" not in text.split("-->")[-1].replace("[", ""), f"unrendered {scenario}"
        path = workdir / f"{prefix}-{scenario.replace('.tmpl', '')}"
        path.write_text(text)
    return ["-sf", str(path)]


def _command(
    source: list[str],
    *,
    port: int,
    calls: int,
    timeout_s: int,
    workdir: Path,
    prefix: str,
    local_ip: str = LOOPBACK,
) -> list[str]:
    return [
        "sipp", *source,
        "-i", local_ip,
        "-mi", local_ip,
        "-p", str(port),
        "-m", str(calls),
        "-cid_str", f"{prefix}-%u@%s",
        "-timeout", f"{timeout_s}s",
        "-timeout_error",
        "-nostdin",
        "-trace_stat", "-stf", str(workdir / f"{prefix}.csv"),
        "-trace_err", "-error_file", str(workdir / f"{prefix}-errors.log"),
        "-trace_msg", "-message_file", str(workdir / f"{prefix}-messages.log"),
    ]  # fmt: skip


def _result(exit_code: int, output: str, workdir: Path, prefix: str) -> SippResult:
    successful = failed = 0
    stats = workdir / f"{prefix}.csv"
    if stats.is_file():
        rows = list(csv.DictReader(stats.open(), delimiter=";"))
        if rows:
            successful = int(rows[-1]["SuccessfulCall(C)"])
            failed = int(rows[-1]["FailedCall(C)"])
    errors = workdir / f"{prefix}-errors.log"
    if errors.is_file():
        output += errors.read_text()[-3000:]
    messages = workdir / f"{prefix}-messages.log"
    trace = messages.read_text(errors="replace") if messages.is_file() else ""
    return SippResult(exit_code, successful, failed, prefix, output, trace)


def run_sipp(
    scenario: str,
    target: str,
    *,
    service: str,
    workdir: Path,
    calls: int = 1,
    rate: float = 1,
    timeout_s: int = 30,
    extra: tuple[str, ...] = (),
    values: dict[str, str] | None = None,
    local_ip: str = LOOPBACK,
) -> SippResult:
    """One sipp client run to completion; never left running (sipp -timeout plus our own).

    ``local_ip``: another loopback address (127.0.0.2) is a source Kamailio does not trust.
    """
    prefix = f"e2e-{uuid.uuid4().hex[:12]}"
    command = _command(
        _scenario_source(scenario, values, workdir, prefix),
        port=free_udp_port(local_ip),
        calls=calls,
        timeout_s=timeout_s,
        workdir=workdir,
        prefix=prefix,
        local_ip=local_ip,
    )
    completed = subprocess.run(
        [*command, target, "-s", service, "-r", str(rate), *extra],
        capture_output=True,
        text=True,
        timeout=timeout_s + 15,
        cwd=workdir,
        check=False,
    )
    output = completed.stdout[-3000:] + completed.stderr[-3000:]
    return _result(completed.returncode, output, workdir, prefix)


@dataclass
class SippServer:
    port: int
    process: subprocess.Popen[str]
    workdir: Path
    prefix: str

    def result(self, timeout_s: float = 20) -> SippResult:
        """Wait for the server to finish its calls (it exits after -m calls)."""
        try:
            stdout, stderr = self.process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, stderr = self.process.communicate()
        return _result(
            self.process.returncode, stdout[-3000:] + stderr[-3000:], self.workdir, self.prefix
        )


@contextmanager
def sipp_server(
    scenario: str,
    *,
    workdir: Path,
    calls: int = 1,
    timeout_s: int = 30,
    values: dict[str, str] | None = None,
    port: int | None = None,
    local_ip: str = LOOPBACK,
) -> Iterator[SippServer]:
    """A sipp UAS on loopback (``port``, or a free one); killed on exit if still running."""
    prefix = f"uas-{uuid.uuid4().hex[:12]}"
    port = port or free_udp_port(local_ip)
    command = _command(
        _scenario_source(scenario, values, workdir, prefix),
        port=port,
        calls=calls,
        timeout_s=timeout_s,
        workdir=workdir,
        prefix=prefix,
        local_ip=local_ip,
    )
    process = subprocess.Popen(
        command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield SippServer(port, process, workdir, prefix)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
