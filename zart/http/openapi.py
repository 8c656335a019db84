"""The OpenAPI 3.1 document of the HTTP API, served at /openapi.json and checked by the tests.

Built from the same limits the validation enforces (`validation.py`), so the two cannot drift.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..client import STATUSES
from ..views import SHOWN_CHILDREN
from .validation import (
    DEFAULT_LIST_LIMIT,
    MAX_BATCH,
    MAX_ID_LENGTH,
    MAX_KEY_LENGTH,
    MAX_LIST_LIMIT,
    MAX_PRIORITY,
    MAX_QUEUE_NAME_LENGTH,
    MAX_WORKFLOW_NAME_LENGTH,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _json_body(schema_: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema_}}}


_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_ANY: dict[str, Any] = {"description": "any JSON value"}
_WORKFLOW = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_WORKFLOW_NAME_LENGTH,
    "description": "a workflow that --app imported or a worker registered",
}
# The options of a start, single or batch (zart.start's keyword arguments).
_START_OPTIONS: dict[str, Any] = {
    "queue": {
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": MAX_QUEUE_NAME_LENGTH,
        "description": "the queue to wait in (default: the workflow's, else 'default'); it must exist",
    },
    "key": {
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "description": "the key of the queue's per-key limit (a tenant, a customer)",
    },
    "priority": {
        "type": ["integer", "null"],
        "minimum": -MAX_PRIORITY,
        "maximum": MAX_PRIORITY,
        "description": "among the queue's ready executions the lower number begins first (default 0)",
    },
    "delay": {
        "oneOf": [
            {"type": "string", "examples": ["10s", "250ms", "5m", "1.5h", "1d"]},
            {"type": "number", "exclusiveMinimum": 0},
            {"type": "null"},
        ],
        "description": "do not begin before this long from now: a duration or a number of seconds",
    },
    "run_at": {
        "type": ["string", "null"],
        "format": "date-time",
        "description": "do not begin before then: ISO 8601 with a UTC offset (not with delay)",
    },
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of this API (served at /openapi.json)."""
    errors = {
        "400": _error(
            "malformed request: invalid JSON (a lone surrogate too), a body not sent as application/json"
        ),
        "401": _error("missing or wrong bearer token (when ZART_API_TOKEN is set)"),
        "408": _error("the body did not arrive within the server's --client-timeout (code body_timeout)"),
        "413": _error("the body is larger than the server's --max-body-size"),
        "422": _error(
            "well-formed JSON with missing or wrong fields, invalid ids or names, or a value Zart would "
            "not store as sent: a NUL character, an integer beyond 64 bits, a number beyond a double; "
            f"an unknown workflow (unknown_workflow) or queue (unknown_queue); more than {MAX_BATCH} "
            "inputs in a batch"
        ),
        "503": _error(
            "try again later (see Retry-After): PostgreSQL does not answer (database_unavailable), "
            "a locked row or a statement took too long (timeout), the server is at capacity (busy)"
        ),
    }
    not_found = _error("no execution with this id")
    id_param = {
        "name": "id",
        "in": "path",
        "required": True,
        "description": "the execution id, percent-encoded (`/` as `%2F`)",
        "schema": _NAME,
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Zart HTTP API",
            "version": __version__,
            "description": (
                "Start, inspect, signal and cancel durable executions; see the queues and schedules. "
                'Errors are `{"error": {"code", "message"}}`.'
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/v1/executions": {
                "post": {
                    "operationId": "startExecution",
                    "summary": "Start an execution (idempotent on its id)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("StartRequest")}},
                    },
                    "responses": {
                        "201": _json_body(_ref("Started"), "started now"),
                        "200": _json_body(
                            _ref("Started"), "the id existed for this workflow: that execution, not a new one"
                        ),
                        "409": _error("the id exists for another workflow (code duplicate_execution)"),
                        **errors,
                    },
                },
                "get": {
                    "operationId": "listExecutions",
                    "summary": "The newest executions, optionally of one status and/or workflow",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": [*STATUSES, ""]},
                        },
                        {
                            "name": "workflow",
                            "in": "query",
                            "schema": {"type": "string", "maxLength": MAX_WORKFLOW_NAME_LENGTH},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_LIST_LIMIT,
                                "default": DEFAULT_LIST_LIMIT,
                            },
                        },
                    ],
                    "responses": {"200": _json_body(_ref("ExecutionList"), "newest first"), **errors},
                },
            },
            "/v1/executions:batch": {
                "post": {
                    "operationId": "startExecutions",
                    "summary": f"Start up to {MAX_BATCH} executions of one workflow in one transaction",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("BatchStartRequest")}},
                    },
                    "responses": {
                        "201": _json_body(_ref("BatchStarted"), "at least one execution was created"),
                        "200": _json_body(
                            _ref("BatchStarted"), "every id existed (or no input): nothing was created"
                        ),
                        "409": _error("an id exists for another workflow (code duplicate_execution)"),
                        **errors,
                    },
                }
            },
            "/v1/queues": {
                "get": {
                    "operationId": "listQueues",
                    "summary": "Every queue: its limits, and its executions ready, in progress and delayed",
                    "responses": {"200": _json_body(_ref("QueueList"), "by name"), **errors},
                }
            },
            "/v1/schedules": {
                "get": {
                    "operationId": "listSchedules",
                    "summary": "Every schedule: its cron rule, next firing, last execution, whether paused",
                    "responses": {"200": _json_body(_ref("ScheduleList"), "by name"), **errors},
                }
            },
            "/v1/executions/{id}": {
                "get": {
                    "operationId": "getExecution",
                    "summary": "An execution: status, input, result or error, and its steps",
                    "parameters": [id_param],
                    "responses": {
                        "200": _json_body(_ref("Execution"), "the execution"),
                        "404": not_found,
                        **errors,
                    },
                }
            },
            "/v1/executions/{id}/events/{name}": {
                "post": {
                    "operationId": "sendEvent",
                    "summary": "Deliver an event (kept until a wait of the workflow takes it)",
                    "parameters": [
                        id_param,
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "description": "the event name, percent-encoded",
                            "schema": _NAME,
                        },
                    ],
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref("EventRequest")}},
                    },
                    "responses": {
                        "202": _json_body(_ref("EventDelivery"), "stored (or its key was delivered before)"),
                        "404": not_found,
                        "409": _error("the execution already ended (code execution_finished)"),
                        **errors,
                    },
                }
            },
            "/v1/executions/{id}/streams/{name}": {
                "get": {
                    "operationId": "streamValues",
                    "summary": "Follow a stream of the execution (zart.emit) as Server-Sent Events",
                    "description": (
                        "Every value of the stream after `Last-Event-ID` (all of them without it), then "
                        "each value as it is committed. One event per value: `id` is its sequence number "
                        "(1, 2, ...), `data` the value as JSON. Once the execution has ended and its last "
                        "value is sent, an `end` event (data `{}`) closes the stream. An idle stream "
                        "sends a comment every 15 seconds."
                    ),
                    "parameters": [
                        id_param,
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "description": "the stream name, percent-encoded",
                            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                        },
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "description": "resume after this sequence number (EventSource sends it)",
                            "schema": {"type": "string", "pattern": "^[0-9]*$"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "the stream's values as text/event-stream, until the end",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "404": not_found,
                        **errors,
                    },
                }
            },
            "/v1/executions/{id}/cancel": {
                "post": {
                    "operationId": "cancelExecution",
                    "summary": "Cancel an execution (nothing of it runs any more)",
                    "parameters": [id_param],
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref("CancelRequest")}},
                    },
                    "responses": {
                        "202": _json_body(_ref("Cancellation"), "cancelled now, or it had already ended"),
                        "404": not_found,
                        **errors,
                    },
                }
            },
            "/v1/executions/{id}/resume": {
                "post": {
                    "operationId": "resumeExecution",
                    "summary": "Resume a failed, timed-out or cancelled execution at its first "
                    "unfinished step",
                    "parameters": [id_param],
                    "responses": {
                        "202": _json_body(_ref("StatusChange"), "resumed: pending again"),
                        "404": not_found,
                        "409": _error("not failed, timed out or cancelled (code execution_not_resumable)"),
                        **errors,
                    },
                }
            },
            "/v1/executions/{id}/fork": {
                "post": {
                    "operationId": "forkExecution",
                    "summary": "Start a new execution that runs on from a step of this one's history",
                    "parameters": [id_param],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ForkRequest")}},
                    },
                    "responses": {
                        "201": _json_body(_ref("Fork"), "the new execution, started"),
                        "404": _error("no such execution (execution_not_found) or step (step_not_found)"),
                        "409": _error("the new id is taken (code duplicate_execution)"),
                        **errors,
                    },
                }
            },
            "/v1/executions/{id}/pause": {
                "post": {
                    "operationId": "pauseExecution",
                    "summary": "Pause: the step in flight finishes, then nothing runs until unpaused",
                    "parameters": [id_param],
                    "responses": {
                        "202": _json_body(_ref("StatusChange"), "paused now, or it already was"),
                        "404": not_found,
                        "409": _error("the execution already ended (code execution_finished)"),
                        **errors,
                    },
                }
            },
            "/v1/executions/{id}/unpause": {
                "post": {
                    "operationId": "unpauseExecution",
                    "summary": "Let a paused execution run on (what came due meanwhile runs at once)",
                    "parameters": [id_param],
                    "responses": {
                        "202": _json_body(_ref("StatusChange"), "unpaused now, or it was not paused"),
                        "404": not_found,
                        "409": _error("the execution already ended (code execution_finished)"),
                        **errors,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "Health: the server answers and reaches PostgreSQL (no token needed)",
                    "security": [],
                    "responses": {
                        "200": _json_body(
                            {
                                "type": "object",
                                "properties": {"status": {"const": "ok"}},
                                "required": ["status"],
                            },
                            "healthy",
                        ),
                        "503": errors["503"],
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics of the database: executions, backlog, queues, workers",
                    "responses": {
                        "200": {
                            "description": "the Prometheus text format (see the metric names in the docs)",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "400": errors["400"],
                        "401": errors["401"],
                        "503": errors["503"],
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {"description": "the OpenAPI document", "content": {"application/json": {}}},
                        "401": errors["401"],
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "additionalProperties": False,
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "additionalProperties": False,
                            "properties": {
                                "code": {
                                    "type": "string",
                                    "examples": [
                                        "invalid_json",
                                        "unsupported_content_type",
                                        "unauthorized",
                                        "not_found",
                                        "execution_not_found",
                                        "duplicate_execution",
                                        "execution_finished",
                                        "body_too_large",
                                        "invalid_request",
                                        "unknown_workflow",
                                        "unknown_queue",
                                        "database_unavailable",
                                    ],
                                },
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
                "StartRequest": {
                    "type": "object",
                    "required": ["workflow"],
                    "additionalProperties": False,
                    "properties": {
                        "workflow": _WORKFLOW,
                        "input": {**_ANY, "description": "the workflow's input (default null)"},
                        "id": {
                            "type": ["string", "null"],
                            "minLength": 1,
                            "maxLength": MAX_ID_LENGTH,
                            "description": "execution id, no control characters (default: a new UUID)",
                        },
                        **_START_OPTIONS,
                    },
                },
                "BatchStartRequest": {
                    "type": "object",
                    "required": ["workflow", "inputs"],
                    "additionalProperties": False,
                    "properties": {
                        "workflow": _WORKFLOW,
                        "inputs": {
                            "type": "array",
                            "maxItems": MAX_BATCH,
                            "items": _ANY,
                            "description": "one input per execution",
                        },
                        "ids": {
                            "type": ["array", "null"],
                            "maxItems": MAX_BATCH,
                            "uniqueItems": True,
                            "items": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
                            "description": "one id per input (default: new UUIDs); an id that exists "
                            "is returned as it is, not started again",
                        },
                        **_START_OPTIONS,
                    },
                },
                "BatchStarted": {
                    "type": "object",
                    "required": ["executions"],
                    "additionalProperties": False,
                    "properties": {
                        "executions": {
                            "type": "array",
                            "description": "one per input, in order",
                            "items": {
                                "type": "object",
                                "required": ["id", "created"],
                                "additionalProperties": False,
                                "properties": {
                                    "id": {"type": "string"},
                                    "created": {
                                        "type": "boolean",
                                        "description": "false when the id existed",
                                    },
                                },
                            },
                        }
                    },
                },
                "Queue": {
                    "type": "object",
                    "required": [
                        "name",
                        "concurrency",
                        "per_key",
                        "rate",
                        "overridden",
                        "ready",
                        "in_progress",
                        "delayed",
                        "oldest_ready_seconds",
                    ],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "concurrency": {
                            "type": ["integer", "null"],
                            "description": "at most this many in progress at once (0: held); null: no limit",
                        },
                        "per_key": {
                            "type": ["integer", "null"],
                            "description": "at most this many in progress per key; null: no limit",
                        },
                        "rate": {
                            "type": ["string", "null"],
                            "description": "at most N begin per PERIOD, as 'N/PERIODs' (e.g. '100/1s')",
                        },
                        "overridden": {
                            "type": "boolean",
                            "description": "the limits were set at run time (`zart queues set`) and win over "
                            "the ones declared in code",
                        },
                        "ready": {"type": "integer", "description": "due to begin, waiting for room"},
                        "in_progress": {"type": "integer", "description": "begun and not ended"},
                        "delayed": {"type": "integer", "description": "waiting for their delay or run_at"},
                        "oldest_ready_seconds": {
                            "type": ["number", "null"],
                            "description": "how long the oldest ready execution has been due",
                        },
                    },
                },
                "Schedule": {
                    "type": "object",
                    "required": [
                        "name",
                        "cron",
                        "timezone",
                        "catch_up",
                        "workflow",
                        "next_fire_at",
                        "last_execution",
                        "last_fired_at",
                        "paused",
                    ],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "cron": {"type": "string", "description": "5 fields, or 6 with seconds last"},
                        "timezone": {"type": "string", "description": "the IANA zone the rule is read in"},
                        "catch_up": {"type": "string", "enum": ["latest", "all", "none"]},
                        "workflow": {"type": "string"},
                        "next_fire_at": {
                            "type": "string",
                            "format": "date-time",
                            "description": "the next firing not yet started",
                        },
                        "last_execution": {
                            "type": ["string", "null"],
                            "description": "the id (NAME@TIME) of the last firing's execution",
                        },
                        "last_fired_at": {"type": ["string", "null"], "format": "date-time"},
                        "paused": {"type": "boolean"},
                    },
                },
                "ScheduleList": {
                    "type": "object",
                    "required": ["schedules"],
                    "additionalProperties": False,
                    "properties": {"schedules": {"type": "array", "items": _ref("Schedule")}},
                },
                "QueueList": {
                    "type": "object",
                    "required": ["queues"],
                    "additionalProperties": False,
                    "properties": {"queues": {"type": "array", "items": _ref("Queue")}},
                },
                "Started": {
                    "type": "object",
                    "required": ["id", "workflow", "status", "created"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "workflow": {"type": "string"},
                        "status": _ref("Status"),
                        "created": {"type": "boolean", "description": "false when the id existed"},
                    },
                },
                "Status": {"type": "string", "enum": list(STATUSES)},
                "Execution": {
                    "type": "object",
                    "required": [
                        "id",
                        "workflow",
                        "status",
                        "queue",
                        "key",
                        "priority",
                        "input",
                        "result",
                        "error",
                        "created_at",
                        "started_at",
                        "finished_at",
                        "forked_from",
                        "forked_at",
                        "forks",
                        "resumes",
                        "parent",
                        "children",
                        "children_count",
                        "steps",
                    ],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "workflow": {"type": "string"},
                        "status": _ref("Status"),
                        "queue": {"type": "string", "description": "where it waits for its turn"},
                        "key": {
                            "type": ["string", "null"],
                            "description": "its key for the queue's per-key limit",
                        },
                        "priority": {"type": "integer", "description": "lower begins first"},
                        "input": _ANY,
                        "result": {**_ANY, "description": "the result once completed, else null"},
                        "error": {
                            "oneOf": [{"type": "null"}, _ref("StoredError")],
                            "description": "the error of a failed or timed-out execution",
                        },
                        "created_at": {"type": "string", "format": "date-time"},
                        "started_at": _TIME,
                        "finished_at": _TIME,
                        "forked_from": {
                            "type": ["string", "null"],
                            "description": "the execution this one was forked from (zart.fork)",
                        },
                        "forked_at": {
                            "type": ["string", "null"],
                            "description": "the step of that execution it ran on from",
                        },
                        "forks": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "the executions forked from this one, oldest first",
                        },
                        "resumes": {"type": "integer", "description": "times it was resumed after it ended"},
                        "parent": {
                            "oneOf": [
                                {"type": "null"},
                                {
                                    "type": "object",
                                    "required": ["id", "key"],
                                    "properties": {"id": {"type": "string"}, "key": {"type": "string"}},
                                },
                            ],
                            "description": "a child execution's parent (zart.child), and its entry there",
                        },
                        "children": {
                            "type": "array",
                            "items": _ref("Child"),
                            "description": f"its child executions, in the order it made them (the first "
                            f"{SHOWN_CHILDREN})",
                        },
                        "children_count": {"type": "integer", "description": "how many children it has"},
                        "steps": {"type": "array", "items": _ref("Step")},
                    },
                },
                "Child": {
                    "type": "object",
                    "required": ["id", "workflow", "status", "key"],
                    "properties": {
                        "id": {"type": "string"},
                        "workflow": {"type": "string"},
                        "status": _ref("Status"),
                        "key": {"type": "string", "description": "its entry in the parent's history"},
                    },
                },
                "StoredError": {
                    "type": "object",
                    "description": "type, message and traceback of the exception",
                    "properties": {
                        "type": {"type": "string"},
                        "message": {"type": "string"},
                        "traceback": {"type": "string"},
                    },
                },
                "Step": {
                    "type": "object",
                    "required": [
                        "key",
                        "position",
                        "kind",
                        "status",
                        "result",
                        "error",
                        "attempts",
                        "started_at",
                        "finished_at",
                        "wake_at",
                    ],
                    "additionalProperties": False,
                    "properties": {
                        "key": {"type": "string", "description": "checkpoint key, e.g. charge-card#1"},
                        "position": {"type": "integer"},
                        "kind": {
                            "type": "string",
                            "enum": ["step", "sleep", "event", "patch", "emit", "child"],
                        },
                        "status": {"type": "string", "enum": ["completed", "failed", "waiting"]},
                        "result": _ANY,
                        "error": {"oneOf": [{"type": "null"}, _ref("StoredError")]},
                        "attempts": {"type": "integer"},
                        "started_at": _TIME,
                        "finished_at": _TIME,
                        "wake_at": {**_TIME, "description": "a sleep's or an event wait's deadline"},
                    },
                },
                "ExecutionSummary": {
                    "type": "object",
                    "required": ["id", "workflow", "status", "created_at", "finished_at"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "workflow": {"type": "string"},
                        "status": _ref("Status"),
                        "created_at": {"type": "string", "format": "date-time"},
                        "finished_at": _TIME,
                    },
                },
                "ExecutionList": {
                    "type": "object",
                    "required": ["executions"],
                    "additionalProperties": False,
                    "properties": {"executions": {"type": "array", "items": _ref("ExecutionSummary")}},
                },
                "EventRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "payload": {**_ANY, "description": "the event's payload (default null)"},
                        "key": {
                            "type": ["string", "null"],
                            "minLength": 1,
                            "maxLength": MAX_ID_LENGTH,
                            "description": "idempotency key: a repeated key is delivered once",
                        },
                    },
                },
                "EventDelivery": {
                    "type": "object",
                    "required": ["execution_id", "event", "delivered"],
                    "additionalProperties": False,
                    "properties": {
                        "execution_id": {"type": "string"},
                        "event": {"type": "string"},
                        "delivered": {
                            "type": "boolean",
                            "description": "false when this key was delivered before (nothing stored)",
                        },
                    },
                },
                "ForkRequest": {
                    "type": "object",
                    "required": ["from_step"],
                    "additionalProperties": False,
                    "properties": {
                        "from_step": {
                            "oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}],
                            "description": "a step key of the history (charge-card#1), or a position in it",
                        },
                        "id": {"type": "string", "description": "the new execution's id (default: a UUID)"},
                    },
                },
                "Fork": {
                    "type": "object",
                    "required": ["id", "workflow", "status", "forked_from", "forked_at"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "workflow": {"type": "string"},
                        "status": _ref("Status"),
                        "forked_from": {"type": "string"},
                        "forked_at": {"type": "string"},
                    },
                },
                "StatusChange": {
                    "type": "object",
                    "required": ["id", "status"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "status": _ref("Status"),
                        "paused": {"type": "boolean", "description": "pause: false if it already was"},
                        "unpaused": {"type": "boolean", "description": "unpause: false if it was not paused"},
                    },
                },
                "CancelRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"reason": {"type": "string", "maxLength": 1000}},
                },
                "Cancellation": {
                    "type": "object",
                    "required": ["id", "status", "cancelled"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "status": _ref("Status"),
                        "cancelled": {
                            "type": "boolean",
                            "description": "false when the execution had already ended",
                        },
                    },
                },
            },
        },
    }
