"""The real stack for e2e tests: Kamailio and Asterisk in the chroot, our ARI process, sipp."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from softswitch.db import temporary_database
from softswitch.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def stack_settings(host_settings: Settings) -> Iterator[Settings]:
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


CATCH_ALL_TO_SMOKE = {
    "name": "e2e: everything else to the smoke app",
    "priority": 1_000_000,
    "action": "app",
    "app": "smoke",
}


@dataclass
class RoutingServiceHandle:
    """`softswitch routing` on the port Kamailio asks, serving a database of the tests' own
    (accounts and registrations stay in the stack's database, where Kamailio reads them)."""

    settings: Settings
    database_url: str
    log_path: Path
    service: ServiceProcess | None = None

    @property
    def health_url(self) -> str:
        return f"http://{self.settings.routing.host}:{self.settings.routing.port}/health"

    def start(self) -> None:
        from softswitch.stack.host import port_open

        if port_open(self.settings.routing.host, self.settings.routing.port):
            raise RuntimeError(
                f"something already listens on {self.settings.routing.url}"
                " (a running `softswitch demo`?): stop it before the e2e tests"
            )
        self.service = start_service(
            ["routing"], self.log_path, SOFTSWITCH_DATABASE_URL=self.database_url
        )
        self.service.wait_for(lambda r: r["msg"].startswith("route table version"))

    def stop(self) -> None:
        if self.service is not None:
            exit_code = self.service.stop()
            assert exit_code == 0, self.log_path.read_text()[-4000:]
            self.service = None

    def add_routes(self, *routes: dict[str, Any]) -> None:
        """Import routes (upsert by name) and wait until the service serves them."""
        from routing.store import apply_import, parse_route_file

        specs, errors = parse_route_file(json.dumps(list(routes)))
        assert errors == []
        version = httpx.get(self.health_url).json()["table_version"]
        with psycopg.connect(self.database_url) as conn:
            apply_import(conn, specs, replace=False)
        deadline = time.monotonic() + 10
        while httpx.get(self.health_url).json()["table_version"] == version:
            assert time.monotonic() < deadline, "routing service did not reload"
            time.sleep(0.05)


@pytest.fixture(scope="session")
def routing_service(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RoutingServiceHandle]:
    with temporary_database(stack_settings.database, prefix="softswitch_e2e") as database:
        handle = RoutingServiceHandle(
            stack_settings, database.url, tmp_path_factory.mktemp("routing") / "routing.log"
        )
        handle.start()
        try:
            handle.add_routes(CATCH_ALL_TO_SMOKE)
            yield handle
        finally:
            handle.stop()


@pytest.fixture
def routing(routing_service: RoutingServiceHandle) -> Iterator[RoutingServiceHandle]:
    """The session's routing service, restarted if a test stopped it."""
    if routing_service.service is None:
        routing_service.start()
    yield routing_service
    if routing_service.service is None:
        routing_service.start()


@pytest.fixture
def smoke_app(
    stack_settings: Settings, routing: RoutingServiceHandle, tmp_path: Path
) -> Iterator[ServiceProcess]:
    """`softswitch ari --app smoke`, connected; must exit 0 on SIGTERM."""
    with ari_apps(["smoke"], tmp_path / "ari.log") as service:
        yield service


@contextmanager
def ari_apps(apps: list[str], log_path: Path, **env: str) -> Iterator[ServiceProcess]:
    """`softswitch ari` serving ``apps``, once connected; it must exit 0 on SIGTERM."""
    args = ["ari"] + [arg for app in apps for arg in ("--app", app)]
    service = start_service(args, log_path, **env)
    try:
        service.wait_for(lambda r: r["msg"] == "ARI connected")
        yield service
    finally:
        exit_code = service.stop()
    assert exit_code == 0, service.log_path.read_text()[-4000:]
