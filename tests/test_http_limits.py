"""The HTTP API's limits, over real HTTP against a real `zart serve` and PostgreSQL: a row held locked
stalls only the requests that need it, and those answer 503 in time; a slow client is cut off."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import orjson
import psycopg
import pytest

import zart
from zart.http.lanes import QUEUE_WAIT, lanes
from zart.http.protocol import MAX_HEAD_SIZE

from .helpers import scalar, wait_until
from .test_http import ServeProcess, check, server_env, unique

LOCK_TIMEOUT = 2.0  # long enough to look at the server while requests wait, short enough for a test
# The ceiling of a request: a row's waiters queue, and each lock a waiter takes in turn restarts its
# lock_timeout, so the last of them may wait longer than --lock-timeout in all.
STATEMENT_TIMEOUT = 3.0
REQUESTS = 10  # more than the write lane's 8 threads


def _waiting_on_locks(url: str) -> int:
    return scalar(
        url,
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )


def test_a_locked_row_stalls_neither_health_nor_reads(database_url):
    server = ServeProcess(
        server_env(database_url),
        "--app",
        "tests.apps.events_app",
        "--lock-timeout",
        f"{LOCK_TIMEOUT:g}s",
        "--statement-timeout",
        f"{STATEMENT_TIMEOUT:g}s",
    )
    answers: list[tuple[httpx.Response, float]] = []
    try:
        base = server.wait_ready()
        execution_id = unique("http-locked")
        with httpx.Client(base_url=base, timeout=2) as http:
            check(http.post("/v1/executions", json={"workflow": "wait-for-one", "id": execution_id}), 201)

            def fire(index: int) -> None:
                action = "cancel" if index % 2 else "events/go"
                began = time.monotonic()
                with httpx.Client(base_url=base, timeout=30) as client:
                    response = client.post(f"/v1/executions/{execution_id}/{action}", json={})
                answers.append((response, time.monotonic() - began))

            # What a worker frozen in the middle of a batch holds: the execution's task row.
            with psycopg.connect(database_url) as locker:
                locker.execute("SELECT 1 FROM zart_tasks WHERE execution_id = %s FOR UPDATE", (execution_id,))
                threads = [threading.Thread(target=fire, args=(index,)) for index in range(REQUESTS)]
                for thread in threads:
                    thread.start()
                wait_until(
                    lambda: _waiting_on_locks(database_url) >= 8, LOCK_TIMEOUT, what="8 requests on the lock"
                )
                began = time.monotonic()
                assert check(http.get("/healthz"), 200) == {"status": "ok"}
                check(http.get("/v1/executions"), 200)
                assert check(http.get(f"/v1/executions/{execution_id}"), 200)["status"] == "pending"
                assert time.monotonic() - began < 1.5
                for thread in threads:
                    thread.join(STATEMENT_TIMEOUT + 5)
        assert len(answers) == REQUESTS
        codes = []
        for response, seconds in answers:
            code = check(response, 503)["error"]["code"]
            assert response.headers["retry-after"] == "1"
            # Those with a thread waited on the row, the others for a thread, each a bounded time.
            assert seconds < (STATEMENT_TIMEOUT if code == "timeout" else QUEUE_WAIT) + 1.5, (code, seconds)
            codes.append(code)
        assert sorted(codes) == ["busy"] * (REQUESTS - 8) + ["timeout"] * 8
        with httpx.Client(base_url=base, timeout=5) as http:  # nothing was done, and the API is back
            assert check(http.get(f"/v1/executions/{execution_id}"), 200)["status"] == "pending"
            check(http.post(f"/v1/executions/{execution_id}/cancel"), 202)
        assert (
            scalar(database_url, "SELECT count(*) FROM zart_events WHERE execution_id = %s", (execution_id,))
            == 0
        )
    finally:
        assert server.stop() == 0, server.log()


def test_lane_connections_carry_their_timeouts(database_url):
    found = {}
    for name, lane in lanes(database_url, 2.0, 5.0).items():
        with psycopg.connect(lane.url) as conn:
            found[name] = tuple(
                conn.execute(f"SHOW {setting}").fetchone()[0]
                for setting in ("lock_timeout", "statement_timeout", "application_name")
            )
    assert found == {
        "read": ("2s", "5s", "zart-api-read"),
        "write": ("2s", "5s", "zart-api-write"),
        "start": ("2s", "5s", "zart-api-write"),  # the write lane's pool, through the group commit
        "health": ("1s", "1s", "zart-api-health"),
    }


# -- slow clients ---------------------------------------------------------------------------------------

CLIENT_TIMEOUT = 1.0
BOUND = CLIENT_TIMEOUT + 1.5  # the server's timer plus scheduling on a loaded machine
PACE = 0.2  # a trickling client sends something this often, forever if the server lets it


@pytest.fixture(scope="module")
def impatient(database_url: str) -> Iterator[tuple[str, int]]:
    server = ServeProcess(
        server_env(database_url), "--app", "tests.apps.events_app", "--client-timeout", f"{CLIENT_TIMEOUT:g}s"
    )
    try:
        host, port = server.wait_ready().removeprefix("http://").rsplit(":", 1)
        yield host, int(port)
    finally:
        assert server.stop() == 0, server.log()


def _trickle(address: tuple[str, int], head: bytes, chunk: bytes) -> tuple[bytes, float]:
    """Send `head`, then `chunk` every PACE seconds until the server closes: what it said, and when."""
    received = b""
    with socket.create_connection(address) as sock:
        sock.settimeout(PACE)
        began = time.monotonic()
        sock.sendall(head)
        while time.monotonic() - began < BOUND + 5:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                try:
                    if chunk:
                        sock.sendall(chunk)
                except OSError:  # closed: a reset while sending
                    break
                continue
            except OSError:
                break
            if not data:
                break
            received += data
        return received, time.monotonic() - began


def test_an_idle_connection_is_closed(impatient):
    received, seconds = _trickle(impatient, b"", b"")
    assert received == b"" and seconds < BOUND, seconds


def test_trickled_headers_are_cut_off(impatient):
    received, seconds = _trickle(impatient, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-a: b\r\n")
    assert seconds < BOUND, seconds
    assert b"200 OK" not in received


def test_a_trickled_body_is_cut_off_with_408(impatient):
    head = (
        b"POST /v1/executions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    received, seconds = _trickle(impatient, head, b" ")
    assert seconds < BOUND, seconds
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408"), received
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    assert body.startswith(b'{"error":{"code":"body_timeout","message":"the request body did not arrive')


# -- what the HTTP/1.1 parser sees ----------------------------------------------------------------------

# What curl --http2, Java's HttpClient and Ktor add to plain HTTP/1.1 requests: an offer to switch to
# HTTP/2, which the server may decline by answering in HTTP/1.1 (RFC 9110 §7.8).
H2C_OFFER = (
    b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
)


def _exchange(address: tuple[str, int], *writes: bytes, responses: int = 1) -> list[tuple[bytes, bytes]]:
    """Send each of `writes` (a pause between them), then read `responses` responses, each with a
    Content-Length, or what comes until the server closes: [(head, body)]."""
    received = b""
    answers: list[tuple[bytes, bytes]] = []
    with socket.create_connection(address) as sock:
        sock.settimeout(10)
        for index, data in enumerate(writes):
            if index:
                time.sleep(0.1)
            sock.sendall(data)
        while len(answers) < responses:
            if b"\r\n\r\n" in received:
                head, _, rest = received.partition(b"\r\n\r\n")
                lengths = [
                    line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")
                ]
                length = int(lengths[0].split(b":")[1]) if lengths else 0
                if len(rest) >= length:
                    answers.append((head, rest[:length]))
                    received = rest[length:]
                    continue
            data = sock.recv(65536)
            if not data:
                break
            received += data
    return answers


def _error(answer: tuple[bytes, bytes], status: int, code: str) -> None:
    head, body = answer
    assert head.startswith(b"HTTP/1.1 %d " % status), head
    assert b"content-type: application/json" in head.lower() and b"connection: close" in head.lower()
    assert orjson.loads(body)["error"]["code"] == code, body


def _start(execution_id: str, offer: bytes, *, chunked: bool) -> tuple[bytes, bytes]:
    body = orjson.dumps({"workflow": "wait-for-one", "id": execution_id})
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
    head = b"POST /v1/executions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s%s\r\n\r\n" % (
        offer,
        framing,
    )
    return head, (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked else body)


@pytest.mark.parametrize("split", [False, True], ids=["body-with-headers", "body-after-headers"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_upgrade_offer_is_declined_and_the_request_served(impatient, database_url, chunked, split):
    first, second = unique("http-h2c"), unique("http-h2c")
    head, body = _start(first, H2C_OFFER, chunked=chunked)
    then = b"".join(_start(second, b"", chunked=chunked))  # another request on the same connection
    writes = [head, body, then] if split else [head + body[:5], body[5:] + then]
    answers = _exchange(impatient, *writes, responses=2)
    assert [answer[0].split(b"\r\n")[0] for answer in answers] == [b"HTTP/1.1 201 Created"] * 2, answers
    assert [orjson.loads(answer[1])["id"] for answer in answers] == [first, second]
    for execution_id in (first, second):
        zart.cancel(execution_id, database_url=database_url)


def test_a_malformed_request_answers_400_in_the_api_shape(impatient):
    (answer,) = _exchange(impatient, b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n")
    _error(answer, 400, "bad_request")


def test_headers_past_the_bound_answer_431(impatient):
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    (answer,) = _exchange(impatient, head, b"X-Big: " + b"a" * (MAX_HEAD_SIZE + 1), b"\r\n\r\n")
    _error(answer, 431, "headers_too_large")
    # Below the bound, in several writes, they are fine.
    (answer,) = _exchange(impatient, head, b"X-Big: " + b"a" * (MAX_HEAD_SIZE // 2), b"\r\n\r\n")
    assert answer[0].startswith(b"HTTP/1.1 200 "), answer
