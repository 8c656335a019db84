"""The dashboard in a real browser: headless Chromium (Debian's, which the README's test command
installs when it is missing), driven by Playwright, against `zart serve` and a worker.

An operator logs in with the token, finds a failed execution by filtering, opens it and reads its
timeline (each attempt a bar), sends an event from a waiting execution's page and watches it
complete without the page reloading, and cancels another. Each page is saved as a screenshot under
test-artifacts/dashboard/ (or $ZART_TEST_ARTIFACTS/dashboard/); with ZART_UPDATE_DOC_SCREENSHOTS=1
they also replace the ones docs/dashboard.md shows.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from playwright.sync_api import Page, expect

import zart
from zart.queue_admin import set_queue

from .apps import dashboard_app
from .conftest import REPO_ROOT
from .test_browser import browser  # noqa: F401 - the fixture
from .test_dashboard import TOKEN, dashboard_serving, start_order, unique, wait_status

ARTIFACTS = Path(os.environ.get("ZART_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts")) / "dashboard"
DOC_IMAGES = REPO_ROOT / "docs" / "images"
PAGES = ("login", "overview", "executions", "execution", "queues", "schedules")


def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("ZART_UPDATE_DOC_SCREENSHOTS") == "1":
        shutil.copy(path, DOC_IMAGES / f"dashboard-{name}.png")


def test_docs_show_a_screenshot_of_each_page():
    text = (REPO_ROOT / "docs" / "dashboard.md").read_text()
    for name in PAGES:
        image = f"images/dashboard-{name}.png"
        assert f"]({image})" in text, name
        assert (REPO_ROOT / "docs" / image).stat().st_size > 10_000, name


def test_an_operator_finds_opens_and_acts_on_executions(browser, database_url):  # noqa: F811
    with dashboard_serving(database_url) as base:
        zart.schedule(
            "dash-nightly",
            "0 3 * * *",
            dashboard_app.nightly,
            timezone="Europe/Berlin",
            database_url=database_url,
        )
        set_queue("dash-reports", concurrency=2, rate="10/1s", database_url=database_url)
        doomed_id = unique("doomed")
        doomed = zart.start(
            dashboard_app.doomed, {"id": doomed_id, "item": "teapot"}, id=doomed_id, database_url=database_url
        )
        to_approve, to_cancel = start_order(database_url, "chair"), start_order(database_url, "desk")
        wait_status(to_approve, "waiting")
        wait_status(to_cancel, "waiting")
        wait_until_failed(doomed)

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("dialog", lambda dialog: dialog.accept())  # every action's confirmation

        # Log in: any page leads to the login form first.
        page.goto(f"{base}/executions")
        expect(page).to_have_url(re.compile(r"/login\?next="))
        shoot(page, "login")
        page.fill("input[name=token]", "wrong")
        page.click("form[action='/login'] button")
        expect(page.locator("#login-error")).to_be_visible()
        page.fill("input[name=token]", TOKEN)
        page.click("form[action='/login'] button")
        expect(page).to_have_url(f"{base}/executions")

        page.goto(f"{base}/")
        expect(page.locator("#counts")).to_contain_text("dash-doomed")
        expect(page.locator("#throughput")).to_be_visible()
        shoot(page, "overview")

        # Find the failed execution by filtering.
        page.goto(f"{base}/executions")
        page.select_option("select[name=status]", "failed")
        page.fill("input[name=workflow]", "dash-doomed")
        page.click("#filters button")
        row = page.locator(f'tr[data-id="{doomed_id}"]')
        expect(row).to_be_visible()
        assert (
            page.locator("tr[data-id]").evaluate_all("rows => rows.map(r => r.dataset.status)")
            == ["failed"] * page.locator("tr[data-id]").count()
        )
        shoot(page, "executions")

        # Open it: the timeline shows its steps, and each attempt of the failing one as a bar.
        row.locator("a").click()
        expect(page.locator("#execution-id")).to_have_text(doomed_id)
        explode = page.locator('#timeline g.row[data-key="dash-explode#1"] rect.bar-failed')
        assert explode.evaluate_all("bars => bars.map(b => b.dataset.attempt)") == ["1", "2", "3"]
        expect(page.locator('#timeline g.row[data-key="dash-explode#1"] .mark-retry')).to_have_count(2)
        expect(page.locator('#timeline g.row[data-key="dash-reserve#1"] rect.bar-succeeded')).to_have_count(1)
        expect(page.locator("#error")).to_contain_text("cannot ship teapot")
        expect(page.locator("#resume")).to_be_visible()

        # Send an event from a waiting execution's page and watch it complete, without a reload.
        page.goto(f"{base}/executions/{to_approve.id}")
        expect(page.locator("#status")).to_have_text("waiting")
        page.evaluate("window.zartNotReloaded = true")
        page.fill("#send-event input[name=name]", "approved")
        page.fill("#send-event textarea[name=payload]", '{"by": "ada"}')
        page.click("#send-event button")
        expect(page.locator("#notice")).to_have_text("Event 'approved' sent.")
        expect(page.locator("#status")).to_have_text("completed", timeout=30_000)
        expect(page.locator("#result")).to_contain_text('"by": "ada"')
        assert page.evaluate("window.zartNotReloaded") is True
        assert to_approve.result(timeout=10)["approval"] == {"by": "ada"}
        shoot(page, "execution")

        # Cancel another.
        page.goto(f"{base}/executions/{to_cancel.id}")
        page.click("#cancel button")
        expect(page.locator("#status")).to_have_text("cancelled", timeout=30_000)
        assert to_cancel.status() == "cancelled"

        page.goto(f"{base}/queues")
        expect(page.locator("#queues")).to_contain_text("dash-reports")
        shoot(page, "queues")
        page.goto(f"{base}/schedules")
        expect(page.locator("#schedules")).to_contain_text("dash-nightly")
        shoot(page, "schedules")
        page.close()


def wait_until_failed(handle: zart.ExecutionHandle) -> None:
    wait_status(handle, "failed")
