"""The real stack for e2e tests: Kamailio and Asterisk in the chroot, our ARI process, sipp."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from softswitch.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """The local stack, brought up for the session; taken down only if this fixture started it."""
    from softswitch.stack import services, stack

    before = load_settings()
    was_running = all(
        services.running_pid(s, before.stack.state_dir) is not None
        for s in (services.ASTERISK, services.KAMAILIO)
    )
    settings = stack.up(before)
    yield settings
    if not was_running:
        stack.down(settings)


@dataclass
class ServiceProcess:
    """One of our services run as its own process, its JSON log lines readable by tests."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def records(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 10
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.records():
                if predicate(record):
                    return record
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"no matching log record within {timeout}s; log:\n{self.log_path.read_text()[-4000:]}"
        )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def start_service(args: list[str], log_path: Path, **env: str) -> ServiceProcess:
    process = subprocess.Popen(
        [sys.executable, "-m", "softswitch", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("wb"),
        env={**os.environ, "SOFTSWITCH_LOG_JSON_FORMAT": "true", **env},
    )
    return ServiceProcess(process, log_path)


@pytest.fixture
def smoke_app(stack_settings: Settings, tmp_path: Path) -> Iterator[ServiceProcess]:
    """`softswitch ari --app smoke`, connected; must exit 0 on SIGTERM."""
    service = start_service(["ari", "--app", "smoke"], tmp_path / "ari.log")
    try:
        service.wait_for(lambda r: r["msg"] == "ARI connected")
        yield service
    finally:
        exit_code = service.stop()
    assert exit_code == 0, service.log_path.read_text()[-4000:]
