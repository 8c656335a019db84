"""Streams of values out of a running execution (zart.emit), with real workers and a real SIGKILL."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest
import trio

import zart

from .apps import streams_app
from .helpers import WorkerProcess, query, run_cli, scalar, wait_until
from .test_http import ServeProcess, server_env, serving


def stream_rows(url: str, execution_id: str, stream: str) -> list[tuple[int, object]]:
    return query(
        url,
        "SELECT seq, value FROM zart_streams WHERE execution_id = %s AND stream = %s ORDER BY seq",
        (execution_id, stream),
    )


@contextlib.contextmanager
def trio_thread(fn: Callable[[], None]) -> Iterator[threading.Thread]:
    """`fn` in a daemon thread (a blocking reader), joined at the end."""
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        thread.join(30)


def test_emit_stores_each_value_once_with_its_history_entry(database_url, worker):
    handle = zart.start(streams_app.stream_two, database_url=database_url)
    assert handle.result(timeout=30) == 2
    assert stream_rows(database_url, handle.id, "a") == [(1, "a1"), (2, "a2")]
    assert stream_rows(database_url, handle.id, "b") == [(1, {"b": 1})]
    assert [(s.key, s.kind, s.status) for s in handle.steps()] == [
        ("emit:a#1", "emit", "completed"),
        ("emit:b#1", "emit", "completed"),
        ("emit:a#2", "emit", "completed"),
        ("stream-group#1", "step", "completed"),
    ]
    assert list(handle.stream("a")) == ["a1", "a2"]
    assert list(handle.stream("b")) == [{"b": 1}]
    assert list(handle.stream("none")) == []


def test_a_sigkill_mid_stream_and_a_replay_emit_no_value_twice(database_url, subprocess_env):
    first = WorkerProcess(subprocess_env, app="tests.apps.streams_app")
    try:
        first.wait_started()
        handle = zart.start(
            streams_app.stream_counter, {"count": 1000, "group": 50}, database_url=database_url
        )
        wait_until(
            lambda: (
                scalar(
                    database_url, "SELECT count(*) FROM zart_streams WHERE execution_id = %s", (handle.id,)
                )
                >= 300
            ),
            timeout=60,
            what="300 values emitted",
        )
        first.kill()
    finally:
        first.stop()
    emitted_before = scalar(
        database_url, "SELECT count(*) FROM zart_streams WHERE execution_id = %s", (handle.id,)
    )
    assert 300 <= emitted_before < 1000
    second = WorkerProcess(subprocess_env, app="tests.apps.streams_app")
    try:
        second.wait_started()
        assert handle.result(timeout=60) == 1000
    finally:
        second.stop()
    assert stream_rows(database_url, handle.id, "numbers") == [(i + 1, i) for i in range(1000)]
    assert list(handle.stream("numbers")) == list(range(1000))
    # One history entry per emit; values written in order, none written again by the replay.
    assert (
        scalar(
            database_url,
            "SELECT count(*) FROM zart_steps WHERE execution_id = %s AND kind = 'emit'",
            (handle.id,),
        )
        == 1000
    )
    times = [
        row[0]
        for row in query(
            database_url,
            "SELECT created_at FROM zart_streams WHERE execution_id = %s ORDER BY seq",
            (handle.id,),
        )
    ]
    assert times == sorted(times)


def test_stream_follows_live_values_and_ends_with_the_execution(database_url, worker):
    handle = zart.start(streams_app.stream_then_wait, database_url=database_url)
    zart.send_event(handle.id, "value", "early", database_url=database_url)
    wait_until(lambda: len(stream_rows(database_url, handle.id, "live")) == 1, what="the first value")
    received: list[tuple[object, float]] = []

    def read() -> None:
        for value in handle.stream("live"):
            received.append((value, time.time()))

    with trio_thread(read) as reader:
        wait_until(lambda: len(received) == 1, what="the value emitted before the reader came")
        latencies = []
        for i in range(20):
            zart.send_event(handle.id, "value", i, database_url=database_url)
            wait_until(lambda i=i: len(received) == i + 2, what=f"value {i}")
            created = scalar(
                database_url,
                "SELECT extract(epoch FROM created_at) FROM zart_streams"
                " WHERE execution_id = %s AND seq = %s",
                (handle.id, i + 2),
            )
            latencies.append(received[-1][1] - float(created))
        zart.send_event(handle.id, "value", "stop", database_url=database_url)
        reader.join(30)
        assert not reader.is_alive(), "the stream did not end with the execution"
    assert [value for value, _ in received] == ["early", *range(20)]
    latencies.sort()
    print(
        f"python stream: commit to reader median {latencies[10] * 1000:.1f} ms,"
        f" max {latencies[-1] * 1000:.1f} ms"
    )
    assert latencies[10] < 0.05


def test_astream_under_trio_and_asyncio(database_url, worker):
    handle = zart.start(streams_app.stream_counter, {"count": 30, "group": 10}, database_url=database_url)

    async def collect() -> list:
        return [value async for value in handle.astream("numbers")]

    assert trio.run(collect) == list(range(30))
    import asyncio

    assert asyncio.run(collect()) == list(range(30))
    assert handle.result(timeout=30) == 30


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("name", "ValueError: the name of a stream 'bad\\nname' contains control characters"),
        ("empty", "ValueError: the name of a stream must be 1 to 200 characters long, not 0"),
        (
            "value",
            "SerializationError: cannot serialise a value of type 'set' passed as a value of stream 'ok'",
        ),
        ("nan", "SerializationError: cannot serialise"),
    ],
)
def test_bad_emits_raise_clear_errors(database_url, worker, case, error):
    handle = zart.start(streams_app.stream_bad, {"case": case}, database_url=database_url)
    assert handle.result(timeout=30).startswith(error)
    assert (
        scalar(database_url, "SELECT count(*) FROM zart_streams WHERE execution_id = %s", (handle.id,)) == 0
    )


def test_emit_outside_a_workflow_and_bad_reads(database_url):
    with pytest.raises(zart.ZartError, match=r"zart.emit\(\) can only be awaited inside a workflow"):
        trio.run(zart.emit, "numbers", 1)
    handle = zart.ExecutionHandle("no-such-execution", "stream-counter", database_url)
    with pytest.raises(zart.ExecutionNotFound):
        list(handle.stream("numbers"))
    with pytest.raises(ValueError, match="control characters"):
        handle.stream("a\x00b")
    with pytest.raises(TypeError, match="must be a string"):
        handle.astream(3)  # type: ignore[arg-type]


# -- Server-Sent Events over a real `zart serve` ----------------------------------------------------------


@pytest.fixture(scope="module")
def served(database_url: str) -> Iterator[str]:
    with serving(database_url, "tests.apps.streams_app") as url:
        yield url


def sse_events(response: httpx.Response) -> Iterator[dict[str, str]]:
    """The events of a text/event-stream response, as they arrive (with `at`: time.time() then)."""
    event: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if event:
                event["at"] = str(time.time())
                yield event
            event = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            event[field] = value.removeprefix(" ")


def test_sse_reader_joining_mid_way_gets_all_values_in_order(served, database_url):
    handle = zart.start(
        streams_app.stream_counter, {"count": 1000, "group": 100, "nap": 0.1}, database_url=database_url
    )
    wait_until(
        lambda: len(stream_rows(database_url, handle.id, "numbers")) >= 200, timeout=60, what="200 values"
    )
    received = []
    with (
        httpx.Client(base_url=served, timeout=30) as http,
        http.stream("GET", f"/v1/executions/{handle.id}/streams/numbers") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        joined_at = len(stream_rows(database_url, handle.id, "numbers"))
        for event in sse_events(response):
            if event.get("event") == "end":
                break
            received.append((int(event["id"]), orjson.loads(event["data"])))
    assert joined_at < 1000, "the reader joined after the last value: not mid-way"
    assert received == [(i + 1, i) for i in range(1000)]
    assert handle.result(timeout=30) == 1000
    # Resume after the 990th value (EventSource's reconnect): the last ten, then the end.
    with httpx.Client(base_url=served, timeout=30) as http:
        resumed = http.get(f"/v1/executions/{handle.id}/streams/numbers", headers={"Last-Event-ID": "990"})
    assert [line for line in resumed.text.splitlines() if line.startswith("id: ")] == [
        f"id: {seq}" for seq in range(991, 1001)
    ]
    assert resumed.text.endswith("event: end\ndata: {}\n\n")


def test_sse_live_values_arrive_within_50_ms_of_their_commit(served, database_url):
    handle = zart.start(streams_app.stream_then_wait, database_url=database_url)
    latencies = []
    with (
        httpx.Client(base_url=served, timeout=30) as http,
        http.stream("GET", f"/v1/executions/{handle.id}/streams/live") as response,
    ):
        events = sse_events(response)
        for i in range(30):
            zart.send_event(handle.id, "value", {"i": i}, database_url=database_url)
            event = next(events)
            assert (event["id"], orjson.loads(event["data"])) == (str(i + 1), {"i": i})
            created = scalar(
                database_url,
                "SELECT extract(epoch FROM created_at) FROM zart_streams"
                " WHERE execution_id = %s AND seq = %s",
                (handle.id, i + 1),
            )
            latencies.append(float(event["at"]) - float(created))
        zart.send_event(handle.id, "value", "stop", database_url=database_url)
        assert next(events)["event"] == "end"
    latencies.sort()
    print(
        f"SSE: value's insert to its arrival at the reader: median {latencies[15] * 1000:.1f} ms,"
        f" max {latencies[-1] * 1000:.1f} ms"
    )
    assert latencies[-3] < 0.05, latencies


def test_sse_errors_in_the_api_shape(served, database_url):
    with httpx.Client(base_url=served, timeout=30) as http:
        missing = http.get("/v1/executions/no-such-execution/streams/numbers")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "execution_not_found"
        handle = zart.start(streams_app.stream_two, database_url=database_url)
        bad_name = http.get(f"/v1/executions/{handle.id}/streams/{'x' * 201}")
        assert bad_name.status_code == 422
        assert "stream name" in bad_name.json()["error"]["message"]
        bad_id = http.get(f"/v1/executions/{handle.id}/streams/a", headers={"Last-Event-ID": "-1"})
        assert bad_id.status_code == 422
        assert "Last-Event-ID" in bad_id.json()["error"]["message"]
        assert handle.result(timeout=30) == 2
        done = http.get(f"/v1/executions/{handle.id}/streams/a")
        assert done.status_code == 200
        assert done.text == 'id: 1\ndata: "a1"\n\nid: 2\ndata: "a2"\n\nevent: end\ndata: {}\n\n'


def test_zart_show_lists_each_streams_last_values(database_url, worker, subprocess_env):
    handle = zart.start(streams_app.stream_counter, {"count": 12, "group": 5}, database_url=database_url)
    assert handle.result(timeout=30) == 12
    shown = run_cli("show", handle.id, env=subprocess_env)
    assert shown.returncode == 0, shown.stderr
    assert "stream numbers" in shown.stdout
    assert "12 values: ..., 9, 10, 11" in shown.stdout
    assert "emitted value 12 of stream 'numbers'" in shown.stdout
    as_json = run_cli("show", handle.id, "--json", env=subprocess_env)
    assert orjson.loads(as_json.stdout)["streams"] == [{"name": "numbers", "count": 12, "last": [9, 10, 11]}]


def test_prune_removes_the_streams_and_fork_copies_the_values_before_its_step(
    fresh_database_url, monkeypatch
):
    from zart.prune import prune

    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", fresh_database_url)
    with zart.Worker(fresh_database_url, lease="2s", poll_interval="0.5s"):
        handle = zart.start(streams_app.stream_two, database_url=fresh_database_url)
        assert handle.result(timeout=30) == 2
        forked = zart.fork(handle.id, from_step="emit:a#2", database_url=fresh_database_url)
        assert forked.result(timeout=30) == 2
    # The fork copied the values of the emits it copied (a1, b1) and emitted a2 itself.
    assert stream_rows(fresh_database_url, forked.id, "a") == [(1, "a1"), (2, "a2")]
    assert stream_rows(fresh_database_url, forked.id, "b") == [(1, {"b": 1})]
    old_enough = "SELECT max(finished_at) < now() - interval '1 millisecond' FROM zart_execution_runs"
    wait_until(lambda: scalar(fresh_database_url, old_enough), what="both executions older than 1 ms")
    prune(fresh_database_url, older_than=0.001)
    assert scalar(fresh_database_url, "SELECT count(*) FROM zart_streams") == 0


def test_emit_inside_a_step_is_refused(database_url, worker):
    handle = zart.start(streams_app.stream_from_step, database_url=database_url)
    assert handle.result(timeout=30) == "zart.emit() can only be awaited inside a workflow run by Zart"


def test_serve_stops_on_sigterm_with_a_stream_open(database_url):
    """An open stream does not keep `zart serve` from stopping: after its grace it exits 0."""
    env = server_env(database_url)
    server = ServeProcess(env, "--app", "tests.apps.streams_app")
    handle = zart.start(streams_app.stream_then_wait, database_url=database_url)
    try:
        url = server.wait_ready()
        with httpx.Client(base_url=url, timeout=30) as http:
            with http.stream("GET", f"/v1/executions/{handle.id}/streams/live") as response:
                assert response.status_code == 200
                began = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                with contextlib.suppress(httpx.HTTPError):
                    for _ in response.iter_lines():
                        pass
            assert server.process.wait(30) == 0, server.log()
            print(f"zart serve stopped {time.monotonic() - began:.1f} s after SIGTERM with a stream open")
    finally:
        server.stop()
        handle.cancel()
