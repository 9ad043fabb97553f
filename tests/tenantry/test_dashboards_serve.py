"""``tenantry dashboard serve``: routes, pickers, tenant isolation, escaping, read-only under writes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from benchmarks.dashboards import synthetic_warehouse
from tenantry.dashboards.cli import is_loopback, parse_listen, serve_command
from tenantry.dashboards.render import plotly_js
from tenantry.dashboards.serve import create_app

HOSTILE_METER = "</script><script>alert('meter')</script>"
HOSTILE_SERVICE = '"><img src=x onerror=alert(1)>'
TENANTS = {"acme": 8340001.0, "acme-2": 8340002.0, "drop.table--x": 8340003.0}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    synthetic_warehouse(root, list(TENANTS), days=2, services=("api", HOSTILE_SERVICE),
                        meters=("api_calls", HOSTILE_METER), requests_of=TENANTS)
    return root


@pytest.fixture(scope="module")
def client(warehouse) -> TestClient:
    return TestClient(create_app(warehouse), base_url="http://127.0.0.1")


def figures(tenant: str) -> list[str]:
    return [f for n in (int(TENANTS[tenant]), 2 * int(TENANTS[tenant])) for f in (str(n), f"{n:,}")]


def chart_specs(html: str) -> list[dict]:
    return [json.loads(m) for m in re.findall(r"<script type=application/json id=spec-\d+>(.*?)</script>", html)]


def test_index_lists_fleet_dashboards_and_tenants(client):
    r = client.get("/")
    assert r.status_code == 200
    for name in ("overview", "sre", "security", "product"):
        assert f"href='/dashboards/{name}'" in r.text
    assert "/dashboards/tenant'" not in r.text  # the tenant's own dashboard is per tenant only
    assert "value='/tenant/acme'" in r.text and "value='/tenant/drop.table--x'" in r.text


def test_every_dashboard_page_renders_with_security_headers(client):
    for path in ("/dashboards/overview", "/dashboards/sre", "/dashboards/security", "/dashboards/product",
                 "/tenant/acme", "/tenant/acme/dashboards/tenant"):
        r = client.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        nonce = re.search(r"'nonce-([\w-]+)'", csp).group(1)
        assert "default-src 'none'" in csp and "connect-src 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
        for tag in re.findall(r"<script[^>]*>", r.text):
            assert f"nonce={nonce}" in tag or "type=application/json" in tag, (path, tag)


def test_plotly_is_served_from_the_package(client):
    r = client.get("/static/plotly.min.js")
    assert r.status_code == 200 and r.text == plotly_js()
    assert 'src="/static/plotly.min.js"' in client.get("/dashboards/sre").text


def test_the_period_picker_changes_the_buckets(client):
    by_hour = chart_specs(client.get("/dashboards/sre?range=7d&period=hour").text)[0]
    by_day = chart_specs(client.get("/dashboards/sre?range=7d&period=day").text)[0]
    assert len(by_hour["data"][0]["x"]) > len(by_day["data"][0]["x"]) >= 1
    assert "selected>hour" in client.get("/dashboards/sre?period=hour").text


def test_the_range_picker_changes_what_is_counted(client):
    def total(html):
        return sum(sum(t["y"]) for t in chart_specs(html)[0]["data"])
    assert total(client.get("/dashboards/sre?range=24h&period=day").text) < total(
        client.get("/dashboards/sre?range=7d&period=day").text)


@pytest.mark.parametrize("query", ["range=1y", "period=fortnight", "range=7d%27%3B%20drop", "period="])
def test_picker_values_not_offered_are_400(client, query):
    r = client.get(f"/dashboards/sre?{query}")
    assert r.status_code == 400 and "choose one of" in r.text


def test_fleet_pages_offer_tenant_links_that_keep_the_pickers(client):
    html = client.get("/dashboards/sre?range=24h&period=hour").text
    assert "value='/tenant/acme/dashboards/sre?range=24h&amp;period=hour'" in html


@pytest.mark.parametrize("tenant", list(TENANTS))
def test_tenant_urls_show_no_other_tenants_id_or_figures(client, tenant):
    for path in ("", "/dashboards/overview", "/dashboards/sre?period=hour", "/dashboards/security",
                 "/dashboards/product", "/dashboards/tenant?period=hour"):
        html = client.get(f"/tenant/{tenant}{path}").text
        for other in TENANTS:
            if other == tenant:
                continue
            assert not re.search(rf"(?<![\w.:@-]){re.escape(other)}(?![\w.:@-])", html), (path, other)
            assert not any(f in html for f in figures(other)), (path, other)
    assert any(f in client.get(f"/tenant/{tenant}/dashboards/sre?period=hour").text for f in figures(tenant))


def test_tenant_pages_have_no_tenant_picker(client):
    html = client.get("/tenant/acme/dashboards/sre").text
    assert "pick-tenant" not in html and "/dashboards/sre'" not in html


@pytest.mark.parametrize("path", [
    "/tenant/%3Cscript%3Ealert(1)%3C%2Fscript%3E", "/tenant/%3Cimg%20src%3Dx%3E/dashboards/sre",
    "/tenant/acme'%20or%20'1'='1/dashboards/sre", "/tenant/__unattributed__", "/tenant/__platform__/dashboards/sre",
    "/tenant/" + "a" * 129, "/tenant/acme%0A/dashboards/sre", "/tenant/-acme",
])
def test_invalid_or_reserved_tenant_ids_are_404_and_not_echoed(client, path):
    r = client.get(path)
    assert r.status_code == 404
    assert "<script>alert" not in r.text and "<img src" not in r.text and "or '1'='1" not in r.text
    assert "no such tenant" in r.text or r.text == "Not Found"  # "%2F" splits the path: no route


def test_tenant_lookup_redirects_valid_ids_and_refuses_others(client):
    r = client.get("/tenant?id=acme-2", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/tenant/acme-2"
    assert client.get("/tenant?id=%3Cb%3Ex", follow_redirects=False).status_code == 404


@pytest.mark.parametrize("path", ["/dashboards/nope", "/dashboards/tenant", "/tenant/acme/dashboards/nope",
                                  "/dashboards/..%2F..%2Fetc%2Fpasswd"])
def test_unknown_or_out_of_scope_dashboards_are_404(client, path):
    assert client.get(path).status_code == 404


def test_hostile_names_are_escaped_in_served_pages(client):
    for path in ("/dashboards/overview", "/dashboards/sre?period=hour", "/dashboards/product",
                 "/tenant/acme/dashboards/tenant", "/tenant/acme/dashboards/sre"):
        html = client.get(path).text
        assert "<script>alert" not in html and "<img src=x" not in html, path
    assert "&lt;/script&gt;" in client.get("/dashboards/overview").text


def test_a_missing_warehouse_is_503_with_advice(tmp_path):
    c = TestClient(create_app(tmp_path / "nowhere"), base_url="http://127.0.0.1")
    r = c.get("/dashboards/sre")
    assert r.status_code == 503 and "no warehouse here" in r.text


def test_pages_keep_working_while_a_writer_holds_the_database(warehouse, client):
    # a pipeline rebuilding views holds DuckDB's write lock briefly; requests wait instead of failing
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
        "time.sleep(1.0); con.close()"), str(warehouse / "tenantry.duckdb")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        r = client.get("/dashboards/sre")
        assert r.status_code == 200 and 'data-status="ok"' in r.text
        assert time.monotonic() - t0 < 5
    finally:
        holder.wait(timeout=10)


def test_hosts_other_than_loopback_are_refused_by_a_loopback_server(warehouse):
    app = create_app(warehouse, allowed_hosts=["127.0.0.1", "localhost"])
    assert TestClient(app, base_url="http://127.0.0.1").get("/healthz").status_code == 200
    assert TestClient(app, base_url="http://evil.example").get("/healthz").status_code == 400


@pytest.mark.parametrize("listen, expected", [("127.0.0.1:8050", ("127.0.0.1", 8050)), ("[::1]:9", ("::1", 9)),
                                              ("localhost:1", ("localhost", 1))])
def test_parse_listen(listen, expected):
    assert parse_listen(listen) == expected
    assert is_loopback(expected[0])


@pytest.mark.parametrize("listen", ["8050", "host:", ":80", "h:99999", "h:-1"])
def test_parse_listen_refuses_malformed(listen):
    with pytest.raises(click.BadParameter, match="HOST:PORT"):
        parse_listen(listen)


def test_serve_refuses_a_public_address_without_public_flag(warehouse):
    r = CliRunner().invoke(serve_command, ["--warehouse", str(warehouse), "--listen", "0.0.0.0:8050"])
    assert r.exit_code != 0 and "--public" in r.output
