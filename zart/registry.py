"""`@zart.workflow` and `@zart.step`: what they register and what calling them does.

A step called inside a running workflow returns a `StepCall` (an awaitable that checkpoints); called
anywhere else it is the plain function, so steps stay unit-testable without a database.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import attrs

from . import cron, pools, queues, replay, transactional
from .db import resolve_url
from .durations import parse_duration
from .retry import Retry

_workflows: dict[str, Workflow] = {}
_steps: dict[str, Step] = {}


def _origin(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a {kind} needs a non-empty name, e.g. @zart.{kind}('send-email')")
    if any(ch in name for ch in "#[]") or len(name) > 200:
        raise ValueError(
            f"invalid {kind} name {name!r}: at most 200 characters, without '#', '[' or ']' "
            "(they delimit checkpoint keys)"
        )
    return name


@attrs.frozen
class Workflow:
    """A registered workflow. Calling it directly runs the body as a plain coroutine."""

    name: str
    fn: Callable[..., Any]
    timeout: float | None = None
    takes_input: bool = True
    queue: str | None = None  # None: the 'default' queue
    # `schedule=`: started at every firing with the firing time as its input (zart.scheduler)
    schedule: cron.Cron | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


@attrs.frozen
class Step:
    """A registered step; see the module docstring for what a call does."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    timeout: float | None = None
    retry: Retry = attrs.field(factory=Retry)
    # A transactional step's isolation level (`@zart.transaction`: zart.transactional); None: plain.
    isolation: str | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        execution = replay.current_execution()
        if execution is None:
            if self.isolation is not None:  # its own transaction, on the database of ZART_DATABASE_URL
                url = resolve_url(None)

                def begin(isolation: str) -> Any:
                    return pools.transaction(url, transactional.ISOLATION_LEVELS[isolation])

                return transactional.run_alone(begin, self.isolation, self.fn, args, kwargs)
            return self.fn(*args, **kwargs)
        return execution.call_step(self, args, kwargs)


def workflow(
    name: str,
    *,
    timeout: Any = None,
    queue: Any = None,
    schedule: Any = None,
    timezone: Any = "UTC",
    catch_up: Any = "latest",
) -> Callable[[Callable[..., Any]], Workflow]:
    """Register an `async def` as a durable workflow taking one JSON value (or nothing).

    `queue` (a `zart.Queue` or a queue's name) is where its executions wait for their turn; a start
    may name another. `schedule` (a cron expression, read in `timezone`) starts it at every firing,
    once, with the firing time (ISO-8601, UTC) as its input; `catch_up` says which firings missed
    while no worker ran are started ('latest', 'all' or 'none').
    """
    _check_name("workflow", name)
    rule = None if schedule is None else cron.check(schedule, timezone, catch_up, f"workflow {name!r}")
    seconds = None if timeout is None else parse_duration(timeout, f"timeout of workflow {name!r}")
    try:
        queue_name = queues.resolve(queue)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"workflow {name!r}: {exc}") from None

    def decorate(fn: Callable[..., Any]) -> Workflow:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"workflow {name!r} must be an 'async def' function, got {fn!r}")
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        required = [p for p in params if p.default is p.empty]
        if len(required) > 1:
            raise TypeError(
                f"workflow {name!r} must take one argument (its input) or none, "
                f"got {len(required)} required ones"
            )
        if rule is not None and not params:
            raise TypeError(
                f"workflow {name!r} has a schedule= but takes no input: a scheduled workflow takes one "
                "argument, its firing time (an ISO-8601 UTC string)"
            )
        existing = _workflows.get(name)
        if existing is not None and _origin(existing.fn) != _origin(fn):
            raise ValueError(f"workflow name {name!r} is already registered by {_origin(existing.fn)}")
        registered = Workflow(name, fn, seconds, takes_input=bool(params), queue=queue_name, schedule=rule)
        _workflows[name] = registered
        return registered

    return decorate


def step(name: str, *, timeout: Any = None, retry: Any = None) -> Callable[[Callable[..., Any]], Step]:
    """Register an `async def` or plain `def` as a checkpointed step.

    `retry` is a policy (see `zart.Retry`); `timeout` bounds each attempt. Both are validated here, at
    decoration time, so a typo fails when the module is imported.
    """
    _check_name("step", name)
    seconds = None if timeout is None else parse_duration(timeout, f"timeout of step {name!r}")
    try:
        policy = Retry.parse(retry)
    except ValueError as exc:
        raise ValueError(f"step {name!r}: {exc}") from None

    def decorate(fn: Callable[..., Any]) -> Step:
        if not callable(fn):
            raise TypeError(f"step {name!r} must decorate a function, got {fn!r}")
        return _register_step(Step(name, fn, inspect.iscoroutinefunction(fn), seconds, policy))

    return decorate


def transaction(
    name: str, *, timeout: Any = None, retry: Any = None, isolation: Any = "read committed"
) -> Callable[[Callable[..., Any]], Step]:
    """Register a plain `def` as a transactional step: called with a psycopg connection (first
    argument, which callers do not pass) inside a transaction on Zart's database, in which its
    checkpoint is committed too. Its writes on that connection happen exactly once.

    `isolation` is 'read committed' (the default), 'repeatable read' or 'serializable'; a
    serialization failure or a deadlock runs the transaction again and is not an attempt of `retry`.
    """
    _check_name("step", name)
    seconds = None if timeout is None else parse_duration(timeout, f"timeout of step {name!r}")
    level = transactional.check_isolation(isolation, f"transactional step {name!r}")
    try:
        policy = Retry.parse(retry)
    except ValueError as exc:
        raise ValueError(f"step {name!r}: {exc}") from None

    def decorate(fn: Callable[..., Any]) -> Step:
        if inspect.iscoroutinefunction(fn) or not callable(fn):
            raise TypeError(
                f"transactional step {name!r} must decorate a plain 'def' (its body runs in a thread, "
                f"on a psycopg connection), got {fn!r}"
            )
        positional = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        if not positional:
            raise TypeError(
                f"transactional step {name!r} must take the connection as its first parameter, "
                "e.g. def debit(conn, account, amount)"
            )
        return _register_step(Step(name, fn, False, seconds, policy, level))

    return decorate


def _register_step(registered: Step) -> Step:
    existing = _steps.get(registered.name)
    if existing is not None and _origin(existing.fn) != _origin(registered.fn):
        raise ValueError(f"step name {registered.name!r} is already registered by {_origin(existing.fn)}")
    _steps[registered.name] = registered
    return registered


def get_workflow(name: str) -> Workflow | None:
    return _workflows.get(name)


def get_step(name: str) -> Step | None:
    return _steps.get(name)


def workflow_names() -> list[str]:
    return sorted(_workflows)


def workflows() -> list[Workflow]:
    return [_workflows[name] for name in sorted(_workflows)]
