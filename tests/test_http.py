"""The HTTP API over real HTTP: a real `zart serve` subprocess, a real worker, a real PostgreSQL.

Every response these tests get is checked against what the server's own /openapi.json documents
for its path, method and status (the body's JSON schema included).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema
import orjson
import psycopg
import pytest
from openapi_spec_validator import validate as validate_openapi
from psycopg import conninfo

import zart
from zart.http import openapi_document, parse_size

from .conftest import REPO_ROOT, _create_database, _drop_database
from .helpers import (
    EFFECTS_TABLE_SQL,
    WorkerProcess,
    query,
    run_cli,
    stop_process,
    wait_until,
    zart_command,
)

LISTENING = re.compile(r"event=http\.listening url=(http://\S+)")
TOKEN = "s3cret-token-é"  # not ASCII on purpose: the comparison is on bytes
BODY_LIMIT = 64 * 1024


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["ZART_DATABASE_URL"] = database_url
    env.pop("ZART_TEST_EFFECTS_URL", None)
    env.pop("ZART_API_TOKEN", None)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class ServeProcess:
    """A real `zart serve` subprocess on a port of its choosing (`--port 0`, announced in its log)."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.log_path = (
            Path(os.environ.get("TMPDIR", "/tmp")) / f"zart-serve-{os.getpid()}-{time.monotonic_ns()}.log"
        )
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            zart_command("serve", "--host", "127.0.0.1", "--port", "0", *args),
            env=env,
            cwd=REPO_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = ""

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 60) -> str:
        found = wait_until(
            lambda: LISTENING.search(self.log()) or self.process.poll() is not None,
            timeout,
            what="`zart serve` to listen",
        )
        assert self.process.poll() is None, f"zart serve exited early:\n{self.log()}"
        self.url = found.group(1)

        def healthy() -> bool:
            try:
                return httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout, what="/healthz to answer 200")
        return self.url

    def stop(self) -> int:
        code = stop_process(self.process)
        self._log.close()
        return code


# -- checking responses against the OpenAPI document ----------------------------------------------------

DOC = openapi_document()
_TEMPLATES = [
    (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"), template) for template in DOC["paths"]
]


def template_of(path: str) -> str | None:
    path = path.split("?")[0]
    for pattern, template in _TEMPLATES:
        if pattern.match(path):
            return template
    return None


def check(response: httpx.Response, status: int, code: str | None = None) -> Any:
    """The response has `status` (and error `code`), and is what /openapi.json says it is."""
    request = response.request
    assert response.status_code == status, (
        f"{request.method} {request.url} answered {response.status_code}, not {status}: {response.text}"
    )
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    if status >= 400:
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"code", "message"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        if code is not None:
            assert body["error"]["code"] == code, body
    template = template_of(request.url.raw_path.decode())
    if template is None:
        assert status in (401, 404), f"{request.url}: no such path in /openapi.json"
        return body
    operation = DOC["paths"][template].get(request.method.lower())
    assert operation, f"/openapi.json has no {request.method} {template}"
    documented = operation["responses"].get(str(status))
    assert documented, f"/openapi.json does not document {status} for {request.method} {template}"
    schema = documented["content"]["application/json"].get("schema")
    if schema is not None:
        jsonschema.validate(body, {**schema, "components": DOC["components"]})
    return body


# -- fixtures -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(database_url: str, app: str, **env_extra: str) -> Iterator[str]:
    """`zart serve --app APP` and a worker for its workflows, on 127.0.0.1; the base URL. `env_extra`:
    more environment for both (ZART_API_TOKEN=...)."""
    env = server_env(database_url, **env_extra)
    worker = WorkerProcess(env, app=app)
    server = ServeProcess(env, "--app", app)
    try:
        worker.wait_started()
        yield server.wait_ready()
    finally:
        assert server.stop() == 0, server.log()
        worker.stop()


@pytest.fixture(scope="module")
def served(database_url: str) -> Iterator[str]:
    """The API of tests.apps.events_app's workflows, served and worked on; the base URL."""
    with serving(database_url, "tests.apps.events_app") as url:
        yield url


@pytest.fixture
def api(served: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served, timeout=30) as http:
        yield http


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_status(http: httpx.Client, execution_id: str, wanted: str) -> dict[str, Any]:
    path = f"/v1/executions/{quote(execution_id, safe='')}"

    def reached() -> dict[str, Any] | None:
        body = check(http.get(path), 200)
        return body if body["status"] == wanted else None

    return wait_until(reached, 30, what=f"{execution_id} to be {wanted}")


# -- 1. the whole lifecycle -----------------------------------------------------------------------------


def test_openapi_document_is_valid_and_served(api):
    served = check(api.get("/openapi.json"), 200)
    assert served == orjson.loads(orjson.dumps(DOC))
    validate_openapi(served)
    assert set(served["paths"]) == {
        "/v1/executions",
        "/v1/executions:batch",
        "/v1/executions/{id}",
        "/v1/executions/{id}/events/{name}",
        "/v1/executions/{id}/streams/{name}",
        "/v1/queues",
        "/v1/schedules",
        "/v1/executions/{id}/cancel",
        "/v1/executions/{id}/resume",
        "/v1/executions/{id}/fork",
        "/v1/executions/{id}/pause",
        "/v1/executions/{id}/unpause",
        "/healthz",
        "/metrics",
        "/openapi.json",
    }
    assert check(api.get("/healthz"), 200) == {"status": "ok"}


def test_list_schedules(api, database_url):
    name = unique("http-schedule")
    zart.schedule(name, "0 3 1 1 *", "wait-for-two", timezone="Europe/Berlin", database_url=database_url)
    try:
        zart.pause_schedule(name, database_url=database_url)
        listed = check(api.get("/v1/schedules"), 200)["schedules"]
        [mine] = [s for s in listed if s["name"] == name]
        assert mine["cron"] == "0 3 1 1 *" and mine["timezone"] == "Europe/Berlin"
        assert mine["catch_up"] == "latest" and mine["workflow"] == "wait-for-two"
        assert mine["paused"] is True and mine["last_execution"] is None
        assert mine["next_fire_at"].endswith(("+00:00", "Z"))
        check(api.get("/v1/schedules?name=x"), 422, "invalid_request")
    finally:
        zart.unschedule(name, database_url=database_url)


def test_start_get_list_deliver_events_complete(api):
    execution_id = unique("http-two")
    started = api.post("/v1/executions", json={"workflow": "wait-for-two", "id": execution_id})
    assert check(started, 201) == {
        "id": execution_id,
        "workflow": "wait-for-two",
        "status": "pending",
        "created": True,
    }
    assert started.headers["location"] == f"/v1/executions/{execution_id}"

    # Starting the same id again is that execution, not a second one.
    again = check(api.post("/v1/executions", json={"workflow": "wait-for-two", "id": execution_id}), 200)
    assert again["created"] is False and again["id"] == execution_id
    # ... but for another workflow it is a conflict.
    other = api.post("/v1/executions", json={"workflow": "wait-for-one", "input": {}, "id": execution_id})
    assert execution_id in check(other, 409, "duplicate_execution")["error"]["message"]

    waiting = wait_status(api, execution_id, "waiting")
    assert waiting["input"] is None and waiting["result"] is None and waiting["error"] is None
    assert [step["kind"] for step in waiting["steps"]] == ["event"]
    assert waiting["steps"][0]["status"] == "waiting"

    listed = check(api.get("/v1/executions", params={"workflow": "wait-for-two", "status": "waiting"}), 200)
    assert execution_id in [item["id"] for item in listed["executions"]]
    assert all(item["status"] == "waiting" for item in listed["executions"])

    events = f"/v1/executions/{execution_id}/events/item"
    first = check(api.post(events, json={"payload": {"n": 1}, "key": "item-1"}), 202)
    assert first == {"execution_id": execution_id, "event": "item", "delivered": True}
    repeated = check(api.post(events, json={"payload": {"n": 1}, "key": "item-1"}), 202)
    assert repeated["delivered"] is False  # the same key is delivered once
    check(api.post(events, json={"payload": {"n": 2}, "key": "item-2"}), 202)

    done = wait_status(api, execution_id, "completed")
    assert done["result"] == [{"n": 1}, {"n": 2}]
    assert [step["kind"] for step in done["steps"]] == ["event", "step", "event"]
    assert done["finished_at"] is not None

    limited = check(api.get("/v1/executions", params={"limit": "1", "status": ""}), 200)
    assert len(limited["executions"]) == 1

    # An ended execution takes no more events.
    late = api.post(events, json={"payload": {"n": 3}})
    check(late, 409, "execution_finished")


def test_event_sent_before_the_wait_and_an_empty_body(api):
    execution_id = unique("http-one")
    check(
        api.post(
            "/v1/executions", json={"workflow": "wait-for-one", "input": {"event": "go"}, "id": execution_id}
        ),
        201,
    )
    # No body at all: the payload is null.
    check(api.post(f"/v1/executions/{execution_id}/events/go"), 202)
    assert wait_status(api, execution_id, "completed")["result"] is None


def test_cancel(api):
    execution_id = unique("http-cancel")
    check(api.post("/v1/executions", json={"workflow": "wait-for-one", "input": {}, "id": execution_id}), 201)
    wait_status(api, execution_id, "waiting")
    cancel = f"/v1/executions/{execution_id}/cancel"
    first = check(api.post(cancel, json={"reason": "customer changed their mind"}), 202)
    assert first == {"id": execution_id, "status": "cancelled", "cancelled": True}
    assert check(api.post(cancel), 202) == {"id": execution_id, "status": "cancelled", "cancelled": False}
    gone = check(api.get(f"/v1/executions/{execution_id}"), 200)
    assert gone["status"] == "cancelled"
    assert gone["error"]["type"] == "Cancelled"
    assert gone["error"]["message"] == "customer changed their mind"
    check(
        api.post(f"/v1/executions/{execution_id}/events/go", json={"payload": 1}), 409, "execution_finished"
    )


def test_pause_unpause_resume_and_fork(api):
    """The operations of SPEC "Operating executions" over HTTP, each answered in its documented shape."""
    execution_id = unique("http-ops")
    path = f"/v1/executions/{execution_id}"
    check(api.post("/v1/executions", json={"workflow": "wait-for-one", "input": {}, "id": execution_id}), 201)
    wait_status(api, execution_id, "waiting")
    assert check(api.post(f"{path}/pause"), 202) == {"id": execution_id, "status": "paused", "paused": True}
    assert check(api.post(f"{path}/pause"), 202)["paused"] is False
    # An event sent while paused is kept; the execution takes it once unpaused.
    check(api.post(f"{path}/events/go", json={"payload": {"n": 1}}), 202)
    assert check(api.get(path), 200)["status"] == "paused"
    unpaused = check(api.post(f"{path}/unpause"), 202)
    assert unpaused["unpaused"] is True and unpaused["status"] != "paused"
    assert wait_status(api, execution_id, "completed")["result"] == {"n": 1}
    check(api.post(f"{path}/resume"), 409, "execution_not_resumable")
    check(api.post(f"{path}/pause"), 409, "execution_finished")

    forked = check(api.post(f"{path}/fork", json={"from_step": "event:go#1", "id": unique("http-fork")}), 201)
    assert (forked["forked_from"], forked["forked_at"]) == (execution_id, "event:go#1")
    wait_status(api, forked["id"], "waiting")  # it waits for the event again: a new execution
    assert check(api.get(path), 200)["forks"] == [forked["id"]]
    check(api.post(f"/v1/executions/{forked['id']}/cancel"), 202)
    resumed = check(api.post(f"/v1/executions/{forked['id']}/resume"), 202)
    assert resumed["id"] == forked["id"] and resumed["status"] in ("pending", "running", "waiting")
    wait_status(api, forked["id"], "waiting")
    check(api.post(f"/v1/executions/{forked['id']}/events/go", json={"payload": 2}), 202)
    done = wait_status(api, forked["id"], "completed")
    assert (done["result"], done["resumes"], done["forked_from"]) == (2, 1, execution_id)

    check(api.post(f"{path}/fork", json={"from_step": "event:nope#1"}), 404, "step_not_found")
    check(api.post(f"{path}/fork", json={"from_step": 9}), 404, "step_not_found")
    check(api.post(f"{path}/fork", json={"from_step": -1}), 422, "invalid_request")
    check(api.post(f"{path}/fork", json={"from_step": True}), 422, "invalid_request")
    check(api.post(f"{path}/fork", json={}), 422, "invalid_request")
    check(api.post(f"{path}/fork", json={"from_step": 0, "id": execution_id}), 409, "duplicate_execution")
    check(api.post(f"{path}/resume", json={"extra": 1}), 422, "invalid_request")
    for operation in ("resume", "fork", "pause", "unpause"):
        body = {"from_step": 0} if operation == "fork" else None
        check(
            api.post(f"/v1/executions/no-such-execution/{operation}", json=body), 404, "execution_not_found"
        )


def test_unknown_things(api):
    missing = "no-such-execution"
    check(api.get(f"/v1/executions/{missing}"), 404, "execution_not_found")
    check(api.post(f"/v1/executions/{missing}/events/go", json={}), 404, "execution_not_found")
    check(api.post(f"/v1/executions/{missing}/cancel"), 404, "execution_not_found")
    unknown = check(
        api.post("/v1/executions", json={"workflow": "no-such-workflow"}), 422, "unknown_workflow"
    )
    assert "'wait-for-one'" in unknown["error"]["message"]  # the known ones are listed
    check(api.get("/v2/executions"), 404, "not_found")
    wrong_method = api.delete("/v1/executions")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


def test_ids_and_names_with_slashes_and_unicode(api):
    execution_id = f"order/é/🚀 {uuid.uuid4().hex[:6]}?#%"
    path = f"/v1/executions/{quote(execution_id, safe='')}"
    started = check(
        api.post(
            "/v1/executions",
            json={"workflow": "wait-for-one", "input": {"event": "ça/va"}, "id": execution_id},
        ),
        201,
    )
    assert started["id"] == execution_id
    assert (
        api.post("/v1/executions", json={"workflow": "wait-for-one", "id": execution_id}).status_code == 200
    )
    assert check(api.get(path), 200)["id"] == execution_id
    delivered = check(api.post(f"{path}/events/{quote('ça/va', safe='')}", json={"payload": "✓"}), 202)
    assert delivered["event"] == "ça/va"
    assert wait_status(api, execution_id, "completed")["result"] == "✓"


def test_concurrent_starts_of_one_id_create_one_execution(api, served, database_url):
    execution_id = unique("http-race")
    results: list[int] = []

    def start() -> None:
        with httpx.Client(base_url=served, timeout=30) as http:
            response = http.post("/v1/executions", json={"workflow": "wait-for-one", "id": execution_id})
            results.append(response.status_code)

    threads = [threading.Thread(target=start) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [200] * 15 + [201]
    assert query(database_url, "SELECT count(*) FROM zart_execution_runs WHERE id = %s", (execution_id,)) == [
        (1,)
    ]
    check(api.post(f"/v1/executions/{execution_id}/cancel"), 202)


def test_a_workflow_registered_by_a_worker_is_known_without_app(served, database_url):
    # The worker of `served` registered events_app's workflows; this server imports nothing.
    server = ServeProcess(server_env(database_url))
    try:
        url = server.wait_ready()
        with httpx.Client(base_url=url, timeout=30) as http:
            execution_id = unique("http-registered")
            check(
                http.post(
                    "/v1/executions",
                    json={"workflow": "sleeper", "input": {"seconds": 0}, "id": execution_id},
                ),
                201,
            )
            check(http.post("/v1/executions", json={"workflow": "not-registered"}), 422, "unknown_workflow")
    finally:
        assert server.stop() == 0, server.log()


# -- 2. authentication ----------------------------------------------------------------------------------


def test_bearer_token(database_url):
    server = ServeProcess(server_env(database_url, ZART_API_TOKEN=TOKEN), "--app", "tests.apps.events_app")
    try:
        url = server.wait_ready()  # /healthz needs no token
        right = {"Authorization": f"Bearer {TOKEN}".encode()}
        with httpx.Client(base_url=url, timeout=30) as http:
            execution_id = unique("http-auth")
            start = {"workflow": "wait-for-one", "input": {}, "id": execution_id}
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": b"Bearer s3cret-token-"},  # a prefix of the right one
                {"Authorization": f"Bearer {TOKEN}x".encode()},
                {"Authorization": b"Bearer"},
                {"Authorization": f"Basic {TOKEN}".encode()},
                {"Authorization": f"Bearer  {TOKEN}".encode()},
            ):
                for response in (
                    http.post("/v1/executions", json=start, headers=headers),
                    http.get(f"/v1/executions/{execution_id}", headers=headers),
                    http.get("/v1/executions", headers=headers),
                    http.post(f"/v1/executions/{execution_id}/cancel", headers=headers),
                    http.post(f"/v1/executions/{execution_id}/events/go", json={}, headers=headers),
                    http.get("/openapi.json", headers=headers),
                    http.get("/metrics", headers=headers),
                    http.get("/v1/no/such/path", headers=headers),
                ):
                    check(response, 401, "unauthorized")
                    assert response.headers["www-authenticate"].startswith("Bearer")
                # A path outside the API is the dashboard's: its login form, whatever the header.
                assert http.get("/no/such/path", headers=headers).headers["location"].startswith("/login?")
            assert query(
                database_url, "SELECT count(*) FROM zart_execution_runs WHERE id = %s", (execution_id,)
            ) == [(0,)]
            assert check(http.get("/healthz"), 200) == {"status": "ok"}
            check(http.post("/v1/executions", json=start, headers=right), 201)
            check(http.get(f"/v1/executions/{execution_id}", headers=right), 200)
            lowercase = {"Authorization": f"bearer {TOKEN}".encode()}  # the scheme is case-insensitive
            check(http.get("/v1/executions", headers=lowercase), 200)
            check(http.get("/openapi.json", headers=right), 200)
            check(http.post(f"/v1/executions/{execution_id}/cancel", headers=right), 202)
    finally:
        assert server.stop() == 0, server.log()


# -- 3. malformed requests ------------------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}
LONG = "x" * 256


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def _chunks(total: int) -> Iterator[bytes]:
    yield b'{"workflow": "wait-for-one", "input": "'
    sent = 0
    while sent < total:
        yield b"a" * 8192
        sent += 8192
    yield b'"}'


Case = tuple[str, str, str, dict[str, str], Any, int, str]
INVALID = (422, "invalid_request")
BAD_JSON = (400, "invalid_json")
BAD_TYPE = (400, "unsupported_content_type")
TOO_LARGE = (413, "body_too_large")
NOT_FOUND = (404, "execution_not_found")
PENDING = "/v1/executions/{pending}"
CHUNKED = object()  # a body streamed without Content-Length


def post(name: str, path: str, body: Any, expected: tuple[int, str], headers: dict[str, str] = JSON) -> Case:
    return (name, "POST", path, headers, body, *expected)


def start(name: str, body: Any, expected: tuple[int, str] = INVALID, headers: dict[str, str] = JSON) -> Case:
    """A start request; a body that is not bytes is sent as its JSON."""
    raw = body if isinstance(body, bytes) or body is CHUNKED else _json(body)
    return post(name, "/v1/executions", raw, expected, headers)


def get(name: str, path: str, expected: tuple[int, str] = INVALID) -> Case:
    return (name, "GET", path, {}, None, *expected)


def start_with_id(name: str, execution_id: Any) -> Case:
    return start(name, {"workflow": "wait-for-one", "id": execution_id})


# `{pending}` and `{ended}` stand for executions that exist, one waiting and one cancelled.
MALFORMED: list[Case] = [
    # Not JSON, or not UTF-8 JSON.
    start("truncated JSON", b'{"workflow": ', BAD_JSON),
    start("trailing garbage", b'{"workflow": "wait-for-one"} x', BAD_JSON),
    start("empty body", b"", BAD_JSON),
    start("single quotes", b"{'workflow': 'wait-for-one'}", BAD_JSON),
    start("NaN", b'{"workflow": "wait-for-one", "input": NaN}', BAD_JSON),
    start("invalid UTF-8", b'{"workflow": "wait-\xff"}', BAD_JSON),
    start("lone surrogate", b'{"workflow": "\\ud800"}', BAD_JSON),
    start("byte order mark", b'\xef\xbb\xbf{"workflow": "x"}', BAD_JSON),
    start("nested too deep", b"[" * 2000 + b"]" * 2000, BAD_JSON),
    start("UTF-16 body", '{"workflow": "x"}'.encode("utf-16"), BAD_JSON),
    # Not sent as JSON.
    start("text/plain", {"workflow": "wait-for-one"}, BAD_TYPE, {"Content-Type": "text/plain"}),
    start("no content type", {"workflow": "wait-for-one"}, BAD_TYPE, {}),
    start(
        "form encoded",
        b"workflow=wait-for-one",
        BAD_TYPE,
        {"Content-Type": "application/x-www-form-urlencoded"},
    ),
    start(
        "latin-1 charset", {"workflow": "x"}, BAD_TYPE, {"Content-Type": "application/json; charset=latin-1"}
    ),
    # Too large, announced or not.
    start("huge body", {"workflow": "wait-for-one", "input": "a" * BODY_LIMIT}, TOO_LARGE),
    start("huge chunked body", CHUNKED, TOO_LARGE),
    # JSON, but not the right shape.
    start("array body", ["wait-for-one"]),
    start("string body", "wait-for-one"),
    start("null body", None),
    start("missing workflow", {"input": {}}),
    start("workflow a number", {"workflow": 42}),
    start("workflow null", {"workflow": None}),
    start("workflow empty", {"workflow": ""}),
    start("workflow too long", {"workflow": "w" * 201}),
    start("workflow with NUL", {"workflow": "wait-for-one\u0000"}),
    start("unknown workflow", {"workflow": "wait-for-none"}, (422, "unknown_workflow")),
    start("unknown field", {"workflow": "wait-for-one", "inputs": {}}),
    start_with_id("id a number", 7),
    start_with_id("id a list", ["a"]),
    start_with_id("id empty", ""),
    start_with_id("id too long", LONG),
    start_with_id("id with NUL", "a\u0000b"),
    start_with_id("id with newline", "a\nb"),
    start_with_id("id with DEL", "a\u007fb"),
    start("id of another workflow", {"workflow": "sleeper", "id": "{pending}"}, (409, "duplicate_execution")),
    # Values PostgreSQL cannot hold, or that would come back changed.
    start("input with NUL", {"workflow": "wait-for-one", "input": {"note": "a\u0000b"}}),
    start("input key with NUL", {"workflow": "wait-for-one", "input": {"a\u0000": 1}}),
    start("input with lone surrogate", b'{"workflow": "wait-for-one", "input": ["\\udc00"]}', BAD_JSON),
    start(
        "input big integer", b'{"workflow": "wait-for-one", "input": {"n": 123456789012345678901234567890}}'
    ),
    start("input integer just past 64 bits", b'{"workflow": "wait-for-one", "input": 18446744073709551616}'),
    start("input integer below -2**63", b'{"workflow": "wait-for-one", "input": -9223372036854775809}'),
    start("input beyond a double", b'{"workflow": "wait-for-one", "input": 1e400}'),
    start("input Infinity", b'{"workflow": "wait-for-one", "input": -Infinity}', BAD_JSON),
    start(
        "input nested 300 deep", b'{"workflow": "wait-for-one", "input": ' + b"[" * 300 + b"]" * 300 + b"}"
    ),
    # Ids in paths.
    get("unknown id", "/v1/executions/nobody-has-this-id", NOT_FOUND),
    get("unknown emoji id", "/v1/executions/%F0%9F%9A%80", NOT_FOUND),
    get("id with encoded NUL", "/v1/executions/a%00b"),
    get("id not UTF-8", "/v1/executions/a%FFb"),
    get("id overlong UTF-8", "/v1/executions/%C0%AF"),
    get("id too long in path", f"/v1/executions/{LONG}"),
    # Listing.
    get("unknown status", "/v1/executions?status=done"),
    get("limit zero", "/v1/executions?limit=0"),
    get("limit negative", "/v1/executions?limit=-1"),
    get("limit too big", "/v1/executions?limit=1001"),
    get("limit not a number", "/v1/executions?limit=ten"),
    get("limit in other digits", "/v1/executions?limit=%D9%A3"),
    get("status twice", "/v1/executions?status=failed&status=completed"),
    get("unknown parameter", "/v1/executions?state=failed"),
    get("workflow filter with NUL", "/v1/executions?workflow=a%00"),
    # Events.
    post("event to unknown id", "/v1/executions/nobody-has-this-id/events/go", b"{}", NOT_FOUND),
    post("event to ended execution", "/v1/executions/{ended}/events/go", b"{}", (409, "execution_finished")),
    post("event body not JSON", f"{PENDING}/events/go", b"payload=1", BAD_JSON),
    post(
        "event body as text",
        f"{PENDING}/events/go",
        b'{"payload": 1}',
        BAD_TYPE,
        {"Content-Type": "text/plain"},
    ),
    post("event body an array", f"{PENDING}/events/go", b"[1]", INVALID),
    post("event key a number", f"{PENDING}/events/go", b'{"payload": 1, "key": 5}', INVALID),
    post("event key empty", f"{PENDING}/events/go", b'{"key": ""}', INVALID),
    post("event unknown field", f"{PENDING}/events/go", b'{"data": 1}', INVALID),
    post("event name with NUL", f"{PENDING}/events/g%00o", b"{}", INVALID),
    post("event name too long", f"{PENDING}/events/{LONG}", b"{}", INVALID),
    post("event payload with NUL", f"{PENDING}/events/go", b'{"payload": "\\u0000"}', INVALID),
    post("event payload with surrogate", f"{PENDING}/events/go", b'{"payload": "\\ud800x"}', BAD_JSON),
    post(
        "event payload big integer",
        f"{PENDING}/events/go",
        b'{"payload": [1, 99999999999999999999]}',
        INVALID,
    ),
    post("event key with NUL", f"{PENDING}/events/go", b'{"key": "k\\u0000"}', INVALID),
    post("event huge payload", f"{PENDING}/events/go", _json({"payload": "p" * BODY_LIMIT}), TOO_LARGE),
    # Cancelling.
    post("cancel unknown id", "/v1/executions/nobody-has-this-id/cancel", None, NOT_FOUND, {}),
    post("cancel reason a number", f"{PENDING}/cancel", b'{"reason": 1}', INVALID),
    post("cancel body not JSON", f"{PENDING}/cancel", b"{", BAD_JSON),
    post("cancel reason with NUL", f"{PENDING}/cancel", b'{"reason": "customer\\u0000withdrew"}', INVALID),
    post("cancel reason with surrogate", f"{PENDING}/cancel", b'{"reason": "\\udfff"}', BAD_JSON),
    # No such endpoint.
    get("unknown endpoint", "/v1/execution", (404, "not_found")),
    get("trailing slash", "/v1/executions/", (404, "not_found")),
    post("empty event name", f"{PENDING}/events/", b"{}", (404, "not_found")),
]


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table the API could write."""
    tables = ["zart_execution_runs", "zart_tasks", "zart_steps", "zart_step_attempts", "zart_events"]
    return {table: query(url, f"SELECT t::text FROM {table} t ORDER BY t::text") for table in tables}


@pytest.fixture(scope="module")
def quiet_server(server_url: str) -> Iterator[tuple[str, str, dict[str, str]]]:
    """A server on a database of its own, with no worker: only the API could change it."""
    name, url = _create_database(server_url)
    try:
        zart.migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(EFFECTS_TABLE_SQL)
        server = ServeProcess(server_env(url), "--app", "tests.apps.events_app", "--max-body-size", "64KiB")
        try:
            base = server.wait_ready()
            with httpx.Client(base_url=base, timeout=30) as http:
                pending = unique("pending/é")
                ended = unique("ended")
                for execution_id in (pending, ended):
                    check(
                        http.post("/v1/executions", json={"workflow": "wait-for-one", "id": execution_id}),
                        201,
                    )
                check(http.post(f"/v1/executions/{ended}/cancel"), 202)
            yield base, url, {"pending": pending, "ended": ended}
        finally:
            assert server.stop() == 0, server.log()
    finally:
        _drop_database(server_url, name)


def test_the_table_has_enough_cases():
    assert len(MALFORMED) >= 25
    assert len({case[0] for case in MALFORMED}) == len(MALFORMED)


@pytest.mark.parametrize(
    ("name", "method", "path", "headers", "body", "status", "code"),
    MALFORMED,
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_request_is_rejected_and_changes_nothing(
    quiet_server, name, method, path, headers, body, status, code
):
    base, url, ids = quiet_server
    before = snapshot(url)
    if body is CHUNKED:
        content: Any = _chunks(BODY_LIMIT)
    elif body is not None:
        content = body.replace(b"{pending}", ids["pending"].encode())
    else:
        content = None
    path = path.format(**{name: quote(value, safe="") for name, value in ids.items()})
    with httpx.Client(base_url=base, timeout=30) as http:
        request = http.build_request(method, path, headers=headers, content=content)
        if body is CHUNKED:
            assert "content-length" not in request.headers
        response = http.send(request)
    check(response, status, code)
    assert snapshot(url) == before, f"{name}: the database changed"


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/v1/executions/{pending}/cancel", {"reason": "a\u0000b"}, "field 'reason' holds a NUL character"),
        (
            "/v1/executions",
            b'{"workflow": "wait-for-one", "input": {"account": 123456789012345678901234567890}}',
            "field 'input' holds an integer beyond 64 bits (30 digits) at input.account",
        ),
        (
            "/v1/executions",
            b'{"workflow": "wait-for-one", "input": {"x": [0, 1e999]}}',
            "field 'input' holds infinity at input.x[1]",
        ),
        (
            "/v1/executions/{pending}/events/go",
            b'{"payload": {"note": "\\ud83d"}}',
            "field 'payload' holds a lone surrogate (U+D83D) at payload.note",
        ),
        ("/v1/executions/{pending}/events/go", {"key": "k\u0000"}, "field 'key' holds a NUL character"),
    ],
)
def test_a_value_that_cannot_be_stored_as_sent_is_named(quiet_server, path, body, named):
    base, url, ids = quiet_server
    before = snapshot(url)
    content = body if isinstance(body, bytes) else _json(body)
    with httpx.Client(base_url=base, timeout=30) as http:
        response = http.post(
            path.format(pending=quote(ids["pending"], safe="")), content=content, headers=JSON
        )
    assert response.status_code in (400, 422)
    assert named in check(response, response.status_code)["error"]["message"]
    assert snapshot(url) == before


def test_numbers_at_the_edges_of_the_rule_are_kept_exactly(api):
    values = {
        "max": 2**64 - 1,
        "min": -(2**63),
        "huge": 1.7976931348623157e308,
        "tiny": 5e-324,
        "ok": "\u2028é",
    }
    execution_id = unique("http-edges")
    check(
        api.post("/v1/executions", json={"workflow": "wait-for-one", "input": values, "id": execution_id}),
        201,
    )
    stored = check(api.get(f"/v1/executions/{execution_id}"), 200)["input"]
    assert stored == values and isinstance(stored["max"], int) and isinstance(stored["min"], int)
    check(api.post(f"/v1/executions/{execution_id}/cancel"), 202)


# -- the command ----------------------------------------------------------------------------------------


def test_serve_with_several_workers_and_sigterm(database_url):
    server = ServeProcess(server_env(database_url), "--app", "tests.apps.events_app", "--workers", "2")
    try:
        url = server.wait_ready()
        with httpx.Client(base_url=url, timeout=30) as http:
            execution_id = unique("http-workers")
            check(http.post("/v1/executions", json={"workflow": "wait-for-one", "id": execution_id}), 201)
            for _ in range(10):  # new connections: either worker process may answer
                with httpx.Client(base_url=url, timeout=30) as fresh:
                    assert check(fresh.get(f"/v1/executions/{execution_id}"), 200)["id"] == execution_id
            check(http.post(f"/v1/executions/{execution_id}/cancel"), 202)
    finally:
        assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log(), server.log()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--max-body-size", "lots"), {}, "invalid --max-body-size 'lots'"),
        (("--max-body-size", "0"), {}, "invalid --max-body-size '0'"),
        ((), {"ZART_API_TOKEN": " "}, "ZART_API_TOKEN is set but empty"),
        (("--host", "192.0.2.1"), {}, "cannot listen on 192.0.2.1:0: Cannot assign requested address"),
        (("--app", "tests.apps.no_such_module"), {}, "cannot import app module 'tests.apps.no_such_module'"),
        # A database that does not exist fails at once (one that cannot be reached is waited for:
        # tests/test_connections.py).
        (("--database-url", "{unknown database}"), {}, "does not exist"),
    ],
)
def test_startup_errors_are_one_line(database_url, args, env, message):
    unknown = conninfo.make_conninfo(database_url, dbname="zart_no_such_database")
    args = tuple(unknown if arg == "{unknown database}" else arg for arg in args)
    result = run_cli("serve", "--port", "0", *args, env=server_env(database_url, **env))
    assert result.returncode == 1, result
    assert result.stderr.startswith("zart: error: ") and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_port_in_use_is_one_line(database_url):
    server = ServeProcess(server_env(database_url))
    try:
        port = server.wait_ready().rsplit(":", 1)[1]
        result = run_cli("serve", "--port", port, env=server_env(database_url))
        assert result.returncode == 1
        assert result.stderr == f"zart: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    finally:
        assert server.stop() == 0, server.log()


def test_parse_size():
    assert parse_size("1MiB") == parse_size("1m") == 1024 * 1024
    assert parse_size("64KiB") == 65536
    assert parse_size("2MB") == 2_000_000
    assert parse_size("512") == 512
