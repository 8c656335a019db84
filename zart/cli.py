"""The `zart` command line.

Every command takes --database-url (default: $ZART_DATABASE_URL, else the embedded server). Errors
are one line on stderr and a non-zero exit: 1 for an error of the request or the system, 2 for a
usage error (click's convention).

Each command imports the parts of the engine it uses (psycopg, the client, the worker...), in its
body: a command that reads a status, and `zart --help`, do not pay for the worker's imports.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import TYPE_CHECKING, Any

import click
import orjson

from . import worker_metrics
from .apps import import_apps
from .errors import ZartError
from .sql import STATUSES

if TYPE_CHECKING:
    from . import client
    from .replay_check import Summary, Verdict

# zart.db.ENV_URL, which the options need when this module is imported; zart.db imports psycopg
# (tests/test_cli.py checks that they are the same).
ENV_URL = "ZART_DATABASE_URL"


class InvalidInput(ZartError):
    """A command-line value that cannot be used."""


EXIT_ERROR = 1
# `zart replay-check` answers with its exit status (1: some execution would diverge), so that its own
# errors, which leave the question unanswered, exit as a usage error does.
EXIT_UNCHECKED = 2


def _fail(message: str, code: int = EXIT_ERROR) -> None:
    click.echo(f"zart: error: {message}", err=True)
    sys.exit(code)


def _errors_exit(code: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A command's errors as one `zart: error:` line on stderr, and exit status `code`."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except ZartError as exc:
                _fail(str(exc), code)
            except (ValueError, TypeError) as exc:
                _fail(str(exc), code)
            except Exception as exc:
                # the server went away mid-command, a statement timed out... (a command that did not
                # import psycopg raised none of its errors)
                psycopg = sys.modules.get("psycopg")
                if psycopg is None or not isinstance(exc, psycopg.Error):
                    raise
                from .db import first_line

                _fail(f"database error: {type(exc).__name__}: {first_line(exc)}", code)

        return wrapper

    return decorate


_handle_errors = _errors_exit(EXIT_ERROR)


database_url_option = click.option(
    "--database-url",
    envvar=ENV_URL,
    default=None,
    help="PostgreSQL URL (default: $ZART_DATABASE_URL, else the embedded server in ./.zart).",
)
app_option = click.option(
    "--app", "apps", multiple=True, metavar="MODULE", help="Module defining workflows (repeatable)."
)


def _parse_json(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON ({exc}): {text[:80]!r}") from None


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


# -- output: rich tables on stdout, JSON for scripts ------------------------------------------------

_DETAIL_WIDTH = 80


def _print(*renderables: Any) -> None:
    """Print rich tables on stdout. Piped output is neither wrapped at 80 columns nor coloured, and
    has no trailing blanks, so that scripts and diffs see plain lines."""
    from rich.console import Console

    console = Console(highlight=False)
    if console.is_terminal:
        for renderable in renderables:
            console.print(renderable)
        return
    console = Console(highlight=False, width=400, no_color=True)
    with console.capture() as captured:
        for renderable in renderables:
            console.print(renderable)
    for line in captured.get().splitlines():
        click.echo(line.rstrip())


def _text(value: Any) -> Any:
    """User data as a rich Text: never read as markup."""
    from rich.text import Text

    return Text("" if value is None else str(value))


def _short(text: str, width: int = _DETAIL_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _seconds(seconds: float) -> str:
    """A duration for people: 12ms, 1.25s, 4m05s, 2h03m, 1d02h."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _between(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    return _seconds(max(0.0, (end - start).total_seconds()))


def _offset(origin: datetime, moment: datetime | None) -> str:
    """`moment` as an offset from the execution's creation: +1.25s."""
    if moment is None:
        return "-"
    delta = (moment - origin).total_seconds()
    return ("+" if delta >= 0 else "-") + _seconds(abs(delta))


def _timestamp(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"


def _queue_line(info: client.ExecutionInfo) -> str:
    """`emails (key tenant-42, priority -5)`: where the execution waits for its turn."""
    details = ([f"key {info.key}"] if info.key is not None else []) + (
        [f"priority {info.priority}"] if info.priority != 0 else []
    )
    return info.queue + (f" ({', '.join(details)})" if details else "")


def _entry_name(key: str) -> str:
    """`shipment_ready` from `event:shipment_ready#1`."""
    return key.split(":", 1)[-1].rsplit("#", 1)[0]


def _step_details(step: client.StepRecord, now: datetime) -> str:
    if step.kind == "sleep":
        planned = _between(step.started_at, step.wake_at)
        if step.status == "waiting":
            return f"sleeping {planned}, until {_timestamp(step.wake_at)} (in {_between(now, step.wake_at)})"
        return f"slept {planned}"
    if step.kind == "emit":
        return f"emitted value {step.key.rsplit('#', 1)[-1]} of stream {_entry_name(step.key)!r}"
    if step.kind == "patch":
        return f"patched {_entry_name(step.key)!r}: runs the code with this patch"
    if step.kind == "event":
        name = _entry_name(step.key)
        if step.status == "waiting":
            deadline = "no timeout" if step.wake_at is None else f"timeout at {_timestamp(step.wake_at)}"
            return f"waiting for event {name!r} ({deadline})"
        if step.status == "failed":
            return _error_text(step.error)
        return f"received {name!r}: {_json(step.result)}"
    if step.status == "failed":
        return _error_text(step.error)
    return f"-> {_json(step.result)}"


def _timeline(
    info: client.ExecutionInfo,
    steps: list[client.StepRecord],
    attempts: list[client.AttemptRecord],
    now: datetime,
) -> Any:
    """The execution's history as a table: one row per step, sleep, event wait and patch, in order, and
    one row per attempt under a step that needed more than one (or is running now)."""
    from rich import box
    from rich.table import Table

    by_step: dict[str, list[client.AttemptRecord]] = {}
    for attempt in attempts:
        by_step.setdefault(attempt.step_key, []).append(attempt)
    origin = info.created_at
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("#", "entry", "kind", "status", "attempts", "at", "took", "details"):
        table.add_column(column, no_wrap=column != "details", overflow="fold")

    def attempt_rows(key: str, always: bool) -> None:
        tries = by_step.get(key, [])
        if not always and len(tries) <= 1 and all(t.outcome == "succeeded" for t in tries):
            return
        for attempt in tries:
            table.add_row(
                "",
                _text(f"  attempt {attempt.attempt}"),
                "",
                _text(attempt.outcome or "running"),
                "",
                _offset(origin, attempt.started_at),
                _between(attempt.started_at, attempt.finished_at or now),
                _text(_short(f"{attempt.error_type}: {attempt.error_message}" if attempt.error_type else "")),
            )

    for step in steps:
        # A step's own started_at is its last attempt's: the timeline starts it at its first.
        began = min((t.started_at for t in by_step.get(step.key, [])), default=step.started_at)
        table.add_row(
            str(step.position + 1),
            _text(step.key),
            step.kind,
            _text(step.status),
            str(step.attempts) if step.kind == "step" else "",
            _offset(origin, began),
            _between(began, step.finished_at or (now if step.status == "waiting" else None)),
            _text(_short(_step_details(step, now))),
        )
        if step.kind == "step":
            attempt_rows(step.key, always=False)
    recorded = {step.key for step in steps}
    for key, tries in by_step.items():  # steps under way: attempts but no checkpoint yet
        if key in recorded:
            continue
        last = tries[-1]
        state = "running" if last.outcome is None else "retrying"
        details = "" if last.outcome is None else f"next attempt after its back-off; last: {last.error_type}"
        table.add_row(
            "",
            _text(key),
            "step",
            state,
            str(len(tries)),
            _offset(origin, tries[0].started_at),
            _between(tries[0].started_at, now),
            _text(_short(details)),
        )
        attempt_rows(key, always=True)
    return table


@click.group()
@click.option("--log-level", default="WARNING", show_default=True, help="Logging level.")
@click.version_option(package_name="zart")
def main(log_level: str) -> None:
    """Zart: durable workflows on PostgreSQL."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")


def _not_blank(value: str | None, option: str) -> str | None:
    """An option's value, refused before anything is done when it is empty or only spaces."""
    if value is not None and not value.strip():
        raise click.BadParameter("must not be empty", param_hint=option)
    return value


@main.command()
@database_url_option
@_handle_errors
def migrate(database_url: str | None) -> None:
    """Create or upgrade Zart's tables (idempotent)."""
    from . import db, schema

    url = db.resolve_url(database_url)
    applied = schema.migrate(url)
    if applied:
        for migration in applied:
            click.echo(f"applied {migration.version:04d}_{migration.name}")
    else:
        click.echo("schema is up to date")


def worker_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options `zart worker` and `zart supervise` share; they arrive as `**engine` kwargs."""
    options = [
        click.option(
            "--concurrency", default=100, show_default=True, help="Executions in flight per process."
        ),
        click.option("--batch", default=50, show_default=True, help="Tasks claimed per query."),
        click.option("--lease", default="30s", show_default=True, help="Lease on a claimed task."),
        click.option("--poll-interval", default="5s", show_default=True, help="Fallback poll period."),
        click.option(
            "--grace", default="30s", show_default=True, help="How long SIGTERM lets in-flight work finish."
        ),
        click.option("--no-listen", is_flag=True, help="Do not LISTEN for notifications; poll only."),
        click.option(
            "--max-abandoned",
            default=3,
            show_default=True,
            type=click.IntRange(min=0),
            help="Poison-pill limit: fail an execution whose step died with its worker this many times "
            "(0: no limit).",
        ),
        click.option(
            "--lookahead",
            default="250ms",
            show_default=True,
            help="Claim timers (a sleep's end, a retry's back-off) this early; they wait in the worker "
            "for their moment.",
        ),
        click.option(
            "--inline-fanout",
            default=32,
            show_default=True,
            type=click.IntRange(min=0),
            help="Run zart.parallel/zart.map branches in the workflow's own worker when at most this "
            "many run at once (0: always as tasks any worker may claim).",
        ),
        click.option(
            "--watchdog",
            default=None,
            metavar="DURATION",
            show_default="4 leases or poll intervals, at least 60s",
            help="SIGKILL a worker whose heartbeat or claim loop has not gone round for this long (a "
            "step blocking the event loop, a connection that never answers): zart supervise replaces "
            "it, zart worker kills itself for its process manager to restart; 0 turns it off.",
        ),
        click.option(
            "--metrics-port",
            default=None,
            type=click.IntRange(min=1, max=65535),
            help="Serve the workers' Prometheus metrics over HTTP on this port (all of them, under "
            "zart supervise).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _worker_settings(engine: dict[str, Any]) -> dict[str, Any]:
    """`zart.Worker` keyword arguments from the shared options."""
    settings = dict(engine)
    settings["listen"] = not settings.pop("no_listen")
    return settings


@main.command()
@database_url_option
@app_option
@worker_options
@_handle_errors
def worker(database_url: str | None, apps: tuple[str, ...], metrics_port: int | None, **engine: Any) -> None:
    """Run one worker process in the foreground (SIGTERM/SIGINT drain it; a second SIGINT stops it)."""
    from .worker import Worker

    if metrics_port is not None:
        worker_metrics.enable(metrics_port, processes=False)
    import_apps(apps)
    logging.getLogger("zart").setLevel(min(logging.getLogger().level, logging.INFO))
    Worker(database_url, **_worker_settings(engine)).run()


@main.command()
@database_url_option
@app_option
@click.option(
    "--procs", default=os.cpu_count() or 1, show_default="the number of CPUs", help="Worker processes."
)
@click.option(
    "--name",
    default=None,
    metavar="NAME",
    callback=lambda _ctx, _param, value: _not_blank(value, "--name"),
    help="This supervisor's name among those sharing the database (default: HOST:PID).",
)
@worker_options
@_handle_errors
def supervise(
    database_url: str | None,
    apps: tuple[str, ...],
    procs: int,
    name: str | None,
    metrics_port: int | None,
    **engine: Any,
) -> None:
    """Fork PROCS worker processes and keep them running (SIGTERM/SIGINT drain them)."""
    if metrics_port is not None:  # before anything imports prometheus_client: its multiprocess mode
        worker_metrics.enable(metrics_port, processes=True)
    import zart

    from . import db, schema
    from .durations import parse_duration
    from .supervisor import Supervisor
    from .worker import Worker  # noqa: F401 - imported once here, not in each forked process

    for public in zart.__all__:  # the whole public API (the apps' workflows call it in the workers)
        getattr(zart, public)
    import_apps(apps)
    logging.getLogger("zart").setLevel(min(logging.getLogger().level, logging.INFO))
    url = db.resolve_url(database_url)
    settings = _worker_settings(engine)
    grace = parse_duration(settings.pop("grace"), "--grace")
    watchdog = settings.pop("watchdog")  # the supervisor's, not each worker's own
    supervisor = Supervisor(url, procs, grace, settings, name=name, watchdog=watchdog)
    # Started during an outage, it waits for the database (as its workers would), so that a
    # supervisor (re)started by systemd or Kubernetes before PostgreSQL comes up is not a crash loop.
    db.call_when_reachable(lambda: schema.migrate(url), logging.getLogger("zart.supervisor"))
    sys.exit(supervisor.run())


@main.command()
@click.argument("workflow")
@click.option("--input", "input_json", default=None, metavar="JSON", help="The workflow's input.")
@click.option("--id", "execution_id", default=None, help="Execution id (default: a new UUID).")
@click.option("--queue", default=None, metavar="QUEUE", help="Queue to wait in (default: the workflow's).")
@click.option("--key", default=None, metavar="KEY", help="Key of the queue's per-key limit (a tenant, ...).")
@click.option(
    "--priority",
    default=None,
    metavar="N",
    help="Lower begins first among the queue's ready ones (default 0).",
)
@click.option("--delay", default=None, metavar="DURATION", help="Do not begin before this long from now.")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout", default=None, type=float, help="With --wait: give up after seconds.")
@database_url_option
@app_option
@_handle_errors
def start(
    workflow: str,
    input_json: str | None,
    execution_id: str | None,
    queue: str | None,
    key: str | None,
    priority: str | None,
    delay: str | None,
    wait: bool,
    timeout: float | None,
    database_url: str | None,
    apps: tuple[str, ...],
) -> None:
    """Start an execution of WORKFLOW; prints its id (or, with --wait, its result)."""
    from . import client

    value = _parse_json(input_json, "--input")
    rank = 0 if priority is None else _whole_number(priority, "--priority")
    if delay is not None:
        from .queues import parse_delay

        parse_delay(delay, "--delay")  # named as typed; the client checks it again
    import_apps(apps)
    handle = client.start(
        workflow,
        value,
        id=execution_id,
        queue=queue,
        key=key,
        priority=rank,
        delay=delay,
        database_url=database_url,
    )
    if not wait:
        click.echo(handle.id)
        return
    click.echo(_json(handle.result(timeout=timeout)))


def _whole_number(text: str, option: str) -> int:
    """An integer option read as text, so that a bad one is the usual one-line error (exit 1)."""
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(f"{option} must be a whole number, not {text!r}") from None


@main.command("send-event")
@click.argument("execution_id")
@click.argument("event")
@click.option("--payload", "payload_json", default=None, metavar="JSON", help="The event's payload.")
@click.option("--key", default=None, help="Idempotency key: a repeated key is delivered once.")
@database_url_option
@_handle_errors
def send_event(
    execution_id: str, event: str, payload_json: str | None, key: str | None, database_url: str | None
) -> None:
    """Deliver EVENT to an execution (waking it if it waits for it)."""
    from . import client

    payload = _parse_json(payload_json, "--payload")
    delivered = client.send_event(execution_id, event, payload, key=key, database_url=database_url)
    click.echo("delivered" if delivered else f"already delivered (key {key!r})")


@main.command()
@click.argument("execution_id")
@click.option("--json", "as_json", is_flag=True, help="Print the execution as JSON.")
@database_url_option
@_handle_errors
def status(execution_id: str, as_json: bool, database_url: str | None) -> None:
    """Print an execution's status (and its result or error)."""
    from . import client
    from .views import status_json

    info = client.get(execution_id, database_url=database_url).info()
    if as_json:
        click.echo(_json(status_json(info)))
        return
    click.echo(info.status)
    if info.status == "completed":
        click.echo(f"result: {_json(info.result)}")
    elif info.error:
        click.echo(f"error: {info.error.get('type')}: {info.error.get('message')}")


@main.command("list")
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    default=None,
    help="Only executions with this status.",
)
@click.option("--workflow", default=None, help="Only executions of this workflow.")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(min=1), help="Most executions to show."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@database_url_option
@_handle_errors
def list_(
    status: str | None, workflow: str | None, limit: int, as_json: bool, database_url: str | None
) -> None:
    """List the newest executions (optionally of one status and/or workflow)."""
    from rich import box
    from rich.table import Table

    from . import client
    from .views import summary_json

    executions = client.list_executions(
        status=status, workflow=workflow, limit=limit, database_url=database_url
    )
    if as_json:
        click.echo(_json([summary_json(info) for info in executions]))
        return
    if not executions:
        click.echo("no executions")
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("id", "workflow", "status", "created", "took"):
        table.add_column(column, no_wrap=True)
    for info in executions:
        table.add_row(
            _text(info.id),
            _text(info.workflow),
            _text(info.status),
            _timestamp(info.created_at),
            _between(info.created_at, info.finished_at),
        )
    _print(table)


# The last values of each stream `zart show` prints.
SHOWN_STREAM_VALUES = 3
# `zart show`: the children listed one per line (`--json` lists views.SHOWN_CHILDREN of them).
SHOWN_CHILD_LINES = 20


@main.command()
@click.argument("execution_id")
@click.option("--json", "as_json", is_flag=True, help="Print the execution and its history as JSON.")
@database_url_option
@_handle_errors
def show(execution_id: str, as_json: bool, database_url: str | None) -> None:
    """Show an execution: its status, input, result or error, and a timeline of its steps."""
    from rich.table import Table

    from . import client, streams
    from .views import SHOWN_CHILDREN, execution_json

    handle = client.get(execution_id, database_url=database_url)
    info = handle.info()
    steps = handle.steps()
    attempts = handle.attempts()
    tails = streams.tails(handle.database_url, info.id, limit=SHOWN_STREAM_VALUES)
    children = handle.children(limit=SHOWN_CHILDREN) if info.children else []
    if as_json:
        data = execution_json(info, steps, children)
        if tails:
            data["streams"] = [
                {"name": name, "count": count, "last": [value.value for value in values]}
                for name, count, values in tails
            ]
        data["attempts"] = [
            {
                "step_key": attempt.step_key,
                "attempt": attempt.attempt,
                "worker_id": attempt.worker_id,
                "started_at": attempt.started_at,
                "finished_at": attempt.finished_at,
                "outcome": attempt.outcome,
                "error_type": attempt.error_type,
                "error_message": attempt.error_message,
                "traceback": attempt.traceback,
            }
            for attempt in attempts
        ]
        click.echo(_json(data))
        return
    now = datetime.now(UTC)
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column()
    header.add_row("execution", _text(info.id))
    header.add_row("workflow", _text(info.workflow))
    header.add_row("status", _text(info.status))
    if info.queue != "default" or info.key is not None or info.priority != 0:
        header.add_row("queue", _text(_queue_line(info)))
    header.add_row("created", _timestamp(info.created_at))
    if info.started_at is not None:
        header.add_row(
            "started", f"{_timestamp(info.started_at)} ({_offset(info.created_at, info.started_at)})"
        )
    if info.finished_at is not None:
        header.add_row(
            "finished",
            f"{_timestamp(info.finished_at)} (took {_between(info.created_at, info.finished_at)})",
        )
    if info.forked_from is not None:
        header.add_row("forked from", _text(f"{info.forked_from} at {info.forked_at}"))
    if info.forks:
        header.add_row("forks", _text(", ".join(info.forks)))
    if info.parent_id is not None:
        header.add_row("parent", _text(f"{info.parent_id} ({info.parent_key})"))
    if info.children:
        counts: dict[str, int] = {}
        for child in children:
            counts[child.status] = counts.get(child.status, 0) + 1
        listed = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        more = f"; the first {len(children)}: " if len(children) < info.children else ": "
        header.add_row("children", _text(f"{info.children}{more}{listed}"))
    if info.resumes:
        header.add_row("resumed", f"{info.resumes} time{'s' if info.resumes > 1 else ''}")
    header.add_row("input", _text(_short(_json(info.input), 200)))
    if info.status == "completed":
        header.add_row("result", _text(_short(_json(info.result), 200)))
    elif info.error:
        header.add_row("error", _text(_short(_error_text(info.error), 200)))
    for name, count, values in tails:  # each stream (zart.emit): its last few values
        shown = ", ".join(_short(_json(value.value), 60) for value in values)
        more = "..., " if count > len(values) else ""
        header.add_row(
            _text(f"stream {name}"), _text(f"{count} value{'s' if count != 1 else ''}: {more}{shown}")
        )
    parts: list[Any] = [header, ""]
    if children:
        parts.extend([_children_table(children[:SHOWN_CHILD_LINES], info.children), ""])
    parts.append(_timeline(info, steps, attempts, now) if steps or attempts else "no steps yet")
    traceback = (info.error or {}).get("traceback")
    if info.status == "failed" and traceback:
        parts.extend(["", _text(traceback.rstrip())])
    _print(*parts)


def _children_table(children: list[client.ChildRecord], count: int) -> Any:
    """The first children of a parent, one line each: its id, status and entry in the history."""
    from rich.table import Table

    more = f" (the first {len(children)} of {count})" if count > len(children) else ""
    table = Table(title=f"children{more}", title_justify="left", box=None, padding=(0, 2))
    for column in ("child", "status", "entry"):
        table.add_column(column, style="bold" if column == "child" else None)
    for child in children:
        table.add_row(_text(child.id), _text(child.status), _text(child.key))
    return table


@main.command()
@click.argument("execution_id")
@click.option("--reason", default="cancelled", show_default=True, help="Stored as the execution's error.")
@database_url_option
@_handle_errors
def cancel(execution_id: str, reason: str, database_url: str | None) -> None:
    """Cancel an execution: it ends `cancelled` and nothing of it runs any more."""
    from . import client

    if client.cancel(execution_id, reason=reason, database_url=database_url):
        click.echo("cancelled")
    else:
        status = client.get(execution_id, database_url=database_url).status()
        click.echo(f"already {status}; nothing to cancel")


@main.command()
@click.argument("execution_id")
@database_url_option
@_handle_errors
def resume(execution_id: str, database_url: str | None) -> None:
    """Run a failed, timed_out or cancelled execution on from its first unfinished step.

    Its completed steps do not run again; the step that failed gets a fresh retry budget. Deploy
    the fix first: the workers replay its history with the code they run.
    """
    from . import operating

    operating.resume(execution_id, database_url=database_url)
    click.echo("resumed")


@main.command()
@click.argument("execution_id")
@click.option(
    "--from-step",
    required=True,
    help="A step key of its history (charge-card#1), or a position in it (0: the first entry).",
)
@click.option("--id", "new_id", default=None, help="The new execution's id (default: a UUID).")
@database_url_option
@_handle_errors
def fork(execution_id: str, from_step: str, new_id: str | None, database_url: str | None) -> None:
    """Start a new execution that runs on from a step of this one's history (copied before it)."""
    from . import operating

    point: str | int = int(from_step) if from_step.isdigit() else from_step
    handle = operating.fork(execution_id, from_step=point, id=new_id, database_url=database_url)
    click.echo(handle.id)


@main.command()
@click.argument("execution_id")
@database_url_option
@_handle_errors
def pause(execution_id: str, database_url: str | None) -> None:
    """Pause an execution: the step in flight finishes, then nothing of it runs until unpaused."""
    from . import operating

    click.echo("paused" if operating.pause(execution_id, database_url=database_url) else "already paused")


@main.command()
@click.argument("execution_id")
@database_url_option
@_handle_errors
def unpause(execution_id: str, database_url: str | None) -> None:
    """Let a paused execution run on; what came due meanwhile (a sleep's end, an event) runs at once."""
    from . import operating

    changed = operating.unpause(execution_id, database_url=database_url)
    click.echo("unpaused" if changed else "not paused; nothing to do")


# -- queues ----------------------------------------------------------------------------------------------


def _queue_table(found: list[Any]) -> Any:
    """Queues as a table: limits ('-': none), then what waits and runs in each."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("queue", "concurrency", "per key", "rate", "overridden"):
        table.add_column(column, no_wrap=True)
    for column in ("ready", "in progress", "delayed", "oldest ready"):
        table.add_column(column, no_wrap=True, justify="right")
    for info in found:
        table.add_row(
            _text(info.name),
            "-" if info.concurrency is None else str(info.concurrency),
            "-" if info.per_key is None else str(info.per_key),
            info.rate or "-",
            "yes" if info.overridden else "no",
            str(info.ready),
            str(info.in_progress),
            str(info.delayed),
            "-" if info.oldest_ready_seconds is None else _seconds(info.oldest_ready_seconds),
        )
    return table


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@database_url_option
@click.pass_context
@_handle_errors
def queues(ctx: click.Context, as_json: bool, database_url: str | None) -> None:
    """Show every queue: its limits, and its executions ready, in progress and delayed.

    `zart queues set NAME ...` changes a queue's limits at run time.
    """
    if ctx.invoked_subcommand is not None:
        return
    from .queue_admin import queue_stats
    from .views import queue_json

    found = queue_stats(database_url=database_url)
    if as_json:
        click.echo(_json([queue_json(info) for info in found]))
        return
    _print(_queue_table(found))


def _limit_value(text: str | None, option: str) -> Any:
    """`N` or `none` (no limit); UNSET when the option was not given."""
    from .queue_admin import UNSET

    if text is None:
        return UNSET
    if text.strip().lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(f"{option} must be a whole number or 'none', not {text!r}") from None


@queues.command("set")
@click.argument("name")
@click.option(
    "--concurrency", default=None, metavar="N|none", help="At most N in progress (0 holds the queue)."
)
@click.option("--per-key", default=None, metavar="N|none", help="At most N in progress per key.")
@click.option(
    "--rate", default=None, metavar="N/PERIOD|none", help="At most N begin per PERIOD, e.g. 100/1s."
)
@click.option("--reset", is_flag=True, help="Give the queue back to the limits declared in code.")
@click.option("--json", "as_json", is_flag=True, help="Print the queue as JSON.")
@database_url_option
@click.pass_context
@_handle_errors
def queues_set(
    ctx: click.Context,
    name: str,
    concurrency: str | None,
    per_key: str | None,
    rate: str | None,
    reset: bool,
    as_json: bool,
    database_url: str | None,
) -> None:
    """Change the limits of queue NAME at run time (creating it if needed); prints the queue.

    Every worker applies them from its next claim, with no restart; they win over the limits declared
    in code until --reset.
    """
    from .queue_admin import set_queue
    from .views import queue_json

    database_url = database_url or (ctx.parent.params.get("database_url") if ctx.parent else None)
    limits: dict[str, Any] = {}
    if concurrency is not None:
        limits["concurrency"] = _limit_value(concurrency, "--concurrency")
    if per_key is not None:
        limits["per_key"] = _limit_value(per_key, "--per-key")
    if rate is not None:
        limits["rate"] = None if rate.strip().lower() == "none" else rate
    if reset and limits:
        raise InvalidInput("--reset cannot be combined with --concurrency, --per-key or --rate")
    info = set_queue(name, reset=reset, database_url=database_url, **limits)
    if as_json:
        click.echo(_json(queue_json(info)))
        return
    _print(_queue_table([info]))
    if reset:
        click.echo(
            f"queue {name!r} follows the code again: the limits declared with zart.Queue apply when a "
            "worker that declares it next starts (until then, the limits above)"
        )
    elif limits:
        click.echo(
            "every worker applies these limits from its next claim; they hold, whatever the code "
            f"declares, until `zart queues set {shlex.quote(name)} --reset`"
        )


# -- schedules -------------------------------------------------------------------------------------------


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@database_url_option
@click.pass_context
@_handle_errors
def schedules(ctx: click.Context, as_json: bool, database_url: str | None) -> None:
    """Show every schedule: its cron rule and time zone, next firing, last execution, whether paused.

    `zart schedules pause NAME` and `zart schedules resume NAME` stop and restart its firings.
    """
    if ctx.invoked_subcommand is not None:
        return
    from rich import box
    from rich.table import Table

    from .scheduler import list_schedules
    from .views import schedule_json

    found = list_schedules(database_url=database_url)
    if as_json:
        click.echo(_json([schedule_json(info) for info in found]))
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("schedule", "cron", "timezone", "catch up", "next firing", "last execution", "paused"):
        table.add_column(column, no_wrap=True)
    for info in found:
        table.add_row(
            _text(info.name),
            _text(info.cron),
            info.timezone,
            info.catch_up,
            _timestamp(info.next_fire_at),
            _text(info.last_execution or "-"),
            "yes" if info.paused else "no",
        )
    _print(table)


def _schedule_pausing(paused: bool) -> Callable[..., None]:
    def change(ctx: click.Context, name: str, database_url: str | None) -> None:
        from .scheduler import set_paused

        database_url = database_url or (ctx.parent.params.get("database_url") if ctx.parent else None)
        set_paused(name, paused, database_url=database_url)
        click.echo(f"schedule {name!r} {'paused' if paused else 'resumed'}")

    return change


@schedules.command("pause")
@click.argument("name")
@database_url_option
@click.pass_context
@_handle_errors
def schedules_pause(ctx: click.Context, name: str, database_url: str | None) -> None:
    """Pause schedule NAME: no firing starts until it is resumed (its executions run on)."""
    _schedule_pausing(True)(ctx, name, database_url)


@schedules.command("resume")
@click.argument("name")
@database_url_option
@click.pass_context
@_handle_errors
def schedules_resume(ctx: click.Context, name: str, database_url: str | None) -> None:
    """Resume schedule NAME; its next firing is the first one after now (the paused ones are skipped)."""
    _schedule_pausing(False)(ctx, name, database_url)


@main.command()
@click.option(
    "--older-than",
    required=True,
    metavar="DURATION",
    help="Remove executions that finished longer ago than this (e.g. 30d, 12h).",
)
@click.option(
    "--batch-size",
    default=1000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Executions removed per transaction.",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be removed.")
@database_url_option
@_handle_errors
def prune(older_than: str, batch_size: int, dry_run: bool, database_url: str | None) -> None:
    """Delete finished executions (completed, failed, timed_out, cancelled) older than --older-than,
    with their steps, attempts and events, in batches."""
    from . import db
    from .durations import parse_duration
    from .prune import prune as prune_executions

    seconds = parse_duration(older_than, "--older-than")
    url = db.resolve_url(database_url)
    result = prune_executions(url, seconds, batch_size=batch_size, dry_run=dry_run)
    cutoff = _timestamp(result.cutoff)
    if dry_run:
        click.echo(f"would remove {result.executions} execution(s) finished before {cutoff}")
        return
    click.echo(
        f"removed {result.executions} execution(s) finished before {cutoff} in {result.batches} batch(es): "
        f"{result.steps} step(s), {result.attempts} attempt(s), {result.events} event(s), "
        f"{result.tasks} task(s)"
    )


# -- replay-check --------------------------------------------------------------------------------------


def _verdict_json(verdict: Verdict) -> dict[str, Any]:
    return {
        "execution": verdict.execution_id,
        "workflow": verdict.workflow,
        "status": verdict.status,
        "verdict": verdict.verdict,
        "position": verdict.position,
        "recorded": verdict.recorded_key,
        "code": verdict.code_key,
        "message": verdict.message,
    }


def _verdict_line(verdict: Verdict) -> str:
    """One execution that would not replay: `diverged  ID (WORKFLOW, STATUS) at #N: ...`."""
    where = f"{verdict.execution_id} ({verdict.workflow}, {verdict.status})"
    if verdict.verdict == "diverged":
        recorded = "nothing" if verdict.recorded_key is None else repr(verdict.recorded_key)
        code = verdict.code_key
        reached = "the code ends before it" if code is None else f"the code reaches {code!r}"
        return f"diverged  {where} at #{(verdict.position or 0) + 1}: the history has {recorded}, {reached}"
    return f"{verdict.verdict:<9} {where}: {_short(verdict.message or '', 200)}"


def _check_summary(summary: Summary, since: str) -> str:
    counts = summary.counts
    parts = [f"{counts['consistent']} consistent"]
    problems = (("diverged", "would diverge"), ("error", "would fail"), ("missing", "without code"))
    for verdict, words in problems:
        if counts[verdict]:
            parts.append(f"{counts[verdict]} {words}")
    return (
        f"checked {summary.checked} execution(s) ({summary.in_flight} in flight, {summary.finished} "
        f"finished in the last {since}): {', '.join(parts)}"
    )


@main.command("replay-check")
@app_option
@click.option("--workflow", default=None, metavar="NAME", help="Only executions of this workflow.")
@click.option(
    "--since",
    default="7d",
    show_default=True,
    metavar="DURATION",
    help="Also check the executions that finished this recently.",
)
@click.option(
    "--limit",
    default=None,
    type=click.IntRange(min=1),
    metavar="N",
    help="Check at most N executions, those in flight first (default: all).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per execution, then a summary.")
@database_url_option
@_errors_exit(EXIT_UNCHECKED)
def replay_check(
    apps: tuple[str, ...],
    workflow: str | None,
    since: str,
    limit: int | None,
    as_json: bool,
    database_url: str | None,
) -> None:
    """Replay the recorded histories against the code of the --app modules, running nothing.

    Lists every execution that would diverge (the first differing key), fail, or has no code, and
    exits 1 if there is any, 0 if every execution replays: a deploy gate. 2: the check could not run.
    """
    from . import db
    from .durations import parse_duration
    from .replay_check import Summary
    from .replay_check import replay_check as check

    if not apps:
        raise InvalidInput("replay-check needs --app MODULE: the code to replay the histories with")
    seconds = parse_duration(since, "--since")
    import_apps(apps)
    url = db.resolve_url(database_url)  # not migrated: a check writes nothing, not even a migration
    summary = Summary()
    for verdict in check(url, workflow=workflow, since=seconds, limit=limit):
        summary.add(verdict)
        if as_json:
            click.echo(_json(_verdict_json(verdict)))
        elif not verdict.ok:
            click.echo(_verdict_line(verdict))
    if as_json:
        totals = {"checked": summary.checked, "in_flight": summary.in_flight, "finished": summary.finished}
        totals.update(summary.counts)
        click.echo(_json({"summary": {**totals, "seconds": round(summary.seconds, 3)}}))
    else:
        click.echo(_check_summary(summary, since))
    sys.exit(0 if summary.ok else 1)


@main.command()
@click.option("--runs", default=300, show_default=True, type=click.IntRange(min=1), help="Executions to run.")
@click.option("--procs", default=2, show_default=True, type=click.IntRange(min=1), help="Worker processes.")
@click.option(
    "--concurrency",
    default=200,
    show_default=True,
    type=click.IntRange(min=1),
    help="Executions in flight per worker process.",
)
@database_url_option
@_handle_errors
def demo(runs: int, procs: int, concurrency: int, database_url: str | None) -> None:
    """Run the order-fulfillment workflow many times on a supervisor and print a summary."""
    from .demo import run_demo

    run_demo(runs=runs, procs=procs, concurrency=concurrency, database_url=database_url)


@main.command()
@database_url_option
@app_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one)."
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Server processes.")
@click.option(
    "--max-body-size",
    default="1MiB",
    show_default=True,
    help="Largest request body, in bytes or with a unit (64KiB, 2MiB); larger ones get 413.",
)
@click.option(
    "--lock-timeout",
    default="2s",
    show_default=True,
    help="Longest a request waits on a row locked by a worker; then 503 (code timeout).",
)
@click.option(
    "--statement-timeout",
    default="5s",
    show_default=True,
    help="Longest one statement of a request may run; then 503 (code timeout).",
)
@click.option(
    "--client-timeout",
    default="15s",
    show_default=True,
    help="Longest a client may take to send a request's headers, or its body; also the idle keep-alive.",
)
@_handle_errors
def serve(
    database_url: str | None,
    apps: tuple[str, ...],
    host: str,
    port: int,
    workers: int,
    max_body_size: str,
    lock_timeout: str,
    statement_timeout: str,
    client_timeout: str,
) -> None:
    """Serve the HTTP API (with $ZART_API_TOKEN set, every call but /healthz needs that bearer token)."""
    from .http import serve as serve_http

    import_apps(apps)
    logging.getLogger("zart").setLevel(min(logging.getLogger().level, logging.INFO))
    sys.exit(
        serve_http(
            database_url=database_url,
            apps=apps,
            host=host,
            port=port,
            workers=workers,
            max_body_size=max_body_size,
            lock_timeout=lock_timeout,
            statement_timeout=statement_timeout,
            client_timeout=client_timeout,
        )
    )


if __name__ == "__main__":
    main()
