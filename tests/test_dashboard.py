"""The dashboard over HTTP (`zart serve` as a subprocess, a real worker): who may see and do what,
escaping, filters and keyset paging, actions, live fragments. The browser tests are in
test_dashboard_browser.py; the timeline's geometry in test_dashboard_timeline.py."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from html import unescape
from urllib.parse import quote

import httpx
import pytest

import zart
from zart.http.dashboard.reads import PAGE_SIZE

from .apps import dashboard_app
from .helpers import WorkerProcess, wait_until
from .test_http import ServeProcess, server_env, serving

APP = "tests.apps.dashboard_app"
TOKEN = "dashboard-test-token"
INJECTED = '<script>alert("zart")</script>'
PAGES = ["/", "/executions", "/executions/some-id", "/queues", "/schedules"]
ACTIONS = ["cancel", "event", "resume", "fork", "pause", "unpause"]


def dashboard_serving(database_url: str, token: str | None = TOKEN) -> AbstractContextManager[str]:
    """`zart serve` (with `token` as ZART_API_TOKEN) and a worker of tests.apps.dashboard_app."""
    return serving(database_url, APP, **({"ZART_API_TOKEN": token} if token else {}))


@pytest.fixture(scope="module")
def base(database_url: str) -> Iterator[str]:
    with dashboard_serving(database_url) as url:
        yield url


@contextmanager
def logged_in(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=30) as http:
        answer = http.post("/login", data={"token": TOKEN, "next": "/"})
        assert answer.status_code == 303, answer.text
        yield http


@pytest.fixture
def browser_session(base: str) -> Iterator[httpx.Client]:
    with logged_in(base) as http:
        yield http


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def page_of(http: httpx.Client, execution_id: str) -> str:
    answer = http.get("/executions/" + quote(execution_id, safe=""))
    assert answer.status_code == 200, answer.text
    return answer.text


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def start_order(database_url: str, item: str = "lamp") -> zart.ExecutionHandle:
    order_id = unique("order")
    return zart.start(
        dashboard_app.order_flow,
        {"id": order_id, "item": item, "amount": 7},
        id=order_id,
        database_url=database_url,
    )


def wait_status(handle: zart.ExecutionHandle, wanted: str) -> None:
    wait_until(lambda: handle.status() == wanted, 30, what=f"{handle.id} to be {wanted}")


# -- who may see and do what -----------------------------------------------------------------------------


def test_without_a_session_pages_redirect_to_the_login_and_actions_are_refused(base):
    with httpx.Client(base_url=base, timeout=30) as http:
        for path in PAGES:
            answer = http.get(path + "?x=<y>")
            assert answer.status_code == 303, path
            assert answer.headers["location"] == "/login?next=" + quote(path + "?x=%3Cy%3E", safe="")
        for action in ACTIONS:
            answer = http.post(f"/executions/some-id/{action}", data={"csrf": "0" * 64})
            assert answer.status_code == 401, action
            assert "Log in first" in answer.text
        assert http.post("/logout").status_code == 401
        # The login form itself, and the static files it needs, are open.
        assert http.get("/login").status_code == 200
        assert http.get("/static/dashboard.js").status_code == 200


def test_login_sets_a_strict_httponly_cookie_and_a_wrong_token_is_refused(base):
    with httpx.Client(base_url=base, timeout=30) as http:
        refused = http.post("/login", data={"token": "not-the-token", "next": "/queues"})
        assert refused.status_code == 401
        assert "That token is not this server" in refused.text
        assert "set-cookie" not in refused.headers
        accepted = http.post("/login", data={"token": TOKEN, "next": "/queues"})
        assert accepted.status_code == 303
        assert accepted.headers["location"] == "/queues"
        cookie = accepted.headers["set-cookie"]
        assert cookie.startswith("zart_session=")
        for attribute in ("HttpOnly", "SameSite=Strict", "Path=/"):
            assert attribute in cookie
        assert http.get("/queues").status_code == 200
        # The cookie is the dashboard's: the API still wants its bearer token.
        assert http.get("/v1/executions").status_code == 401


def test_the_login_redirects_only_within_the_site(base):
    with httpx.Client(base_url=base, timeout=30) as http:
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
            answer = http.post("/login", data={"token": TOKEN, "next": target})
            assert answer.headers["location"] == "/", target


def test_a_forged_or_expired_session_is_no_session(base):
    with logged_in(base) as http:
        cookie = http.cookies["zart_session"]
        issued, nonce, signature = cookie.split(".")
        forged = [
            f"{int(issued) + 1}.{nonce}.{signature}",  # a changed issue time
            f"{issued}.{nonce}.{'0' * len(signature)}",  # a made-up signature
            f"1000.{nonce}.{signature}",  # very old
            "garbage",
        ]
    for value in forged:
        with httpx.Client(base_url=base, timeout=30, cookies={"zart_session": value}) as http:
            assert http.get("/").status_code == 303, value


def test_logout_ends_the_session(base):
    with logged_in(base) as http:
        csrf = csrf_of(http.get("/").text)
        answer = http.post("/logout", data={"csrf": csrf})
        assert answer.status_code == 303
        assert "Max-Age=0" in answer.headers["set-cookie"]
        assert http.get("/").status_code == 303


def test_an_action_without_the_csrf_token_or_from_another_site_is_refused(
    base, browser_session, database_url
):
    handle = start_order(database_url)
    wait_status(handle, "waiting")
    path = "/executions/" + quote(handle.id, safe="") + "/cancel"
    csrf = csrf_of(page_of(browser_session, handle.id))
    assert browser_session.post(path, data={}).status_code == 403
    assert browser_session.post(path, data={"csrf": "f" * 64}).status_code == 403
    foreign = browser_session.post(path, data={"csrf": csrf}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    null = browser_session.post(path, data={"csrf": csrf}, headers={"Origin": "null"})
    assert null.status_code == 403
    # A CSRF token is bound to its session: another session's token does not do.
    with logged_in(base) as other:
        other_csrf = csrf_of(other.get("/").text)
    assert browser_session.post(path, data={"csrf": other_csrf}).status_code == 403
    assert handle.status() == "waiting"
    # The page's own host, seen through a proxy that ends TLS (https there, http here), may act.
    host = browser_session.base_url.netloc.decode()
    done = browser_session.post(path, data={"csrf": csrf}, headers={"Origin": f"https://{host}"})
    assert done.status_code == 303
    assert handle.status() == "cancelled"


def test_without_a_token_each_browser_gets_a_session_and_actions_still_need_csrf(database_url):
    with dashboard_serving(database_url, token=None) as url, httpx.Client(base_url=url, timeout=30) as http:
        handle = start_order(database_url)
        wait_status(handle, "waiting")
        first = http.get("/executions/" + quote(handle.id, safe=""))
        assert first.status_code == 200
        assert "HttpOnly" in first.headers["set-cookie"]
        path = "/executions/" + quote(handle.id, safe="") + "/cancel"
        assert http.post(path, data={}).status_code == 403
        assert http.post(path, data={"csrf": csrf_of(first.text)}).status_code == 303
        assert handle.status() == "cancelled"
        assert http.get("/login", follow_redirects=False).status_code == 303  # nothing to log in with


# -- what the pages show -----------------------------------------------------------------------------------


def _only_our_script(html: str) -> None:
    assert INJECTED not in html
    assert html.count("<script") == 1, "a page carries only its own script tag"
    assert '<script src="/static/dashboard.js" defer></script>' in html


def test_html_stored_by_a_workflow_is_shown_escaped(base, browser_session, database_url):
    echoed = zart.start(
        dashboard_app.echo, {"note": INJECTED}, id=unique("echo<b>"), database_url=database_url
    )
    assert echoed.result(timeout=30) == {"note": INJECTED}
    doomed_id = unique("doomed")
    doomed = zart.start(
        dashboard_app.doomed, {"id": doomed_id, "item": INJECTED}, id=doomed_id, database_url=database_url
    )
    with pytest.raises(zart.WorkflowFailed):
        doomed.result(timeout=30)
    order = start_order(database_url, item=INJECTED)
    wait_status(order, "waiting")
    zart.send_event(order.id, "approved", {"by": INJECTED}, database_url=database_url)
    assert order.result(timeout=30)["approval"] == {"by": INJECTED}

    for handle in (echoed, doomed, order):
        html = page_of(browser_session, handle.id)
        _only_our_script(html)
        assert "&lt;script&gt;alert(" in html, handle.id
    assert "cannot ship &lt;script&gt;" in page_of(browser_session, doomed.id)  # error and traceback
    listing = browser_session.get("/executions", params={"id": "echo<b>"}).text
    _only_our_script(listing)
    assert "echo&lt;b&gt;" in listing and "<b>" not in listing
    _only_our_script(browser_session.get("/").text)


def test_a_live_request_gets_the_page_fragment_with_its_server_time(browser_session, database_url):
    handle = start_order(database_url)
    wait_status(handle, "waiting")
    path = "/executions/" + quote(handle.id, safe="")
    full = browser_session.get(path)
    fragment = browser_session.get(path, headers={"X-Zart-Live": "1"})
    assert full.text.startswith("<!doctype html>")
    assert "<html" not in fragment.text and 'id="timeline"' in fragment.text
    assert re.fullmatch(r"app;dur=\d+\.\d", fragment.headers["server-timing"])
    for header in ("content-security-policy", "x-frame-options", "x-content-type-options"):
        assert header in full.headers
    handle.cancel()


def test_the_timeline_and_history_of_an_execution(browser_session, database_url):
    handle = start_order(database_url)
    wait_status(handle, "waiting")
    html = page_of(browser_session, handle.id)
    for key in ("dash-reserve#1", "dash-charge#1", "dash-pack#1", "dash-pack#2", "event:approved#1"):
        assert f'<g class="row" data-key="{key}"' in html
    # charge#1: a failed attempt, then a retry that succeeded.
    charge = html.split('data-key="dash-charge#1"', 1)[1].split("</g>", 1)[0]
    assert 'class="bar bar-failed" data-attempt="1"' in charge
    assert 'class="bar bar-succeeded" data-attempt="2"' in charge
    assert 'class="mark-retry"' in charge
    waiting = html.split('data-key="event:approved#1"', 1)[1].split("</g>", 1)[0]
    assert "bar-wait" in waiting and "mark-deadline-later" in waiting  # its deadline is an hour away
    assert "card network busy for lamp" in html  # the failed attempt's error and traceback
    handle.cancel()


def test_executions_are_filtered_and_paged_by_keyset(browser_session, database_url):
    group = unique("page")
    ids = [f"{group}-{index:03d}" for index in range(PAGE_SIZE * 2 + 7)]
    handles = zart.start_many(dashboard_app.echo, list(range(len(ids))), ids, database_url=database_url)
    for handle in handles:
        handle.result(timeout=60)
    seen: list[str] = []
    path: str | None = "/executions?" + f"id={group}"
    pages = 0
    while path:
        html = browser_session.get(path).text
        seen += re.findall(r'<tr data-id="([^"]+)"', html)
        found = re.search(r'id="next-page" href="([^"]+)"', html)
        path = found.group(1).replace("&amp;", "&") if found else None
        pages += 1
    assert seen == ids  # each once, in id order
    assert pages == 3

    # Newest first, the same way through the unfiltered-by-id order of one workflow and a time range.
    newest = browser_session.get("/executions", params={"workflow": "dash-echo", "status": "completed"}).text
    shown = re.findall(r'<tr data-id="([^"]+)" data-status="([^"]+)"', newest)
    assert len(shown) == PAGE_SIZE and {status for _, status in shown} == {"completed"}
    empty = browser_session.get("/executions", params={"id": group, "until": "2001-01-01T00:00"}).text
    assert 'id="no-executions"' in empty


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ({"status": "exploded"}, 400, "unknown status 'exploded'"),
        ({"since": "yesterday"}, 400, "'since' must be a time"),
        ({"since": "2026-01-02T00:00", "until": "2026-01-01T00:00"}, 400, "must be later than"),
        ({"colour": "red"}, 400, "unknown query parameter 'colour'"),
        ({"workflow": "x" * 500}, 422, "the workflow filter must be 1 to 200 characters long"),
        ({"id": "a\x00b"}, 422, "the id prefix"),
    ],
)
def test_a_bad_filter_is_a_page_that_says_what_is_wrong(browser_session, query, status, message):
    answer = browser_session.get("/executions", params=query)
    assert answer.status_code == status
    assert message in unescape(answer.text)


def test_an_unknown_execution_is_a_404_page(browser_session):
    answer = browser_session.get("/executions/" + quote("no/such<id>", safe=""))
    assert answer.status_code == 404
    assert "no execution with id &#39;no/such&lt;id&gt;&#39;" in answer.text
    # Outside the API, an unknown path or method is a page too; under /v1 it is the API's JSON.
    unknown = browser_session.get("/no/such/page")
    assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("text/html")
    assert browser_session.get("/executions/x/cancel").status_code == 405
    assert browser_session.get("/v1/executions").headers["content-type"] == "application/json"


# -- actions (as a form posts them without the script; the browser test posts them with it) ---------------


def _act(http: httpx.Client, execution_id: str, action: str, **fields: str) -> httpx.Response:
    csrf = csrf_of(page_of(http, execution_id))
    return http.post(f"/executions/{quote(execution_id, safe='')}/{action}", data={"csrf": csrf, **fields})


def test_send_an_event_pause_unpause_and_fork_from_the_page(browser_session, database_url):
    handle = start_order(database_url)
    wait_status(handle, "waiting")
    paused = _act(browser_session, handle.id, "pause")
    assert paused.status_code == 303 and paused.headers["location"].endswith("?done=pause")
    assert handle.status() == "paused"
    assert _act(browser_session, handle.id, "unpause").status_code == 303
    sent = _act(browser_session, handle.id, "event", name="approved", payload='{"by": "ops"}', key="")
    assert sent.status_code == 303
    assert handle.result(timeout=30)["approval"] == {"by": "ops"}
    forked = _act(browser_session, handle.id, "fork", from_step="4")
    assert forked.status_code == 303
    new_id = forked.headers["location"].split("/executions/", 1)[1].split("?", 1)[0]
    assert zart.get(new_id.replace("%2F", "/"), database_url=database_url).info().forked_from == handle.id


def test_a_failed_execution_is_resumed_from_the_page(browser_session, database_url):
    doomed_id = unique("doomed")
    handle = zart.start(
        dashboard_app.doomed, {"id": doomed_id, "item": "vase"}, id=doomed_id, database_url=database_url
    )
    with pytest.raises(zart.WorkflowFailed):
        handle.result(timeout=30)
    assert 'id="resume"' in page_of(browser_session, handle.id)
    assert _act(browser_session, handle.id, "resume").status_code == 303
    wait_until(lambda: handle.info().resumes == 1 and handle.status() == "failed", 30, what="a resumed run")


@pytest.mark.parametrize(
    ("action", "fields", "status", "message"),
    [
        ("event", {"name": "approved", "payload": "{not json"}, 400, "the payload is not valid JSON"),
        ("event", {"name": "", "payload": ""}, 422, "the event name must be 1 to 255 characters"),
        ("fork", {"from_step": "no-such-step"}, 404, "no-such-step"),
        ("resume", {}, 409, "cancelled execution can be resumed"),
    ],
)
def test_a_bad_action_is_a_page_that_says_what_is_wrong(
    browser_session, database_url, action, fields, status, message
):
    handle = start_order(database_url)
    wait_status(handle, "waiting")
    answer = _act(browser_session, handle.id, action, **fields)
    assert answer.status_code == status, answer.text
    assert message in unescape(answer.text)
    assert handle.status() == "waiting"
    live = browser_session.post(
        f"/executions/{quote(handle.id, safe='')}/{action}",
        data={"csrf": csrf_of(page_of(browser_session, handle.id)), **fields},
        headers={"X-Zart-Live": "1"},
    )
    assert live.status_code == status
    assert message in live.json()["error"]["message"]
    handle.cancel()


# -- a worker killed mid-step ------------------------------------------------------------------------------


def test_a_worker_killed_mid_step_shows_as_an_abandoned_attempt_and_the_run_completes(
    fresh_database_url, tmp_path
):
    """SIGKILL the worker while a step runs: another worker takes the execution over, the checkpointed
    step before it does not run again, and the page's timeline shows the killed attempt as abandoned
    next to the one that succeeded. (A database of its own: no other worker may take the step.)"""
    url = fresh_database_url
    env = server_env(url, ZART_API_TOKEN=TOKEN)
    server = ServeProcess(env, "--app", APP)
    marker = tmp_path / "first-attempt"
    first = WorkerProcess(env, app=APP)
    second = None
    try:
        base = server.wait_ready()
        first.wait_started()
        execution_id = unique("crash")
        handle = zart.start(dashboard_app.crash, {"marker": str(marker)}, id=execution_id, database_url=url)
        wait_until(marker.exists, 30, what="the first attempt of dash-stall")
        first.process.kill()
        first.process.wait()
        second = WorkerProcess(env, app=APP)
        assert handle.result(timeout=60) == "done"
        with logged_in(base) as http:
            html = page_of(http, execution_id)
    finally:
        assert server.stop() == 0, server.log()
        first.stop()
        if second is not None:
            second.stop()
    stalled = html.split('data-key="dash-stall#1"', 1)[1].split("</g>", 1)[0]
    assert 'class="bar bar-abandoned" data-attempt="1"' in stalled
    assert 'class="bar bar-succeeded" data-attempt="2"' in stalled
    reserved = html.split('data-key="dash-reserve#1"', 1)[1].split("</g>", 1)[0]
    assert reserved.count('class="bar ') == 1  # checkpointed before the kill: not run again
    assert [a.attempt for a in handle.attempts() if a.step_key == "dash-reserve#1"] == [1]


def test_a_parent_links_its_children_and_a_child_its_parent(browser_session, database_url):
    parent_id = unique("parent")
    handle = zart.start(
        dashboard_app.parent, {"gift": "<i>book</i>"}, id=parent_id, database_url=database_url
    )
    assert handle.result(timeout=30) == {"gift": "<i>book</i>"}
    (child,) = handle.children()
    html = page_of(browser_session, parent_id)
    assert f'<a href="/executions/{quote(child.id, safe="")}">' in html  # the children table
    child_page = page_of(browser_session, child.id)
    assert f'<dd id="parent"><a href="/executions/{quote(parent_id, safe="")}">' in child_page
    _only_our_script(child_page)
