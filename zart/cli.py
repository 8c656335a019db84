"""The `zart` command line.

Every command takes --database-url (default: $ZART_DATABASE_URL, else the embedded server). Errors
are one line on stderr and a non-zero exit: 1 for an error of the request or the system, 2 for a
usage error (click's convention).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click
import orjson

from . import client, db, schema
from .errors import ZartError


class InvalidInput(ZartError):
    """A command-line value that cannot be used."""


EXIT_ERROR = 1


def _fail(message: str) -> None:
    click.echo(f"zart: error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def import_apps(modules: tuple[str, ...]) -> None:
    """Import the modules that define workflows (their decorators register them)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            _fail(f"cannot import app module {module!r}: {type(exc).__name__}: {exc}")


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ZartError as exc:
            _fail(str(exc))
        except (ValueError, TypeError) as exc:
            _fail(str(exc))

    return wrapper


database_url_option = click.option(
    "--database-url",
    envvar=db.ENV_URL,
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


@click.group()
@click.option("--log-level", default="WARNING", show_default=True, help="Logging level.")
@click.version_option(package_name="zart")
def main(log_level: str) -> None:
    """Zart: durable workflows on PostgreSQL."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")


@main.command()
@database_url_option
@_handle_errors
def migrate(database_url: str | None) -> None:
    """Create or upgrade Zart's tables (idempotent)."""
    url = db.resolve_url(database_url)
    applied = schema.migrate(url)
    if applied:
        for migration in applied:
            click.echo(f"applied {migration.version:04d}_{migration.name}")
    else:
        click.echo("schema is up to date")


@main.command()
@database_url_option
@app_option
@click.option("--concurrency", default=100, show_default=True, help="Executions in flight.")
@click.option("--batch", default=50, show_default=True, help="Tasks claimed per query.")
@click.option("--lease", default="30s", show_default=True, help="Lease on a claimed task.")
@click.option("--poll-interval", default="5s", show_default=True, help="Fallback poll period.")
@_handle_errors
def worker(
    database_url: str | None,
    apps: tuple[str, ...],
    concurrency: int,
    batch: int,
    lease: str,
    poll_interval: str,
) -> None:
    """Run one worker process in the foreground (SIGINT/SIGTERM stop it)."""
    from .worker import Worker

    import_apps(apps)
    logging.getLogger("zart").setLevel(min(logging.getLogger().level, logging.INFO))
    Worker(database_url, concurrency=concurrency, batch=batch, lease=lease, poll_interval=poll_interval).run()


@main.command()
@database_url_option
@app_option
@click.option(
    "--procs", default=os.cpu_count() or 1, show_default="the number of CPUs", help="Worker processes."
)
@click.option("--concurrency", default=100, show_default=True, help="Executions in flight per process.")
@click.option("--batch", default=50, show_default=True, help="Tasks claimed per query.")
@click.option(
    "--grace", default="30s", show_default=True, help="How long SIGTERM lets in-flight work finish."
)
@click.option("--lease", default="30s", show_default=True, help="Lease on a claimed task.")
@click.option("--poll-interval", default="5s", show_default=True, help="Fallback poll period.")
@click.option("--no-listen", is_flag=True, help="Do not LISTEN for notifications; poll only.")
@_handle_errors
def supervise(
    database_url: str | None,
    apps: tuple[str, ...],
    procs: int,
    concurrency: int,
    batch: int,
    grace: str,
    lease: str,
    poll_interval: str,
    no_listen: bool,
) -> None:
    """Fork PROCS worker processes and keep them running (SIGTERM/SIGINT drain them)."""
    from .durations import parse_duration
    from .supervisor import Supervisor

    import_apps(apps)
    logging.getLogger("zart").setLevel(min(logging.getLogger().level, logging.INFO))
    url = db.resolve_url(database_url)
    schema.migrate(url)
    supervisor = Supervisor(
        url,
        procs,
        parse_duration(grace, "--grace"),
        {
            "concurrency": concurrency,
            "batch": batch,
            "lease": lease,
            "poll_interval": poll_interval,
            "listen": not no_listen,
        },
    )
    sys.exit(supervisor.run())


@main.command()
@click.argument("workflow")
@click.option("--input", "input_json", default=None, metavar="JSON", help="The workflow's input.")
@click.option("--id", "execution_id", default=None, help="Execution id (default: a new UUID).")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout", default=None, type=float, help="With --wait: give up after seconds.")
@database_url_option
@app_option
@_handle_errors
def start(
    workflow: str,
    input_json: str | None,
    execution_id: str | None,
    wait: bool,
    timeout: float | None,
    database_url: str | None,
    apps: tuple[str, ...],
) -> None:
    """Start an execution of WORKFLOW; prints its id (or, with --wait, its result)."""
    value = _parse_json(input_json, "--input")
    import_apps(apps)
    handle = client.start(workflow, value, id=execution_id, database_url=database_url)
    if not wait:
        click.echo(handle.id)
        return
    click.echo(_json(handle.result(timeout=timeout)))


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
    info = client.get(execution_id, database_url=database_url).info()
    if as_json:
        click.echo(
            _json(
                {
                    "id": info.id,
                    "workflow": info.workflow,
                    "status": info.status,
                    "result": info.result,
                    "error": info.error,
                    "created_at": info.created_at,
                    "started_at": info.started_at,
                    "finished_at": info.finished_at,
                }
            )
        )
        return
    click.echo(info.status)
    if info.status == "completed":
        click.echo(f"result: {_json(info.result)}")
    elif info.error:
        click.echo(f"error: {info.error.get('type')}: {info.error.get('message')}")


@main.command()
@click.option("--runs", default=300, show_default=True, help="Executions to run.")
@click.option("--concurrency", default=200, show_default=True, help="Executions in flight.")
@database_url_option
@_handle_errors
def demo(runs: int, concurrency: int, database_url: str | None) -> None:
    """Run the order demo many times on the (embedded) database and print a summary."""
    from .demo import run_demo

    run_demo(runs=runs, concurrency=concurrency, database_url=database_url)


if __name__ == "__main__":
    main()
