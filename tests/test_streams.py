"""Streams of values out of a running execution (zart.emit), with real workers and a real SIGKILL."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import trio

import zart

from .apps import streams_app
from .helpers import WorkerProcess, query, scalar, wait_until


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
