"""Dashboards against real warehouses: check, static build, tenant isolation, escaping."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tenantry.querying import INTERNAL_VIEWS

from benchmarks.dashboards import synthetic_warehouse
from tenantry import resources
from tenantry.dashboards import DashboardError, Selection, build, load_definitions
from tenantry.dashboards.build import render_dashboard
from tenantry.dashboards.check import check
from tenantry.dashboards.cli import check_command
from tenantry.dashboards.model import load_planned
from tenantry.dashboards.query import connect
from tenantry.dashboards.render import plotly_js

HOSTILE_METER = "</script><script>alert('meter')</script>"
HOSTILE_SERVICE = '"><img src=x onerror=alert(1)>'
# ids that look like SQL, or are prefixes of each other; each with figures no other tenant has
TENANTS = {"acme": 7340001.0, "acme-2": 7340002.0, "drop.table--x": 7340003.0, "1:or:1": 7340004.0}


@pytest.fixture(scope="session")
def demo_warehouse(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp() / "dashboards-demo"
    if not (root / "warehouse" / "tenantry.duckdb").exists():
        from tenantry.demo.run import run

        run(root, n_requests=200)
    return root / "warehouse"


@pytest.fixture(scope="module")
def tricky_warehouse(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tricky")
    synthetic_warehouse(root, list(TENANTS), days=2, services=("api", HOSTILE_SERVICE),
                        meters=("api_calls", HOSTILE_METER), requests_of=TENANTS)
    return root


def copy_defs(tmp_path: Path) -> Path:
    folder = tmp_path / "defs"
    shutil.copytree(resources.dashboards_dir(), folder)
    return folder


def without_plotly(text: str) -> str:
    return text.replace(plotly_js(), "")


def foreign_ids(text: str, me: str, ids) -> list[str]:
    body = without_plotly(text)
    return [t for t in ids if t != me and re.search(rf"(?<![\w.:@-]){re.escape(t)}(?![\w.:@-])", body)]


def figures(tenant: str) -> list[str]:
    """How a tenant's pinned hourly requests appear: per service and summed over both services."""
    return [form for n in (int(TENANTS[tenant]), 2 * int(TENANTS[tenant])) for form in (str(n), f"{n:,}")]


def foreign_figures(text: str, me: str) -> list[str]:
    body = without_plotly(text)
    return [t for t in TENANTS if t != me and any(f in body for f in figures(t))]


# -- every panel runs -----------------------------------------------------------------------


def test_check_finds_no_error_on_the_demo_warehouse(demo_warehouse):
    errors = [str(f) for f in check(demo_warehouse) if f.level == "error"]
    assert errors == []


def test_every_panel_runs_on_the_demo_warehouse_in_fleet_and_tenant_scope(demo_warehouse):
    planned = set(load_planned())
    for tenant in (None, "acme"):
        con = connect(demo_warehouse, tenant)
        try:
            for name, d in load_definitions().items():
                if (tenant is None and d.tenant_only) or (tenant is not None and not d.per_tenant):
                    continue
                _, results = render_dashboard(con, d, Selection("all", "day"), tenant)
                for p, data in results:
                    assert data.status in ("ok", "empty", "missing"), (tenant, name, p.title, data.message)
                    if data.status == "missing":
                        # only marts not landed yet may be missing, and in tenant scope the
                        # operator-only views (our cost and margin, leakage) are never copied
                        view = re.search(r"view (\w+) missing", data.message).group(1)
                        assert view in planned or (tenant is not None and view in INTERNAL_VIEWS), view
        finally:
            con.close()


def test_the_demo_shows_data_on_the_sre_dashboard(demo_warehouse):
    con = connect(demo_warehouse)
    try:
        _, results = render_dashboard(con, load_definitions()["sre"], Selection("all", "day"))
    finally:
        con.close()
    assert [p.title for p, data in results if data.status == "ok"][:4] == [
        "Requests per period by tenant", "Error rate by tenant", "p95 latency per period by tenant",
        "Error rate heatmap (tenant x period)"]


def test_check_fails_on_a_column_the_view_does_not_have(demo_warehouse, tmp_path):
    folder = copy_defs(tmp_path)
    f = folder / "sre.yaml"
    f.write_text(f.read_text().replace("max(worst_p95_ms) as p95_ms", "max(p95_latency) as p95_ms", 1))
    errors = [f for f in check(demo_warehouse, folder) if f.level == "error"]
    assert len(errors) == 1
    assert "sre.yaml: panel 'p95 latency per period by tenant'" in str(errors[0])
    assert "p95_latency" in errors[0].message


def test_check_fails_on_a_view_that_does_not_exist(demo_warehouse, tmp_path):
    folder = copy_defs(tmp_path)
    f = folder / "sre.yaml"
    text = f.read_text()
    assert "from tenant_slo_daily where" in text
    f.write_text(text.replace("from tenant_slo_daily where", "from tenant_slo_daily_v2 where", 1))
    errors = [f for f in check(demo_warehouse, folder) if f.level == "error"]
    assert errors and "unknown view 'tenant_slo_daily_v2'" in str(errors[0])


def test_check_fails_on_a_range_macro_over_a_mart_that_does_not_exist(demo_warehouse, tmp_path):
    folder = copy_defs(tmp_path)
    f = folder / "sre.yaml"
    text = f.read_text()
    f.write_text(text.replace("hourly_rollup_range('tenant_sre_rollup'", "hourly_rollup_range('tenant_sre_rollup2'", 1))
    errors = [f for f in check(demo_warehouse, folder) if f.level == "error"]
    assert errors and "unknown view 'tenant_sre_rollup2'" in str(errors[0])


def test_check_fails_when_a_chart_field_is_not_in_the_result(demo_warehouse, tmp_path):
    folder = copy_defs(tmp_path)
    f = folder / "sre.yaml"
    f.write_text(f.read_text().replace("y: p95_ms", "y: p95", 1))
    errors = [f for f in check(demo_warehouse, folder) if f.level == "error"]
    assert len(errors) == 1 and "column(s) p95 not in the query's result" in errors[0].message


def test_check_binds_panels_on_planned_views_against_their_columns(demo_warehouse, tmp_path):
    folder = with_future_mart(tmp_path)
    f = folder / "sre.yaml"
    f.write_text(f.read_text().replace("select day, n from future_mart", "select day, n_count from future_mart"))
    errors = [f for f in check(demo_warehouse, folder) if f.level == "error"]
    assert len(errors) == 1 and "planned columns" in errors[0].message
    assert "n_count" in errors[0].message


def test_check_requires_fleet_only_for_views_without_tenant_id(demo_warehouse, tmp_path):
    folder = copy_defs(tmp_path)
    f = folder / "security.yaml"
    f.write_text(f.read_text().replace("    fleet_only: true\n", "", 1))
    errors = [f for f in check(demo_warehouse, folder) if f.level == "error"]
    assert len(errors) == 1 and "has no tenant_id" in errors[0].message and "fleet_only" in errors[0].message


def test_check_command_exit_codes(demo_warehouse, tmp_path):
    ok = CliRunner().invoke(check_command, ["--warehouse", str(demo_warehouse)])
    assert ok.exit_code == 0, ok.output
    assert "0 error(s)" in ok.output
    missing = CliRunner().invoke(check_command, ["--warehouse", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0 and "no warehouse here" in missing.output


# -- static build ---------------------------------------------------------------------------


def test_build_writes_an_index_and_a_page_per_fleet_dashboard(demo_warehouse, tmp_path):
    pages = build(demo_warehouse, tmp_path / "out")
    assert [p.name for p in pages] == ["index.html", "overview.html", "product.html", "security.html", "sre.html"]
    index = pages[0].read_text()
    for p in pages[1:]:
        assert f"href='{p.name}'" in index


def test_built_pages_load_nothing_from_the_network(demo_warehouse, tmp_path):
    for page in build(demo_warehouse, tmp_path / "out"):
        text = without_plotly(page.read_text())
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), page.name
        assert "@import" not in text and "url(http" not in text
        assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert plotly_js() in (tmp_path / "out" / "sre.html").read_text()  # charts work offline


def with_future_mart(tmp_path: Path) -> Path:
    """The shipped definitions plus a panel on a planned mart no warehouse has yet."""
    folder = copy_defs(tmp_path)
    with open(folder / "_planned_views.yaml", "a") as f:
        f.write("future_mart: {owner: a later issue, columns: {tenant_id: varchar, day: date, n: bigint}}\n")
    with open(folder / "sre.yaml", "a") as f:
        f.write("  - title: Future\n    kind: table\n    sql: select day, n from future_mart\n")
    return folder


def test_a_missing_view_renders_as_not_available_yet(demo_warehouse, tmp_path):
    build(demo_warehouse, tmp_path / "out", definitions=with_future_mart(tmp_path))
    sre = (tmp_path / "out" / "sre.html").read_text()
    assert '<p class=missing>not available yet (view future_mart missing)</p>' in sre
    assert sre.count('data-status="ok"') >= 4  # the other panels still render


def test_check_reports_a_missing_planned_view_without_failing(demo_warehouse, tmp_path):
    findings = check(demo_warehouse, with_future_mart(tmp_path))
    assert not [f for f in findings if f.level == "error"]
    assert any(f.level == "missing" and "future_mart missing; planned by a later issue" in f.message
               for f in findings)


def test_a_tenant_build_has_only_per_tenant_pages(demo_warehouse, tmp_path):
    pages = build(demo_warehouse, tmp_path / "acme", tenant="acme")
    assert [p.name for p in pages] == ["index.html", "overview.html", "product.html", "security.html", "sre.html",
                                       "tenant.html"]
    security = (tmp_path / "acme" / "security.html").read_text()
    assert "Unattributed telemetry share" not in security  # fleet-only panels are left out


def test_a_tenant_build_of_the_demo_names_no_other_tenant(demo_warehouse, tmp_path):
    others = ["globex", "initech", "umbrella", "hooli", "piedpiper", "__unattributed__"]
    for page in build(demo_warehouse, tmp_path / "acme", tenant="acme"):
        assert foreign_ids(page.read_text(), "acme", others) == [], page.name


@pytest.mark.parametrize("tenant", list(TENANTS))
def test_a_tenant_build_holds_no_other_tenants_id_or_figures(tricky_warehouse, tmp_path, tenant):
    pages = build(tricky_warehouse, tmp_path / "out", tenant=tenant, selection=Selection("all", "hour"))
    seen_own = False
    for page in pages:
        text = page.read_text()
        assert foreign_ids(text, tenant, TENANTS) == [], page.name
        assert foreign_figures(text, tenant) == [], page.name
        seen_own |= any(f in text for f in figures(tenant))
    assert seen_own  # the tenant does see its own figures


@pytest.mark.parametrize("bad", ["<script>alert(1)</script>", "acme' or '1'='1", "", "a" * 129, "acme\n"])
def test_a_tenant_build_refuses_invalid_ids(tricky_warehouse, tmp_path, bad):
    with pytest.raises(DashboardError, match="not valid"):
        build(tricky_warehouse, tmp_path / "out", tenant=bad)


def test_hostile_meter_and_service_names_are_escaped_in_every_page(tricky_warehouse, tmp_path):
    pages = build(tricky_warehouse, tmp_path / "fleet") + build(tricky_warehouse, tmp_path / "acme", tenant="acme")
    shown = 0
    for page in pages:
        text = without_plotly(page.read_text())
        assert "<script>alert" not in text and "<img src=x" not in text, page.name
        # every script block is ours: the nonce'd boot script or JSON data
        for tag in re.findall(r"<script[^>]*>", text):
            assert re.fullmatch(r"<script (nonce=[\w-]+|type=application/json id=spec-\d+)>", tag), tag
        shown += text.count("&lt;/script&gt;") + text.count("\\u003c/script\\u003e")
        shown += text.count("&quot;&gt;&lt;img src=x")
    assert shown > 0  # the hostile names are shown, as text


def test_strict_build_raises_after_writing_when_a_panel_fails(demo_warehouse, tmp_path):
    folder = copy_defs(tmp_path)
    f = folder / "sre.yaml"
    f.write_text(f.read_text().replace("y: p95_ms", "y: p95", 1))
    with pytest.raises(DashboardError, match="panel 'p95 latency per period by tenant'"):
        build(demo_warehouse, tmp_path / "out", definitions=folder, strict=True)
    assert "column(s) p95 not in" in (tmp_path / "out" / "sre.html").read_text()
