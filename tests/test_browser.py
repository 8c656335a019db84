"""Pages in a real browser: headless Chromium (Debian's, which the README's test command installs when
it is missing), driven by Playwright. The docs' EventSource example (examples/progress.html) follows a
running execution's stream from `zart serve` to its end."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

import zart

from .apps import streams_app
from .conftest import REPO_ROOT
from .test_docs import blocks
from .test_http import serving

PAGE = REPO_ROOT / "examples" / "progress.html"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable)
        yield launched
        launched.close()


def test_the_docs_show_the_page_that_is_tested():
    (shown,) = [b.text for b in blocks("docs/streams.md") if b.lang == "html"]
    assert shown == PAGE.read_text()


def test_an_eventsource_page_follows_a_stream_live_to_its_end(browser, database_url):
    html = PAGE.read_text()
    with serving(database_url, "tests.apps.streams_app") as base:
        handle = zart.start(streams_app.stream_progress, 8, database_url=database_url)
        page = browser.new_page()
        # The page comes from the API's own origin, as a page of the application would.
        page.route(f"{base}/progress.html*", lambda route: route.fulfill(body=html, content_type="text/html"))
        page.goto(f"{base}/progress.html?id={handle.id}")
        page.wait_for_selector("body[data-ended=true]", timeout=30_000)
        assert page.eval_on_selector("#bar", "bar => [bar.value, bar.max]") == [8, 8]
        assert handle.result(timeout=10) == 8
        page.close()
