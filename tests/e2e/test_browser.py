"""Dashboards in a real browser (headless Chromium): built pages and the live app.

Every page loads with no console error (a CSP violation is one), every chart with data draws an
SVG, the pickers change what is shown, and a tenant URL shows no other tenant. Screenshots go to
test-artifacts/browser/. Needs /usr/bin/chromium (Debian package ``chromium``) and ``playwright``.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
DEMO_TENANTS = ["acme", "globex", "initech", "umbrella", "hooli", "piedpiper"]

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not CHROMIUM.exists(), reason="headless Chromium missing: apt-get install -y --no-install-recommends chromium")]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install playwright")


@pytest.fixture(scope="session")
def demo_warehouse(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp() / "dashboards-demo"
    if not (root / "warehouse" / "tenantry.duckdb").exists():
        from tenantry.demo.run import run

        run(root, n_requests=200)
    return root / "warehouse"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(demo_warehouse):
    import uvicorn

    from tenantry.dashboards.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(demo_warehouse, allowed_hosts=["127.0.0.1"]), host="127.0.0.1", port=port,
                            log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def open_page(browser, url: str):
    """(page, console errors) after the page and its charts settled."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="load")
    page.wait_for_timeout(300)
    return page, errors


def assert_charts_drawn(page, label: str) -> int:
    charts = page.locator("section[data-status=ok] div.chart")
    for i in range(charts.count()):
        assert charts.nth(i).locator("svg.main-svg").count() > 0, f"{label}: chart {i} has no svg"
    return charts.count()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_built_pages_load_cleanly_and_draw_every_chart(browser, demo_warehouse, tmp_path):
    from tenantry.dashboards import build

    pages = build(demo_warehouse, tmp_path / "fleet") + build(demo_warehouse, tmp_path / "acme", tenant="acme")
    drawn = 0
    for f in pages:
        page, errors = open_page(browser, f.as_uri())
        assert errors == [], f"{f}: {errors}"
        drawn += assert_charts_drawn(page, str(f))
        shot(page, f"built-{f.parent.name}-{f.stem}")
        page.close()
    assert drawn >= 6


def test_served_pages_load_cleanly_and_draw_every_chart(browser, server):
    for path in ("/", "/dashboards/overview", "/dashboards/sre", "/dashboards/security", "/dashboards/product",
                 "/tenant/acme", "/tenant/acme/dashboards/tenant", "/tenant/acme/dashboards/sre"):
        page, errors = open_page(browser, server + path + ("?range=30d" if "dashboards" in path else ""))
        assert errors == [], f"{path}: {errors}"
        assert_charts_drawn(page, path)
        shot(page, "served" + path.replace("/", "-").rstrip("-"))
        page.close()


def test_the_period_picker_changes_the_chart(browser, server):
    page, errors = open_page(browser, server + "/dashboards/sre?range=30d&period=day")
    before = page.locator("#spec-0").text_content()
    with page.expect_navigation():
        page.select_option("#pick-period", "hour")
    assert "period=hour" in page.url
    assert page.locator("#pick-period").input_value() == "hour"
    assert page.locator("#spec-0").text_content() != before
    assert_charts_drawn(page, "sre by hour")
    assert errors == []
    shot(page, "served-sre-period-hour")


def test_the_range_picker_reloads_with_the_new_range(browser, server):
    page, errors = open_page(browser, server + "/dashboards/overview?range=30d&period=day")
    with page.expect_navigation():
        page.select_option("#pick-range", "24h")
    assert "range=24h" in page.url
    assert page.locator("#pick-range").input_value() == "24h"
    assert errors == []


def test_the_tenant_picker_opens_a_page_with_only_that_tenant(browser, server):
    page, errors = open_page(browser, server + "/dashboards/sre?range=30d&period=hour")
    with page.expect_navigation():
        page.select_option("#pick-tenant", label="acme")
    assert re.search(r"/tenant/acme/dashboards/sre\?range=30d&period=hour$", page.url)
    body = page.content()
    for other in DEMO_TENANTS[1:] + ["__unattributed__"]:
        # plotly.js is loaded by src, so the page text holds only our markup and data
        assert not re.search(rf"(?<![\w.:@-]){re.escape(other)}(?![\w.:@-])", body), other
    assert "acme" in body
    assert_charts_drawn(page, "tenant acme sre")
    assert errors == []
    shot(page, "served-tenant-acme-sre")


def test_an_html_looking_tenant_url_is_refused_in_the_browser(browser, server):
    page, _ = open_page(browser, server + "/tenant/%3Cimg%20src=x%20onerror=alert(1)%3E")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    assert "no such tenant" in page.content()
    assert page.locator("img").count() == 0 and dialogs == []
