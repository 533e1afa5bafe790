"""The `softswitch` command: database, local stack, services and admin tools."""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import psycopg
import typer
import uvloop

from softswitch import db, logs
from softswitch.settings import MetricsSettings, Settings, load_settings

if TYPE_CHECKING:
    from acd.store import AcdConfig
    from softswitch.directory.store import KeyedDiff

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
stack_app = typer.Typer(
    no_args_is_help=True,
    help="The local stack (PostgreSQL, RabbitMQ, and Asterisk + Kamailio in a Debian sid chroot).",
)
accounts_app = typer.Typer(no_args_is_help=True, help="SIP accounts (Kamailio subscriber table).")
routes_app = typer.Typer(no_args_is_help=True, help="Call routes (table route): JSON in and out.")
directory_app = typer.Typer(
    no_args_is_help=True, help="The flat directory: intercom panels, flats and their devices."
)
app.add_typer(db_app, name="db")
app.add_typer(stack_app, name="stack")
app.add_typer(accounts_app, name="accounts")
app.add_typer(routes_app, name="routes")
app.add_typer(directory_app, name="directory")
_T = TypeVar("_T")
_Doc = TypeVar("_Doc")
_Plan = TypeVar("_Plan")
sos_app = typer.Typer(
    no_args_is_help=True, help="The 112 number pool of door intercoms: cities and numbers."
)
app.add_typer(sos_app, name="sos")
acd_app = typer.Typer(
    no_args_is_help=True, help="ACD call-centre queues: queues, agents and their memberships."
)
app.add_typer(acd_app, name="acd")


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ValueError as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    logs.configure(settings.log)
    return settings


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema (idempotent)."""
    applied = db.upgrade(_settings().database)
    typer.echo("\n".join(f"applied {name}" for name in applied) or "schema is up to date")


@db_app.command("status")
def db_status() -> None:
    """List applied migrations and those still pending."""
    settings = _settings()
    applied = db.applied_migrations(settings.database)
    done = {version for version, _, _ in applied}
    for _, name, applied_at in applied:
        typer.echo(f"{name} applied {applied_at}")
    for migration in db.discover_migrations():
        if migration.version not in done:
            typer.echo(f"{migration.name} PENDING")


@stack_app.command("up")
def stack_up() -> None:
    """Install what is missing and start every part; safe to run again."""
    from softswitch.stack import stack

    settings = stack.up(_settings())
    _print_status(settings)


@stack_app.command("down")
def stack_down() -> None:
    """Stop only what `stack up` started."""
    from softswitch.stack import stack

    stopped = stack.down(_settings())
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command("status")
def stack_status() -> None:
    """Show each part; exit code 1 when any part is down."""
    if not _print_status(_settings()):
        raise typer.Exit(1)


def _print_status(settings: Settings) -> bool:
    from softswitch.stack import stack

    parts = stack.status(settings)
    for part in parts:
        typer.echo(f"{part.name:<11} {'up' if part.up else 'DOWN':<5} {part.detail}")
    return all(part.up for part in parts)


@app.command("ari")
def ari(
    apps: Annotated[
        list[str] | None, typer.Option("--app", help="Stasis app to run (repeatable)")
    ] = None,
) -> None:
    """Run the ARI (Stasis) apps until SIGTERM; reconnects when Asterisk restarts."""
    settings = _settings()
    _run_ari_apps(settings, apps or settings.ari.apps)


def _serve_until_signal(
    run: Callable[[asyncio.Event], Awaitable[None]], metrics: MetricsSettings | None
) -> None:
    """Run a service coroutine until SIGTERM or SIGINT sets its stop event, with its
    /metrics listener when ``metrics`` names a port."""
    from softswitch.metrics import start_metrics_server

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        listener = await start_metrics_server(metrics) if metrics else None
        try:
            await run(stop)
        finally:
            if listener:
                await listener.cleanup()

    # uvloop: the event loop's own cost per request is a third of what asyncio's is, and
    # the routing service answers Kamailio once per call.
    uvloop.run(serve())


@app.command("routing")
def routing_service() -> None:
    """Run the routing service Kamailio asks for every new call (until SIGTERM)."""
    from routing.app import build

    settings = _settings()
    _serve_until_signal(build(settings).run, settings.metrics)


@routes_app.command("import")
def routes_import(
    file: Annotated[typer.FileText, typer.Argument(help="JSON list of routes ('-' = stdin)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and show the diff")] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="delete routes that are not in the file")
    ] = False,
) -> None:
    """Validate every route, then write all of them in one transaction (or none)."""
    from routing.store import apply_import, current_routes, parse_route_file, plan_import

    settings = _settings()
    specs, errors = parse_route_file(file.read())
    if errors:
        for error in errors:
            typer.echo(f"error: {error}", err=True)
        typer.echo(f"{len(errors)} error(s); nothing imported", err=True)
        raise typer.Exit(1)
    with psycopg.connect(settings.database.url) as conn:
        if dry_run:
            plan = plan_import(current_routes(conn), specs, replace=replace)
        else:
            try:
                plan = apply_import(conn, specs, replace=replace)
            except psycopg.errors.IntegrityError as exc:
                typer.echo(
                    f"refused by the database ({exc.diag.constraint_name}):"
                    f" {exc.diag.message_primary}; nothing imported",
                    err=True,
                )
                raise typer.Exit(1) from exc
    for label, names in (("+", plan.added), ("~", plan.changed), ("-", plan.removed)):
        for name in names:
            typer.echo(f"{label} {name}")
    verb = "would change" if dry_run else "changed"
    typer.echo(
        f"{verb}: {len(plan.added)} added, {len(plan.changed)} changed,"
        f" {len(plan.removed)} removed, {len(plan.unchanged)} unchanged"
    )


@routes_app.command("export")
def routes_export() -> None:
    """Print every route as the JSON `routes import` reads (export then import is a no-op)."""
    from routing.store import export_specs, spec_to_json

    settings = _settings()
    with psycopg.connect(settings.database.url) as conn:
        try:
            specs = export_specs(conn)
        except ValueError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from exc
    typer.echo(json.dumps([spec_to_json(spec) for spec in specs], indent=2, ensure_ascii=False))


@routes_app.command("test")
def routes_test(
    caller: Annotated[str, typer.Option(help="caller number (From user)")],
    callee: Annotated[str, typer.Option(help="callee number (Request-URI user)")],
    caller_host: Annotated[str, typer.Option(help="caller host (From domain)")] = "",
    callee_host: Annotated[str, typer.Option(help="callee host (Request-URI domain)")] = "",
    at: Annotated[
        datetime | None,
        typer.Option(
            help="decide as at this ISO time (default now; naive = UTC)",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"],
        ),
    ] = None,
    untrusted: Annotated[
        bool,
        typer.Option(
            "--untrusted",
            help="as from a caller Kamailio does not vouch for (not an authenticated account,"
            " not a trusted peer): relays outside our domain need a `public` route",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
) -> None:
    """Decide one call against the routes in PostgreSQL, exactly as the service would."""
    from routing.models import CallRequest
    from routing.store import decide_stored

    settings = _settings()
    call = CallRequest(
        caller=caller,
        caller_host=caller_host,
        callee=callee,
        callee_host=callee_host,
        trusted=not untrusted,
    )
    with psycopg.connect(settings.database.url) as conn:
        decision, loaded = decide_stored(conn, call, at or datetime.now(UTC), settings)
    for route_id, name, reason in loaded.bad:
        typer.echo(f"warning: route id {route_id} {name!r} skipped: {reason}", err=True)
    if as_json:
        typer.echo(decision.model_dump_json())
        return
    typer.echo(f"route:  {decision.route or '(none)'}  chain: {' -> '.join(decision.chain) or '-'}")
    typer.echo(f"action: {decision.action}  caller {decision.caller}  callee {decision.callee}")
    if decision.destinations:
        mode = "parallel" if decision.parallel else "in order"
        typer.echo(f"to ({mode}): {', '.join(decision.destinations)}")
    if decision.app:
        typer.echo(f"app: {decision.app} {' '.join(decision.app_args)}")
    if decision.reject:
        typer.echo(f"reject: {decision.reject.code} {decision.reject.reason}")
    if decision.flags:
        typer.echo(f"flags: {', '.join(decision.flags)}")


@routes_app.command("errors")
def routes_errors() -> None:
    """Routes the running service skipped at its last load, with the reason."""
    settings = _settings()
    with psycopg.connect(settings.database.url) as conn:
        rows = conn.execute(
            "SELECT route_id, route_name, reason, seen_at::text FROM route_load_error"
            " ORDER BY route_id"
        ).fetchall()
    for route_id, name, reason, seen_at in rows:
        typer.echo(f"route id {route_id} {name!r}: {reason} (since {seen_at})")
    if rows:
        raise typer.Exit(1)
    typer.echo("no skipped routes")


def _refuse_import_errors(errors: list[str]) -> None:
    """Print every error of an import file and exit 1, when there are any."""
    if errors:
        for error in errors:
            typer.echo(f"error: {error}", err=True)
        typer.echo(f"{len(errors)} error(s); nothing imported", err=True)
        raise typer.Exit(1)


def _refused_by_database(exc: psycopg.errors.IntegrityError) -> typer.Exit:
    """Say which constraint refused an import (which wrote nothing); raise the result."""
    # The detail names the record, e.g. "Key (account)=(door-17) already exists."
    detail = f" ({exc.diag.message_detail})" if exc.diag.message_detail else ""
    typer.echo(
        f"refused by the database ({exc.diag.constraint_name}):"
        f" {exc.diag.message_primary}{detail}; nothing imported",
        err=True,
    )
    return typer.Exit(1)


def _echo_plan(diffs: dict[tuple[str, str], KeyedDiff[Any]], *, dry_run: bool) -> None:
    """An import's diff, keyed by (kind, kinds): '+ kind key' lines (keys of several parts
    joined by spaces), then one count line per kind."""
    for label in ("+", "~", "-"):
        for (kind, _), diff in diffs.items():
            keys = {"+": diff.added, "~": diff.changed, "-": diff.removed}[label]
            for key in keys:
                typer.echo(f"{label} {kind} {' '.join(key) if isinstance(key, tuple) else key}")
    verb = "would change" if dry_run else "changed"
    for (_, kinds), diff in diffs.items():
        typer.echo(
            f"{kinds} {verb}: {len(diff.added)} added, {len(diff.changed)} changed,"
            f" {len(diff.removed)} removed, {len(diff.unchanged)} unchanged"
        )


def _import(
    parsed: tuple[_Doc, list[str]],
    *,
    current: Callable[[psycopg.Connection[Any]], _Doc],
    problems: Callable[[psycopg.Connection[Any], _Doc, _Doc], list[str]],
    plan: Callable[[_Doc, _Doc], _Plan],
    apply: Callable[[psycopg.Connection[Any], _Doc], _Plan],
    dry_run: bool,
) -> _Plan:
    """What `directory`, `sos` and `acd import` share, all or nothing: any problem of the
    file (``parsed`` errors, then ``problems`` against what is there) refuses it before a
    single row is written; a dry run plans, a real one applies in one transaction."""
    incoming, errors = parsed
    _refuse_import_errors(errors)
    # Autocommit: the checks' reads must not turn the import's transaction into a savepoint.
    with psycopg.connect(_settings().database.url, autocommit=True) as conn:
        existing = current(conn)
        _refuse_import_errors(problems(conn, existing, incoming))
        if dry_run:
            return plan(existing, incoming)
        try:
            return apply(conn, incoming)
        except psycopg.errors.IntegrityError as exc:
            raise _refused_by_database(exc) from exc


@directory_app.command("import")
def directory_import(
    file: Annotated[
        typer.FileText, typer.Argument(help="JSON {panels, flats} as `export` prints ('-' = stdin)")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and show the diff")] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="delete panels and flats that are not in the file")
    ] = False,
) -> None:
    """Validate every panel and flat, then write all of them in one transaction (or none)."""
    from softswitch.directory.store import (
        apply_directory_import,
        current_directory,
        parse_directory_file,
        plan_directory_import,
        unknown_city_problems,
    )

    plan = _import(
        parse_directory_file(file.read()),
        current=current_directory,
        problems=lambda conn, _, new: unknown_city_problems(conn, new),
        plan=lambda old, new: plan_directory_import(old, new, replace=replace),
        apply=lambda conn, new: apply_directory_import(conn, new, replace=replace),
        dry_run=dry_run,
    )
    _echo_plan({("panel", "panels"): plan.panels, ("flat", "flats"): plan.flats}, dry_run=dry_run)


@directory_app.command("export")
def directory_export() -> None:
    """Print the directory as the JSON `directory import` reads (export then import is a no-op)."""
    from softswitch.directory.store import export_directory

    settings = _settings()
    with psycopg.connect(settings.database.url) as conn:
        document = export_directory(conn)
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


@directory_app.command("flat")
def directory_flat(
    panel_account: Annotated[str, typer.Argument(help="the panel's SIP account")],
    dialled: Annotated[str, typer.Argument(help="what was dialled on the panel's keypad")],
) -> None:
    """Look up who a panel's call rings, as a call app would (the CRM first when configured)."""
    from softswitch.directory.crm import open_directory
    from softswitch.directory.models import FlatLookup

    settings = _settings()

    async def lookup() -> FlatLookup:
        async with open_directory(settings.directory, settings.database.url) as directory:
            return await directory.lookup_flat(panel_account, dialled)

    typer.echo(asyncio.run(lookup()).model_dump_json(indent=2))


@sos_app.command("import")
def sos_import(
    file: Annotated[
        typer.FileText,
        typer.Argument(help="JSON {cities, numbers} as `export` prints ('-' = stdin)"),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and show the diff")] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="delete cities and numbers that are not in the file")
    ] = False,
) -> None:
    """Validate every city and number, then write all of them in one transaction (or none)."""
    from softswitch.sos.store import (
        apply_sos_import,
        current_pool,
        parse_sos_file,
        plan_sos_import,
        reference_problems,
    )

    reservation = _settings().sos.reservation_minutes
    plan = _import(
        parse_sos_file(file.read(), default_reservation_minutes=reservation),
        current=current_pool,
        problems=lambda _, old, new: reference_problems(old, new, replace=replace),
        plan=lambda old, new: plan_sos_import(old, new, replace=replace),
        apply=lambda conn, new: apply_sos_import(conn, new, replace=replace),
        dry_run=dry_run,
    )
    _echo_plan(
        {("city", "cities"): plan.cities, ("number", "numbers"): plan.numbers}, dry_run=dry_run
    )


@sos_app.command("export")
def sos_export() -> None:
    """Print the pool as the JSON `sos import` reads (export then import is a no-op)."""
    from softswitch.sos.store import export_pool

    settings = _settings()
    with psycopg.connect(settings.database.url) as conn:
        document = export_pool(conn)
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


def _run_sos(operation: Callable[[psycopg.AsyncConnection[Any]], Awaitable[_T]]) -> _T:
    """Run one pool operation on its own connection."""
    settings = _settings()

    async def run() -> _T:
        async with await psycopg.AsyncConnection.connect(
            settings.database.url, autocommit=True
        ) as conn:
            return await operation(conn)

    return asyncio.run(run())


@sos_app.command("usage")
def sos_usage() -> None:
    """Per city: how many numbers are free, reserved (callback window open), leased, blocked."""
    from softswitch.sos.store import pool_usage

    usage = _run_sos(pool_usage)
    typer.echo(f"{'city':<20} {'free':>6} {'reserved':>8} {'leased':>6} {'blocked':>7}")
    for city in usage:
        typer.echo(
            f"{city.city_id:<20} {city.free:>6} {city.reserved:>8} {city.leased:>6}"
            f" {city.blocked:>7}"
        )


@sos_app.command("holders")
def sos_holders() -> None:
    """Numbers leased or reserved now: which panel holds each, since when, until when."""
    from softswitch.sos.store import reservations

    held = _run_sos(reservations)
    typer.echo(f"{'number':<16} {'status':<8} {'panel (account)':<36} {'since':<20} until")
    for held_number in held.values():
        until = held_number.valid_until
        typer.echo(
            f"{held_number.number:<16} {held_number.status:<8}"
            f" {f'{held_number.panel_id} ({held_number.panel_account})':<36}"
            f" {held_number.since:%Y-%m-%d %H:%M:%S}  "
            f"{f'{until:%Y-%m-%d %H:%M:%S}' if until else 'end of call'}"
        )


@sos_app.command("release")
def sos_release(number: Annotated[str, typer.Argument(help="pool number, E.164")]) -> None:
    """End the lease of a number whatever call holds it; it stays reserved for its panel."""
    from softswitch.sos.store import release_number

    release = _run_sos(lambda conn: release_number(conn, number=number, call_id=None))
    if release is None:
        typer.echo(f"{number} is not leased; nothing released", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"released {number} (call {release.call_id}, panel {release.panel_id});"
        f" reserved for the panel until {release.reserved_until:%Y-%m-%d %H:%M:%S %Z}"
    )


@sos_app.command("block")
def sos_block(
    number: Annotated[str, typer.Argument(help="pool number, E.164")],
    reason: Annotated[str, typer.Option("--reason", help="why (shown in export and holders)")],
) -> None:
    """Never lease a number again (until unblocked); its lease and reservation end now."""
    from softswitch.sos.store import block_number

    if not reason.strip():
        typer.echo("--reason must not be blank", err=True)
        raise typer.Exit(2)
    blocked = _run_sos(lambda conn: block_number(conn, number=number, reason=reason))
    if blocked is None:
        typer.echo(f"{number} is no pool number", err=True)
        raise typer.Exit(1)
    typer.echo(f"blocked {number} ({reason})")


@sos_app.command("unblock")
def sos_unblock(number: Annotated[str, typer.Argument(help="pool number, E.164")]) -> None:
    """Make a blocked number free again."""
    from softswitch.sos.store import unblock_number

    if _run_sos(lambda conn: unblock_number(conn, number=number)) is None:
        typer.echo(f"{number} is no blocked pool number", err=True)
        raise typer.Exit(1)
    typer.echo(f"unblocked {number}")


@acd_app.command("import")
def acd_import(
    file: Annotated[
        typer.FileText,
        typer.Argument(help="JSON {queues, agents} as `export` prints ('-' = stdin)"),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and show the diff")] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="delete queues and agents that are not in the file")
    ] = False,
) -> None:
    """Validate every queue and agent, then write all of them in one transaction (or none).

    Agents keep their status and counters; an agent in the file has exactly the queues it
    lists there.
    """
    from acd.store import (
        apply_acd_import,
        current_acd,
        parse_acd_file,
        plan_acd_import,
        reference_problems,
    )

    plan = _import(
        parse_acd_file(file.read()),
        current=current_acd,
        problems=lambda _, old, new: reference_problems(old, new, replace=replace),
        plan=lambda old, new: plan_acd_import(old, new, replace=replace),
        apply=lambda conn, new: apply_acd_import(conn, new, replace=replace),
        dry_run=dry_run,
    )
    _echo_plan(
        {
            ("queue", "queues"): plan.queues,
            ("agent", "agents"): plan.agents,
            ("membership", "memberships"): plan.memberships,
        },
        dry_run=dry_run,
    )


@acd_app.command("export")
def acd_export() -> None:
    """Print queues and agents as the JSON `acd import` reads (export then import is a no-op)."""
    from acd.store import export_acd

    settings = _settings()
    with psycopg.connect(settings.database.url) as conn:
        document = export_acd(conn)
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


def _load_acd() -> AcdConfig:
    """The ACD's configuration and agent status as the ACD app loads them."""
    from acd.store import load_acd

    settings = _settings()

    async def run() -> AcdConfig:
        async with await psycopg.AsyncConnection.connect(settings.database.url) as conn:
            return await load_acd(conn)

    return asyncio.run(run())


@acd_app.command("agents")
def acd_agents() -> None:
    """Agents with their account, status (as last saved by the ACD), since when, and queues."""
    config = _load_acd()
    queues_of: dict[str, list[str]] = {}
    for membership in config.memberships:
        queues_of.setdefault(membership.agent_id, []).append(membership.queue_id)
    typer.echo(f"{'agent':<20} {'account':<12} {'status':<24} {'since':<19}  queues")
    for agent in config.agents:
        status = agent.status + (f" ({agent.paused_reason})" if agent.paused_reason else "")
        typer.echo(
            f"{agent.agent_id:<20} {agent.account:<12} {status:<24}"
            f" {agent.status_since.astimezone():%Y-%m-%d %H:%M:%S}"
            f"  {', '.join(queues_of.get(agent.agent_id, [])) or '-'}"
        )


@acd_app.command("queues")
def acd_queues() -> None:
    """Queues with their strategy and how many agents serve each."""
    config = _load_acd()
    members: dict[str, int] = {}
    for membership in config.memberships:
        members[membership.queue_id] = members.get(membership.queue_id, 0) + 1
    typer.echo(f"{'queue':<20} {'strategy':<16} {'members':>7}  name")
    for queue in config.queues:
        typer.echo(
            f"{queue.queue_id:<20} {queue.strategy:<16} {members.get(queue.queue_id, 0):>7}"
            f"  {queue.name}"
        )


def _run_ari_apps(settings: Settings, names: list[str]) -> None:
    from ari_apps.app import run_ari_apps
    from ari_apps.registry import select_apps

    try:
        builders = select_apps(names)
    except KeyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    _serve_until_signal(functools.partial(run_ari_apps, settings, builders), settings.metrics)


events_app = typer.Typer(no_args_is_help=True, help="Call events on RabbitMQ and CDRs.")
app.add_typer(events_app, name="events")


@events_app.command("relay")
def events_relay() -> None:
    """Publish the event outbox to RabbitMQ (in order, with confirms) until SIGTERM."""
    from softswitch.events.relay import OutboxRelay

    settings = _settings()
    _serve_until_signal(OutboxRelay(settings.database.url, settings.amqp).run, settings.metrics)


@events_app.command("cdr")
def events_cdr() -> None:
    """Fold call events from RabbitMQ into CDR rows until SIGTERM."""
    from softswitch.events.consumer import CdrConsumer

    settings = _settings()
    _serve_until_signal(CdrConsumer(settings.database.url, settings.amqp).run, settings.metrics)


@events_app.command("tail")
def events_tail(
    key: Annotated[str, typer.Option(help="binding key, e.g. 'call.#'")] = "#",
    as_json: Annotated[bool, typer.Option("--json", help="one JSON event per line")] = False,
) -> None:
    """Print live events (a private queue that goes away when you stop)."""
    from softswitch.events.tail import tail

    settings = _settings()
    # No /metrics: a person's tail must not take the port of the service it watches.
    _serve_until_signal(lambda stop: tail(settings.amqp, key, as_json=as_json, stop=stop), None)


@events_app.command("schema")
def events_schema(
    directory: Annotated[Path, typer.Argument(help="folder for <routing key>.json files")],
) -> None:
    """Write the JSON Schema of every event."""
    from softswitch.events.models import EVENT_TYPES

    directory.mkdir(parents=True, exist_ok=True)
    for key, event_type in sorted(EVENT_TYPES.items()):
        schema = event_type.model_json_schema()
        (directory / f"{key}.json").write_text(json.dumps(schema, indent=2) + "\n")
    typer.echo(f"{len(EVENT_TYPES)} schemas in {directory}")


@events_app.command("docs")
def events_docs() -> None:
    """Print docs/events.md (every routing key with an example payload)."""
    from softswitch.events.examples import events_markdown

    typer.echo(events_markdown(), nl=False)


@events_app.command("prune")
def events_prune(
    days: Annotated[int, typer.Option(min=1, help="keep published events this many days")] = 7,
) -> None:
    """Delete published outbox rows older than --days (unpublished ones are never deleted)."""
    settings = _settings()
    with psycopg.connect(settings.database.url) as conn:
        deleted = conn.execute(
            "DELETE FROM event_outbox WHERE published_at < now() - make_interval(days => %s)",
            (days,),
        ).rowcount
    typer.echo(f"deleted {deleted} published events older than {days} days")


@app.command("demo")
def demo() -> None:
    """Seed demo accounts and routes, print where to point a SIP phone, run our services."""
    from ari_apps.app import run_ari_apps
    from ari_apps.registry import select_apps
    from routing.app import build as build_routing
    from softswitch.demo import DEMO_PANEL, DEMO_QUEUE_NUMBER, seed
    from softswitch.events.consumer import CdrConsumer
    from softswitch.events.relay import OutboxRelay

    settings = _settings()
    try:
        accounts = seed(settings)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    if settings.metrics.port == 0:
        settings = settings.model_copy(update={"metrics": MetricsSettings(port=9101)})
    kamailio = settings.kamailio
    typer.echo(
        "\n".join(
            [
                "Softswitch demo",
                f"  Point a SIP phone at {kamailio.sip_ip}:{kamailio.sip_port} (UDP or TCP),"
                f" domain/realm {kamailio.sip_domain}:",
                *(f"    user {user}  password {password}" for user, password in accounts),
                "  Dial 1001-1003 to ring another demo phone, 486 to hear busy, anything else"
                f" to reach the '{settings.ari.apps[0]}' Stasis app (answers, beeps, hangs up).",
                f"  Account {DEMO_PANEL} is a door intercom: from it, dial 1 to ring 1001-1003 at"
                f" once (first answer wins); calls to {DEMO_PANEL} wait while it is busy.",
                f"  Dial {DEMO_QUEUE_NUMBER} to wait in the support queue (music on hold; press 1"
                " for a callback): its agents 1002 and 1003 are logged in.",
                "  Routes: `softswitch routes export`; try one: `softswitch routes test"
                " --caller 1001 --callee 89161234567`.",
                f"  Routing service: {settings.routing.url}; metrics:"
                f" http://{settings.metrics.host}:{settings.metrics.port}/metrics",
                "  Events: `softswitch events tail`; CDRs: table cdr.",
                "  Stop: Ctrl-C (our services); `softswitch stack down` (the stack).",
            ]
        )
    )
    routing = build_routing(settings)
    ari_apps = functools.partial(run_ari_apps, settings, select_apps(settings.ari.apps))
    relay = OutboxRelay(settings.database.url, settings.amqp)
    cdr = CdrConsumer(settings.database.url, settings.amqp)

    async def run(stop: asyncio.Event) -> None:
        await asyncio.gather(routing.run(stop), ari_apps(stop), relay.run(stop), cdr.run(stop))

    _serve_until_signal(run, settings.metrics)


@accounts_app.command("add")
def accounts_add(
    username: str,
    password: Annotated[str | None, typer.Option(help="generated when omitted")] = None,
    domain: Annotated[str | None, typer.Option(help="defaults to the local SIP domain")] = None,
) -> None:
    """Create or re-key a SIP account; the password is stored only as HA1 hashes."""
    from softswitch.accounts import upsert_account

    settings = _settings()
    domain = domain or settings.kamailio.sip_domain
    password = password or secrets.token_urlsafe(12)
    try:
        upsert_account(settings.database.url, username, domain, password)
    except psycopg.errors.CheckViolation as exc:
        typer.echo(f"refused: {exc.diag.constraint_name}: {exc.diag.message_primary}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"{username}@{domain} password {password}")


@accounts_app.command("list")
def accounts_list() -> None:
    """Accounts with their registered contacts."""
    from softswitch.accounts import accounts_with_contacts

    for username, domain, contacts in accounts_with_contacts(_settings().database.url):
        typer.echo(f"{username}@{domain}  {contacts}")


admin_app = typer.Typer(
    no_args_is_help=True, help="The admin HTTP API (/api/v1, OpenAPI) and its access tokens."
)
token_app = typer.Typer(no_args_is_help=True, help="Bearer tokens of the admin API.")
admin_app.add_typer(token_app, name="token")
app.add_typer(admin_app, name="admin")


class _TokenRole(StrEnum):
    admin = "admin"
    supervisor = "supervisor"
    read_only = "read_only"


@admin_app.command("serve")
def admin_serve() -> None:
    """Serve the admin API (and its /metrics) on SOFTSWITCH_ADMIN_HOST:_PORT until SIGTERM."""
    import uvicorn

    from softswitch.admin.app import build

    settings = _settings()
    config = uvicorn.Config(
        build(settings),
        host=settings.admin.host,
        port=settings.admin.port,
        loop="uvloop",
        log_config=None,  # our JSON log lines (logs.configure), uvicorn's records included
        server_header=False,
        proxy_headers=False,  # rate limits count the real peer, not a header it can forge
    )
    # Once shut down gracefully, uvicorn raises the signal that stopped it again, for the
    # handler in place before it ran: with the default one the process dies of SIGTERM
    # (exit -15). A graceful stop is a success here, as for every other service.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    uvicorn.Server(config).run()


@token_app.command("add")
def admin_token_add(
    name: Annotated[str, typer.Argument(help="who holds it, e.g. noc-grafana")],
    role: Annotated[_TokenRole, typer.Option(help="what it may do")],
) -> None:
    """Create a token and print it (only now: the database keeps its SHA-256)."""
    from softswitch.admin.auth import TOKEN_NAME, new_token, token_digest
    from softswitch.admin.store import add_token

    if not TOKEN_NAME.fullmatch(name):
        typer.echo(
            "NAME: letters, digits and ._@- (up to 64), starting with a letter or digit", err=True
        )
        raise typer.Exit(2)
    token = new_token()
    with psycopg.connect(_settings().database.url) as conn:
        try:
            add_token(conn, name, role.value, token_digest(token))
        except psycopg.errors.UniqueViolation as exc:
            typer.echo(
                f"a token named {name!r} exists (revoked ones too): pick another name", err=True
            )
            raise typer.Exit(1) from exc
    typer.echo(token)
    typer.echo(f"token {name!r} ({role.value}) created; it is shown only now", err=True)


@token_app.command("list")
def admin_token_list() -> None:
    """Tokens (never their text): name, role, created, last used, revoked."""
    from softswitch.admin.store import list_tokens

    with psycopg.connect(_settings().database.url) as conn:
        tokens = list_tokens(conn)

    def moment(value: datetime | None) -> str:
        return f"{value.astimezone():%Y-%m-%d %H:%M:%S}" if value else "-"

    typer.echo(f"{'name':<24} {'role':<10} {'created':<19}  {'last used':<19}  revoked")
    for token in tokens:
        typer.echo(
            f"{token.name:<24} {token.role:<10} {moment(token.created_at):<19}"
            f"  {moment(token.last_used_at):<19}  {moment(token.revoked_at)}"
        )


@token_app.command("revoke")
def admin_token_revoke(name: Annotated[str, typer.Argument(help="the token's name")]) -> None:
    """Revoke a token: it authenticates nothing from now on (the row stays, for the record)."""
    from softswitch.admin.store import revoke_token

    with psycopg.connect(_settings().database.url) as conn:
        revoked = revoke_token(conn, name)
    if not revoked:
        typer.echo(f"no valid token named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {name}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
