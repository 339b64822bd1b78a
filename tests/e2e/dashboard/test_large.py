"""The dashboard on large data: 100,000 instances (made through the real SQLite store's API, in
a separate process) stay paged, with their counts; an instance of 5,000 events renders its
timeline and the page keeps painting frames (a requestAnimationFrame tick arrives after the
render, and after scrolling through it). No timing is asserted: speed lives in bench/."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.dashboard.support import DashboardServer, fetch, go, next_frame, open_page, shot
from tests.e2e.harness import REPO_ROOT

pytestmark = pytest.mark.timeout(900)

INSTANCES = 100_000
BIG_EVENTS = 5_000
PAGE = 50


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    db = tmp_path_factory.mktemp("large") / "large.db"
    # synchronous=normal: the seeding's speed; the data goes through the store's own writes.
    url = f"sqlite:///{db}?synchronous=normal"
    seeded = subprocess.run(
        [sys.executable, "-m", "tests.e2e.dashboard.seed", url, str(INSTANCES), str(BIG_EVENTS)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=800,
        check=False,
    )
    assert seeded.returncode == 0, seeded.stderr[-3000:]
    with DashboardServer(["bulk-a", "bulk-b"], store=url) as running:
        yield running


def ids(page: Any) -> list[str]:
    return [
        tr.get_attribute("data-instance")
        for tr in page.locator("[data-testid=instances] tbody tr[data-instance]").all()
    ]


def test_the_list_stays_paged_on_100000_instances(
    server: DashboardServer, page: Any, artifacts: Path
) -> None:
    open_page(page, server.url, ready="/")
    counts = {
        c.get_attribute("data-count-status"): c.inner_text()
        for c in page.locator("[data-count-status]").all()
    }
    assert counts["ALL"].replace(",", "").endswith(str(INSTANCES + 1)), counts
    assert counts["FAILED"].replace(",", "").endswith(str(INSTANCES // 4)), counts
    first = ids(page)
    assert len(first) == PAGE and first[0] == "big" and first[1] == f"bulk-{INSTANCES - 1:06d}"
    assert next_frame(page)
    shot(page, artifacts, "large-list", full_page=False)

    page.locator("[data-testid=next]").click()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=page-label]').textContent.startsWith('page 2')"
    )
    second = ids(page)
    assert len(second) == PAGE and not set(first) & set(second)
    assert second[0] == f"bulk-{INSTANCES - PAGE:06d}"  # newest first, no row skipped
    page.locator("[data-testid=prev]").click()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=page-label]').textContent.startsWith('page 1')"
    )
    assert ids(page) == first

    # Filters combine on the server: bulk-b's FAILED instances are every 4th from 1.
    go(page, "#/?app=bulk-b&status=FAILED", "/")
    filtered = ids(page)
    assert len(filtered) == PAGE and filtered[:2] == [
        f"bulk-{INSTANCES - 3:06d}",
        f"bulk-{INSTANCES - 7:06d}",
    ]
    # A page token from other filters is refused with a clear 400.
    token = fetch(page, "api/instances?app=bulk-a")["body"]["next"]
    assert fetch(page, f"api/instances?app=bulk-b&page={token}")["status"] == 400


def test_an_instance_of_5000_events_renders_its_timeline(
    server: DashboardServer, page: Any, artifacts: Path
) -> None:
    open_page(page, server.url + "#/instance/bulk-a/big", ready="/instance/bulk-a/big")
    assert next_frame(page)  # the page paints again after the render: not frozen
    timeline = fetch(page, "api/timeline?app=bulk-a&id=big")["body"]
    history = fetch(page, "api/history?app=bulk-a&id=big&limit=1")["body"]
    assert history["total"] == BIG_EVENTS
    canvas = page.locator("[data-testid=timeline] canvas")
    assert canvas.get_attribute("data-bars") == str(len(timeline["bars"])) and len(timeline["bars"]) > 2000
    assert {b["app"] for b in timeline["bars"]} == {"bulk-a", "bulk-b"}
    assert any(b["outcome"] == "failed" for b in timeline["bars"])
    assert any(b["attempt"] > 1 for b in timeline["bars"])
    # Only the rows in view are drawn, and the history table holds one page.
    drawn = int(canvas.get_attribute("data-drawn"))
    assert 0 < drawn < 60
    assert page.locator("[data-testid=history] tbody tr.event").count() == 200
    shot(page, artifacts, "large-instance", full_page=False)

    # Scroll to the end of the timeline: the last bars get drawn, and frames keep coming.
    page.locator("[data-testid=timeline]").evaluate("e => { e.scrollTop = e.scrollHeight; }")
    assert next_frame(page)
    last = page.evaluate("() => window.dashboardTimeline.drawn.last")
    assert last == len(timeline["bars"])
    page.locator("[data-testid=timeline]").scroll_into_view_if_needed()
    shot(page, artifacts, "large-timeline-end", full_page=False)
    page.locator("[data-testid=history-next]").click()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=history] tbody tr.event').dataset.seq === '200'"
    )
