"""Static checks of the Docker Compose deployment in compose/.

Docker cannot run on the build machines, so this is what CI checks instead of building and
starting the stack: the compose file's shape (health checks, dependencies, loopback-only
ports, every variable in .env.example), that the settings each Python service gets are
accepted in production and refused with the placeholders, that Prometheus scrapes a port each
service really serves /metrics on, that the dashboard uses only metrics defined in the code,
a small Dockerfile linter, and `docker-compose config` when that binary is installed.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml

import softswitch
from softswitch import db
from softswitch.cli import app as cli_app
from softswitch.settings import Settings
from softswitch.stack.chroot import ASTERISK_PACKAGES, KAMAILIO_PACKAGES
from softswitch.stack.render import ASTERISK_ETC_DIR, KAMAILIO_ETC_DIR
from softswitch.stack.services import KAMAILIO as KAMAILIO_SERVICE

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
PROMETHEUS_FILE = COMPOSE_DIR / "prometheus" / "prometheus.yml"
DASHBOARD_DIR = COMPOSE_DIR / "grafana" / "dashboards"
README = COMPOSE_DIR / "README.md"
CODE_DIRS = ("softswitch", "routing", "ari_apps", "acd")
SOFTSWITCH_IMAGE = "softswitch/softswitch:local"
PLACEHOLDER = "CHANGE_ME"
DOCKERFILES = sorted(COMPOSE_DIR.glob("**/Dockerfile"))


# --- reading compose/ -------------------------------------------------------------------


@functools.cache
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def secret_names() -> list[str]:
    return [name for name, value in env_example().items() if value == PLACEHOLDER]


def generated_env() -> dict[str, str]:
    """.env as an operator fills it in: every placeholder replaced by `openssl rand -hex 16`."""
    return {
        name: secrets.token_hex(16) if value == PLACEHOLDER else value
        for name, value in env_example().items()
    }


_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_]\w*))")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:?message} and ${NAME:-default}; $$ is a literal $."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        if name in env and (env[name] or not (match.group(2) or "").startswith(":")):
            return env[name]
        if match.group(2) and match.group(2).endswith("-"):
            return match.group(3)
        raise AssertionError(f"{name} is not defined ({match.group(0)})")

    parts = value.split("$$")
    return "$".join(_VARIABLE.sub(substitute, part) for part in parts)


def service_env(name: str, env: Mapping[str, str]) -> dict[str, str]:
    environment = services()[name].get("environment", {})
    assert isinstance(environment, dict), f"{name}: environment as a mapping, please"
    return {key: interpolate(str(value), env) for key, value in environment.items()}


def one_shot(service: Mapping[str, Any]) -> bool:
    return service.get("restart") == "no"


def softswitch_services() -> list[str]:
    return [name for name, svc in services().items() if svc.get("image") == SOFTSWITCH_IMAGE]


def long_running_softswitch_services() -> list[str]:
    return [name for name in softswitch_services() if not one_shot(services()[name])]


def netns_owner(name: str) -> str:
    """The service whose network namespace (and DNS name, address) ``name`` uses."""
    mode = services()[name].get("network_mode", "")
    return mode.removeprefix("service:") if mode.startswith("service:") else name


def address_of(name: str) -> str:
    owner = services()[netns_owner(name)]
    networks = owner.get("networks", {})
    assert isinstance(networks, dict), f"{name}: no fixed address"
    address: str = networks["softswitch"]["ipv4_address"]
    return address


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings exactly as a container with this environment builds them (no .env files)."""
    for name in list(os.environ):
        if name.startswith("SOFTSWITCH_") and name != "SOFTSWITCH_STACK_STATE_DIR":
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


# --- which ports a service's command serves /metrics on ---------------------------------


def cli_callback(command: list[str]) -> Callable[..., Any] | None:
    """The function behind `softswitch <words>`, or None when the CLI has no such command."""
    assert command[0] == "softswitch", command
    node: Any = typer.main.get_command(cli_app)
    for word in command[1:]:
        commands = getattr(node, "commands", {})
        if word not in commands:
            return None
        node = commands[word]
    callback = node.callback
    return getattr(callback, "__wrapped__", callback)  # type: ignore[no-any-return]


def passes_metrics_settings(function: Callable[..., Any]) -> bool:
    """True when ``function`` (or a function of its module it calls) hands ``settings.metrics``
    to ``_serve_until_signal`` or ``start_metrics_server``: the /metrics listener on
    SOFTSWITCH_METRICS_HOST:SOFTSWITCH_METRICS_PORT."""
    module = inspect.getmodule(function)
    assert module is not None
    tree = ast.parse(inspect.getsource(module))
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    todo, seen = [function.__name__], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        for node in ast.walk(functions[name]):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            arguments = [*node.args, *(keyword.value for keyword in node.keywords)]
            if node.func.id in {"_serve_until_signal", "start_metrics_server"} and any(
                isinstance(argument, ast.Attribute) and argument.attr == "metrics"
                for argument in arguments
            ):
                return True
            todo.append(node.func.id)
    return False


def metrics_listeners(command: list[str], settings: Settings) -> set[tuple[str, int]]:
    """Every (host, port) where this command's process answers GET /metrics."""
    callback = cli_callback(command)
    assert callback is not None, f"no CLI command {' '.join(command)}"
    listeners = set()
    if passes_metrics_settings(callback) and settings.metrics.port:
        listeners.add((settings.metrics.host, settings.metrics.port))
    if command[1:] == ["routing"]:
        # The routing service answers /metrics on its own port as well.
        assert '"/metrics"' in (REPO / "routing" / "http.py").read_text()
        listeners.add((settings.routing.host, settings.routing.port))
    if command[1:] == ["admin", "serve"]:
        # The admin API serves /metrics itself (behind a read_only token), on its own port.
        assert '"/metrics"' in (REPO / "softswitch" / "admin" / "app.py").read_text()
        listeners.add((settings.admin.host, settings.admin.port))
    if command[1:] == ["ari"] and "acd" in settings.ari.apps and settings.acd.api_port:
        # The ACD supervisor API mounts /metrics (the same registry).
        assert "add_metrics_route(app)" in (REPO / "ari_apps" / "acd" / "api.py").read_text()
        listeners.add((settings.acd.api_host, settings.acd.api_port))
    return listeners


# --- compose file -----------------------------------------------------------------------


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in services().items():
        if one_shot(service):
            continue
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, f"{name}: {check['test']}"
        assert service.get("restart") == "unless-stopped", f"{name}: restart policy"


def test_dependencies_wait_for_health_or_completion() -> None:
    for name, service in services().items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on without conditions"
        for dependency, rule in depends_on.items():
            wanted = (
                "service_completed_successfully"
                if one_shot(services()[dependency])
                else "service_healthy"
            )
            assert rule == {"condition": wanted}, f"{name} -> {dependency}: {rule}"


def _depends_on_transitively(name: str, target: str) -> bool:
    direct = set(services()[name].get("depends_on", {}))
    return target in direct or any(_depends_on_transitively(d, target) for d in direct)


def test_nothing_that_holds_a_secret_starts_before_preflight_accepted_the_secrets() -> None:
    secret_pattern = re.compile(r"\$\{(" + "|".join(secret_names()) + r")\b")
    for name, service in services().items():
        if name == "preflight":
            continue
        if secret_pattern.search(json.dumps(service)):
            assert _depends_on_transitively(name, "preflight"), name


def test_every_build_context_has_its_dockerfile() -> None:
    builds = [(name, svc["build"]) for name, svc in services().items() if "build" in svc]
    assert {name for name, _ in builds} >= {"kamailio", "asterisk", *softswitch_services()}
    for name, build in builds:
        context = (COMPOSE_DIR / build["context"]).resolve()
        assert context.is_dir(), f"{name}: no context {context}"
        assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name


def test_every_variable_the_compose_file_uses_is_in_env_example() -> None:
    text = COMPOSE_FILE.read_text().replace("$$", "")
    used = {match.group(1) or match.group(4) for match in _VARIABLE.finditer(text)}
    assert used, "no variables at all?"
    assert sorted(used - set(env_example())) == []


def test_env_example_secrets_are_the_ones_preflight_checks() -> None:
    preflight = load_preflight()
    assert sorted(secret_names()) == sorted(preflight.SECRET_NAMES)
    assert preflight.PLACEHOLDER == PLACEHOLDER
    passed = set(services()["preflight"]["environment"])
    assert set(preflight.SECRET_NAMES) <= passed


def test_published_ports_are_bound_to_host_loopback_only() -> None:
    published = 0
    for name, service in services().items():
        for port in service.get("ports", []):
            published += 1
            host_ip = port.get("host_ip") if isinstance(port, dict) else port.split(":")[0]
            assert host_ip == "127.0.0.1", f"{name}: {port}"
    assert published


def test_fixed_addresses_lie_in_the_subnet_outside_docker_s_dynamic_range() -> None:
    import ipaddress

    ipam = compose()["networks"]["softswitch"]["ipam"]["config"][0]
    subnet = ipaddress.ip_network(ipam["subnet"])
    dynamic = ipaddress.ip_network(ipam["ip_range"])
    addresses = [address_of(name) for name, svc in services().items() if "ipv4_address" in str(svc)]
    assert len(addresses) == len(set(addresses))
    for address in map(ipaddress.ip_address, addresses):
        assert address in subnet and address not in dynamic and address.is_private


def test_python_services_get_settings_production_accepts_and_placeholders_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in softswitch_services():
        if name == "telephony-net":
            continue
        settings = settings_from(service_env(name, generated_env()), monkeypatch)
        assert settings.environment == "production", name
        with pytest.raises(ValueError, match="must be set in production"):
            settings_from(service_env(name, env_example()), monkeypatch)


def test_addresses_in_settings_are_where_the_peers_listen(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(service_env("ari", generated_env()), monkeypatch)
    telephony = address_of("kamailio")
    # Kamailio listens on the SIP address of the shared namespace; ARI and AMI on its
    # loopback (asterisk_cfg/http.conf.tmpl, manager.conf.tmpl), where `ari` runs too.
    assert settings.kamailio.sip_ip == telephony
    assert urlsplit(settings.kamailio.jsonrpc_url).hostname == telephony
    # The admin API (outside the namespace) fronts the ACD supervisor API of `ari`.
    assert settings.acd.api_host == telephony
    assert urlsplit(settings.ari.url).hostname == "127.0.0.1"
    assert "bindaddr = 127.0.0.1" in (REPO / "asterisk_cfg" / "http.conf.tmpl").read_text()
    assert settings.ami.host == "127.0.0.1"
    assert settings.routing.host == "127.0.0.1"  # Kamailio asks it inside the namespace
    for peer in ("kamailio", "asterisk", "routing", "ari"):
        assert netns_owner(peer) == "telephony-net", peer
    assert urlsplit(settings.database.url).hostname == "postgres"
    assert urlsplit(settings.amqp.url.get_secret_value()).hostname == "rabbitmq"


def test_kamailio_and_asterisk_read_the_configs_preflight_renders() -> None:
    def mounts(name: str) -> dict[str, str]:
        return {v.split(":")[1]: v.split(":")[0] for v in services()[name]["volumes"]}

    preflight = services()["preflight"]
    assert preflight["command"][-2:] == ["--target", str(Path(KAMAILIO_ETC_DIR).parent)]
    assert mounts("kamailio")[KAMAILIO_ETC_DIR] == mounts("preflight")[KAMAILIO_ETC_DIR]
    assert mounts("asterisk")[ASTERISK_ETC_DIR] == mounts("preflight")[ASTERISK_ETC_DIR]
    assert all(v.endswith(":ro") for v in services()["kamailio"]["volumes"])
    assert f"{KAMAILIO_ETC_DIR}/kamailio.cfg" in dockerfile_cmd("kamailio")
    assert f"{ASTERISK_ETC_DIR}/asterisk.conf" in dockerfile_cmd("asterisk")


def test_kamailio_runs_with_the_local_stacks_options() -> None:
    """Memory sizes and allocator (TLSF) are performance settings measured on the local stack."""
    assert dockerfile_cmd("kamailio")[1:] == list(KAMAILIO_SERVICE.command[1:])


def dockerfile_cmd(name: str) -> list[str]:
    cmd = [i for i in parse_dockerfile(COMPOSE_DIR / name / "Dockerfile") if i.keyword == "CMD"]
    parsed: list[str] = json.loads(cmd[-1].arguments)
    return parsed


def test_healthchecks_probe_what_each_service_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in long_running_softswitch_services():
        test = services()[name]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "softswitch-healthcheck"], name
        match test[2:]:
            case ["address", address]:
                assert address == address_of(name), name
            case ["metrics"]:
                settings = settings_from(service_env(name, generated_env()), monkeypatch)
                assert settings.metrics.port, f"{name}: metrics check without a metrics port"
            case ["url", url]:
                settings = settings_from(service_env(name, generated_env()), monkeypatch)
                listeners = {
                    (settings.routing.host, settings.routing.port),
                    (settings.admin.host, settings.admin.port),
                }
                parts = urlsplit(url)
                assert (parts.hostname, parts.port) in listeners, f"{name}: {url}"
            case other:
                raise AssertionError(f"{name}: unknown check {other}")
    kamailio = " ".join(services()["kamailio"]["healthcheck"]["test"])
    assert f"/dev/tcp/{address_of('kamailio')}/5060" in kamailio


def test_migrations_ship_where_the_installed_package_looks_for_them() -> None:
    # compose/softswitch/Dockerfile copies sql/migrations next to the installed package.
    package_parent = Path(softswitch.__file__).resolve().parent.parent
    assert package_parent / "sql" / "migrations" == db.MIGRATIONS_DIR
    text = (COMPOSE_DIR / "softswitch" / "Dockerfile").read_text()
    assert 'cp -r sql/migrations "${site_packages}/sql/migrations"' in text


def test_images_install_the_local_stack_s_packages() -> None:
    for name, packages in (("kamailio", KAMAILIO_PACKAGES), ("asterisk", ASTERISK_PACKAGES)):
        installs = [
            apt_install_packages(i.arguments)
            for i in parse_dockerfile(COMPOSE_DIR / name / "Dockerfile")
            if i.keyword == "RUN" and "apt-get install" in i.arguments
        ]
        assert installs == [sorted(packages)], name


def apt_install_packages(run: str) -> list[str]:
    command = run.split("apt-get install", 1)[1].split(";")[0].split("&&")[0]
    return sorted(word for word in command.replace("\\", " ").split() if not word.startswith("-"))


# --- preflight --------------------------------------------------------------------------


def load_preflight() -> ModuleType:
    path = COMPOSE_DIR / "softswitch" / "preflight.py"
    spec = importlib.util.spec_from_file_location("compose_preflight", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No .env in the working folder, no local stack credentials: only what a test sets."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOFTSWITCH_STACK_STATE_DIR", str(tmp_path / "no-stack"))
    return tmp_path


def test_preflight_refuses_placeholders_without_rendering(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preflight = load_preflight()
    target = isolated / "etc"
    status = preflight.main(
        ["--target", str(target), "--templates", str(REPO)],
        service_env("preflight", env_example()),
    )
    assert status == 78
    assert not target.exists()
    errors = capsys.readouterr().err
    for name in secret_names():
        assert f"{name} is still the CHANGE_ME placeholder" in errors
    assert preflight.secret_problems({**generated_env(), "AMI_PASSWORD": "short"}) == [
        "AMI_PASSWORD is shorter than 16 characters"
    ]
    assert preflight.secret_problems({**generated_env(), "ARI_PASSWORD": "a" * 16 + "@"}) == [
        "ARI_PASSWORD has characters other than A-Z a-z 0-9 . _ ~ -"
    ]


def test_preflight_renders_the_templates_with_the_compose_addresses(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = generated_env()
    environment = service_env("preflight", env)
    settings_from(environment, monkeypatch)  # puts the environment in place
    target = isolated / "etc"
    preflight = load_preflight()
    assert preflight.main(["--target", str(target), "--templates", str(REPO)], environment) == 0
    local = (target / "kamailio" / "kamailio-local.cfg").read_text()
    assert "@@" not in local
    assert '#!substdef "!SS_LISTEN_IP!172.28.53.10!g"' in local
    assert '#!define ROUTING_URL "http://127.0.0.1:8090/route"' in local
    assert f"postgres://softswitch:{env['POSTGRES_PASSWORD']}@postgres:5432/softswitch" in local
    assert f"Bearer {env['KAMAILIO_JSONRPC_TOKEN']}" in local
    pjsip = (target / "asterisk" / "pjsip.conf").read_text()
    assert "bind = 172.28.53.10:5080" in pjsip
    assert f"X-Softswitch-Peer: {env['ASTERISK_PEER_TOKEN']}" in pjsip
    assert f"astetcdir => {ASTERISK_ETC_DIR}" in (target / "asterisk" / "asterisk.conf").read_text()


# --- Prometheus and Grafana -------------------------------------------------------------


@dataclass(frozen=True)
class ScrapeTarget:
    job: str
    host: str
    port: int
    service: str
    credentials_file: str | None


def scrape_targets() -> list[ScrapeTarget]:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    targets = []
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                service = static.get("labels", {}).get("service", host)
                credentials = job.get("authorization", {}).get("credentials_file")
                targets.append(ScrapeTarget(job["job_name"], host, int(port), service, credentials))
    return targets


@pytest.mark.parametrize("target", scrape_targets(), ids=lambda t: t.job)
def test_scrape_target_is_a_service_serving_metrics_on_that_port(
    target: ScrapeTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert target.host in services(), f"{target.job}: {target.host} is no compose service"
    assert target.service in services(), f"{target.job}: label service={target.service}"
    assert netns_owner(target.service) == target.host, f"{target.job}: not reachable so"
    command = services()[target.service]["command"]
    if cli_callback(command) is None:
        pytest.skip(f"`{' '.join(command)}` is not in the CLI yet (being added)")
    settings = settings_from(service_env(target.service, generated_env()), monkeypatch)
    listeners = metrics_listeners(command, settings)
    reachable = {("0.0.0.0", target.port), (address_of(target.service), target.port)}
    assert reachable & listeners, f"{target.job}: {target.service} serves /metrics on {listeners}"


def test_every_service_serving_metrics_is_scraped(monkeypatch: pytest.MonkeyPatch) -> None:
    scraped = {(t.service, t.port) for t in scrape_targets()}
    for name in long_running_softswitch_services():
        command = services()[name]["command"]
        if command[0] != "softswitch" or cli_callback(command) is None:
            continue
        settings = settings_from(service_env(name, generated_env()), monkeypatch)
        ports = {port for host, port in metrics_listeners(command, settings) if host != "127.0.0.1"}
        assert ports, f"{name} serves no /metrics Prometheus can reach"
        assert {(name, port) for port in ports} & scraped, f"{name}: not scraped on {ports}"


def test_the_admin_target_authenticates_with_the_token_prometheus_writes() -> None:
    (admin,) = [t for t in scrape_targets() if t.service == "admin"]
    assert admin.credentials_file is not None
    entrypoint = " ".join(services()["prometheus"]["entrypoint"])
    assert f'"$$PROMETHEUS_ADMIN_TOKEN" > {admin.credentials_file}' in entrypoint
    assert "PROMETHEUS_ADMIN_TOKEN" in services()["prometheus"]["environment"]


_METRIC_DEFINITION = re.compile(
    r"\b(Counter|Gauge|Histogram|Summary|CounterMetricFamily|GaugeMetricFamily"
    r"|HistogramMetricFamily|SummaryMetricFamily)\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\""
)


@functools.cache
def code_metrics() -> dict[str, set[str]]:
    """Metrics defined in the code, by the name Prometheus shows for them (counters end in
    _total, whatever the code passed) -> the sample names a query can read."""
    metrics: dict[str, set[str]] = {}
    for directory in CODE_DIRS:
        for path in (REPO / directory).rglob("*.py"):
            for kind, name in _METRIC_DEFINITION.findall(path.read_text()):
                if kind.startswith("Counter"):
                    name = name.removesuffix("_total") + "_total"
                    samples = {name, name.removesuffix("_total") + "_created"}
                elif kind.startswith("Histogram"):
                    samples = {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
                elif kind.startswith("Summary"):
                    samples = {name, f"{name}_sum", f"{name}_count"}
                else:
                    samples = {name}
                metrics[name] = samples
    return metrics


def exposed_samples() -> set[str]:
    return set().union(*code_metrics().values())


_PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


def promql_metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads (strings, label matchers, ranges,
    grouping clauses and function names are not metric names)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:" + "|".join(_PROMQL_KEYWORDS) + r")\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group(0) in _PROMQL_WORDS:
            continue
        names.add(match.group(0))
    return names


def test_promql_metric_names_skips_functions_labels_and_numbers() -> None:
    expression = (
        'histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{x=~"y|z"}[5m])))'
        " / on (job) group_left b_total offset 5m > 1e3"
    )
    assert promql_metric_names(expression) == {"a_seconds_bucket", "b_total"}


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        for expression in walk(json.loads(path.read_text())):
            yield path.name, expression


def test_dashboard_queries_use_only_metrics_defined_in_the_code() -> None:
    expressions = list(dashboard_expressions())
    assert len(expressions) >= 10
    samples = exposed_samples()
    for dashboard, expression in expressions:
        names = promql_metric_names(expression)
        assert names, f"{dashboard}: no metric in {expression}"
        assert names <= samples, f"{dashboard}: unknown {names - samples} in {expression}"


def test_dashboard_covers_the_issue_s_panels() -> None:
    used = set().union(*(promql_metric_names(e) for _, e in dashboard_expressions()))
    for metric in (
        "softswitch_routing_decisions_total",
        "softswitch_routing_decision_seconds_bucket",
        "softswitch_acd_waiting",
        "softswitch_acd_agents",
        "softswitch_sos_pool_numbers",
        "softswitch_events_outbox_backlog",
        "softswitch_events_published_total",
        "softswitch_ari_active_calls",
    ):
        assert metric in used, metric


def test_grafana_provisioning_points_at_the_mounted_dashboards_and_prometheus() -> None:
    provisioning = COMPOSE_DIR / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "softswitch.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in services()["grafana"]["volumes"]
    for dashboard in DASHBOARD_DIR.glob("*.json"):
        assert f'"uid": "{uid}"' in dashboard.read_text()


def test_readme_lists_the_dashboard_metrics_and_only_metrics_of_the_code() -> None:
    listed = set(re.findall(r"`(softswitch_[a-z0-9_]+)`", README.read_text()))
    assert listed - set(code_metrics()) == set()
    used = set().union(*(promql_metric_names(e) for _, e in dashboard_expressions()))
    defined_by = {sample: name for name, samples in code_metrics().items() for sample in samples}
    assert {defined_by[sample] for sample in used} <= listed


# --- docker-compose config --------------------------------------------------------------


def _docker_compose(*args: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (scripts/bootstrap.sh installs it)")
    return subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        timeout=120,
        # Only the env file defines variables: nothing leaks in from the caller's shell.
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        check=False,
    )


def test_docker_compose_config_accepts_the_file_with_env_example() -> None:
    result = _docker_compose("config", "-q", env_file=ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr


def test_docker_compose_config_names_a_missing_secret(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "".join(f"{k}={v}\n" for k, v in env_example().items() if k != "ARI_PASSWORD")
    )
    result = _docker_compose("config", "-q", env_file=env_file)
    assert result.returncode != 0
    assert "set ARI_PASSWORD in compose/.env" in result.stderr


# --- Dockerfile lint --------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def parse_dockerfile(source: Path | str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (no heredocs)."""
    text = source.read_text() if isinstance(source, Path) else source
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        pending.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            keyword, _, arguments = " ".join(pending).partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
            pending = []
    return instructions


_FLOATING_TAGS = {"latest", "stable", "testing", "unstable", "sid", "slim"}


def lint_dockerfile(source: Path | str, *, compose_healthcheck: bool) -> list[str]:
    """Our rules (hadolint is not packaged for Debian 12): pinned base images, tidy apt-get,
    pip without cache, COPY rather than ADD, a non-root final user, a health check."""
    instructions = parse_dockerfile(source)
    problems = []
    build_args: dict[str, str] = {}
    stages: set[str] = set()
    env_text = " ".join(i.arguments for i in instructions if i.keyword == "ENV")
    for instruction in instructions:
        where = f"line {instruction.line}"
        words = instruction.arguments.split()
        if instruction.keyword == "ARG" and not stages:
            name, _, default = instruction.arguments.partition("=")
            build_args[name] = default
        elif instruction.keyword == "FROM":
            image = next(w for w in words if not w.startswith("--"))
            for name, value in build_args.items():
                image = image.replace(f"${{{name}}}", value).replace(f"${name}", value)
            if len(words) >= 3 and words[-2].upper() == "AS":
                stages.add(words[-1])
            if image in stages or "@sha256:" in image:
                continue
            tag = image.rpartition("/")[2].partition(":")[2]
            if not tag:
                problems.append(f"{where}: base image {image} has no tag")
            elif tag in _FLOATING_TAGS or not re.search(r"\d", tag):
                problems.append(f"{where}: base image tag {tag!r} is not pinned to a version")
        elif instruction.keyword == "RUN":
            run = instruction.arguments
            if "apt-get install" in run:
                if "--no-install-recommends" not in run:
                    problems.append(f"{where}: apt-get install without --no-install-recommends")
                if not re.search(r"apt-get install\s+(?:\S+\s+)*?(?:-y|-\w*y\w*|--yes)\b", run):
                    problems.append(f"{where}: apt-get install without -y")
                if "apt-get update" not in run:
                    problems.append(f"{where}: apt-get install without apt-get update before it")
                if "rm -rf /var/lib/apt/lists/*" not in run:
                    problems.append(f"{where}: apt lists not removed in the same RUN")
            elif "apt-get update" in run:
                problems.append(f"{where}: apt-get update alone (a stale cached layer)")
            pip_cache = "--no-cache-dir" in run or "PIP_NO_CACHE_DIR=1" in env_text
            if "pip install" in run and not pip_cache:
                problems.append(f"{where}: pip install keeps its cache")
        elif instruction.keyword == "ADD":
            problems.append(f"{where}: ADD (use COPY; fetch URLs in a RUN with a checksum)")
    users = [i.arguments.split(":")[0] for i in instructions if i.keyword == "USER"]
    if not users or users[-1] in {"root", "0"}:
        problems.append("the final user is root: add USER <unprivileged>")
    healthchecks = [i for i in instructions if i.keyword == "HEALTHCHECK"]
    if not compose_healthcheck and (not healthchecks or healthchecks[-1].arguments == "NONE"):
        problems.append("no HEALTHCHECK and no compose healthcheck")
    return problems


def test_the_linter_catches_what_it_is_for() -> None:
    bad = (
        "FROM debian:sid\nFROM python\nFROM redis:latest\n"
        "RUN apt-get update\nRUN apt-get install curl\nRUN pip install x\nADD x /x\n"
    )
    assert lint_dockerfile(bad, compose_healthcheck=False) == [
        "line 1: base image tag 'sid' is not pinned to a version",
        "line 2: base image python has no tag",
        "line 3: base image tag 'latest' is not pinned to a version",
        "line 4: apt-get update alone (a stale cached layer)",
        "line 5: apt-get install without --no-install-recommends",
        "line 5: apt-get install without -y",
        "line 5: apt-get install without apt-get update before it",
        "line 5: apt lists not removed in the same RUN",
        "line 6: pip install keeps its cache",
        "line 7: ADD (use COPY; fetch URLs in a RUN with a checksum)",
        "the final user is root: add USER <unprivileged>",
        "no HEALTHCHECK and no compose healthcheck",
    ]
    good = (
        "FROM debian:sid-20251020-slim\nRUN apt-get update \\\n"
        " && apt-get install -y --no-install-recommends curl \\\n"
        " && rm -rf /var/lib/apt/lists/*\nUSER nobody\nHEALTHCHECK CMD true\n"
    )
    assert lint_dockerfile(good, compose_healthcheck=False) == []


def _built_from(dockerfile: Path) -> list[str]:
    """Compose services that run the image this Dockerfile builds."""
    images = {
        svc["image"]
        for svc in services().values()
        if "build" in svc
        and (COMPOSE_DIR / svc["build"]["context"] / svc["build"].get("dockerfile", "Dockerfile"))
        .resolve()
        .samefile(dockerfile)
    }
    return [name for name, svc in services().items() if svc.get("image") in images]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_passes_lint(dockerfile: Path) -> None:
    users = _built_from(dockerfile)
    assert users, f"no compose service builds {dockerfile}"
    healthchecked = all(
        "healthcheck" in services()[name] for name in users if not one_shot(services()[name])
    )
    assert lint_dockerfile(dockerfile, compose_healthcheck=healthchecked) == []
