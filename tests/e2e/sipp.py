"""Running sipp from tests: bounded in time, on loopback, results read from its statistics."""

from __future__ import annotations

import csv
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


@dataclass(frozen=True)
class SippResult:
    exit_code: int
    successful: int
    failed: int
    call_id_prefix: str
    output: str

    def call_id(self, number: int = 1) -> str:
        return f"{self.call_id_prefix}-{number}@127.0.0.1"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
) -> SippResult:
    """One sipp client run to completion; never left running (sipp -timeout plus our own)."""
    prefix = f"e2e-{uuid.uuid4().hex[:12]}"
    stats = workdir / f"{prefix}.csv"
    command = [
        "sipp", target,
        "-sf", str(SCENARIOS / scenario),
        "-s", service,
        "-i", "127.0.0.1",
        "-mi", "127.0.0.1",
        "-p", str(free_udp_port()),
        "-m", str(calls),
        "-r", str(rate),
        "-cid_str", f"{prefix}-%u@%s",
        "-timeout", f"{timeout_s}s",
        "-timeout_error",
        "-nostdin",
        "-trace_stat", "-stf", str(stats),
        "-trace_err", "-error_file", str(workdir / f"{prefix}-errors.log"),
        *extra,
    ]  # fmt: skip
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_s + 15, cwd=workdir, check=False
    )
    successful = failed = 0
    if stats.is_file():
        rows = list(csv.DictReader(stats.open(), delimiter=";"))
        if rows:
            successful = int(rows[-1]["SuccessfulCall(C)"])
            failed = int(rows[-1]["FailedCall(C)"])
    errors = workdir / f"{prefix}-errors.log"
    output = completed.stdout[-3000:] + completed.stderr[-3000:]
    if errors.is_file():
        output += errors.read_text()[-3000:]
    return SippResult(completed.returncode, successful, failed, prefix, output)
