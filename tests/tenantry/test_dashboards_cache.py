"""The materialized mart cache: same answers as the views, tenant isolation, background refresh."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from starlette.testclient import TestClient

from benchmarks.dashboards import synthetic_warehouse
from tenantry.dashboards import Selection, load_definitions
from tenantry.dashboards.build import visible_panels
from tenantry.dashboards import cache as cache_module
from tenantry.dashboards.cache import MartCache, build_snapshot, cache_key, marts_read
from tenantry.dashboards.model import analyze_sql
from tenantry.dashboards.query import connect, relations, run_panel
from tenantry.dashboards.serve import create_app
from tenantry.querying import INTERNAL_VIEWS, QueryError
from tenantry.warehouse import WarehouseError

TENANTS = {"acme": 7110001.0, "acme-2": 7110002.0, "drop.table--x": 7110003.0, "ünï": 7110004.0}
NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.timezone.utc)


def _valid(tenants):
    # "ünï" is not a valid tenant id (ASCII only): the synthetic lake holds it, no page may open it
    return [t for t in tenants if t.isascii()]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    synthetic_warehouse(root, list(TENANTS), days=3, services=("api", "'; drop table x; --"),
                        meters=("api_calls", "<b>m</b>"), requests_of=TENANTS, now=NOW)
    return root


@pytest.fixture(scope="module")
def snap(warehouse):
    return build_snapshot(warehouse, marts_read(load_definitions()))


def test_the_snapshot_holds_every_mart_the_dashboards_read_that_exists(warehouse, snap):
    con = connect(warehouse)
    try:
        existing = set(relations(con))
    finally:
        con.close()
    wanted = marts_read(load_definitions())
    assert set(snap.columns) == wanted & existing
    assert {"tenant_sre_rollup", "fleet_sre_rollup", "tenant_usage_rollup", "noisy_neighbours"} <= set(snap.columns)


def test_marts_only_built_on_are_not_kept(snap):
    tables = {t for (t,) in snap.con.execute("select table_name from duckdb_tables()").fetchall()}
    assert tables == set(snap.columns)  # tenant_sre_hourly was materialized for the rollups, then dropped
    assert "tenant_sre_hourly" not in tables


SELECTIONS = [Selection("all", "day"), Selection("24h", "hour"), Selection("7d", "day"), Selection("30d", "week"),
              Selection("90d", "month")]


@pytest.mark.parametrize("sel", SELECTIONS, ids=lambda s: f"{s.range}-{s.period}")
@pytest.mark.parametrize("tenant", [None, "acme", "drop.table--x"])
def test_every_panel_gives_the_same_rows_cached_and_uncached(warehouse, snap, sel, tenant):
    params = sel.params(NOW)
    base = connect(warehouse, tenant)
    cached = snap.fleet_connection() if tenant is None else snap.tenant_connection(tenant)
    try:
        avail_b, avail_c = relations(base), relations(cached)
        for d in load_definitions().values():
            if (tenant is None and d.tenant_only) or (tenant is not None and not d.per_tenant):
                continue
            for p in visible_panels(d, tenant):
                refs = analyze_sql(p.sql)
                b = run_panel(base, p, refs, params, avail_b)
                c = run_panel(cached, p, refs, params, avail_c)
                assert (c.status, c.columns) == (b.status, b.columns), (p.title, b.message, c.message)
                assert b.status != "error", (p.title, b.message)
                assert Counter(c.rows) == Counter(b.rows), p.title  # same rows; zone names may differ
    finally:
        base.close()
        cached.close()


def test_cached_marts_are_sorted_by_grain_then_time_then_tenant(snap):
    con = snap.fleet_connection()
    rows = con.execute("select grain, period_start, tenant_id from tenant_sre_rollup").fetchall()
    assert rows == sorted(rows)


def test_big_marts_get_an_index_on_tenant_id(warehouse, monkeypatch):
    monkeypatch.setattr(cache_module, "INDEX_MIN_ROWS", 100)
    s = build_snapshot(warehouse, {"tenant_sre_rollup", "fleet_sre_rollup", "processor_stats"})
    indexed = {t for (t,) in s.con.execute("select table_name from duckdb_indexes()").fetchall()}
    assert indexed == {"tenant_sre_rollup"}  # fleet_sre_rollup has no tenant_id; processor_stats is small
    con = s.tenant_connection("acme", {"tenant_sre_rollup"})
    try:  # the lookup returns the tenant's rows in time order, as a scan would
        rows = con.execute("select grain, period_start from tenant_sre_rollup").fetchall()
        assert rows and rows == sorted(rows)
    finally:
        con.close()


@pytest.mark.parametrize("tenant", _valid(TENANTS))
def test_a_tenant_copy_holds_only_that_tenants_rows(snap, tenant):
    con = snap.tenant_connection(tenant)
    try:
        tables = [t for (t,) in con.execute("select table_name from duckdb_tables()").fetchall()]
        assert tables and not set(tables) & INTERNAL_VIEWS
        for t in tables:
            ids = {i for (i,) in con.execute(f'select distinct tenant_id from "{t}"').fetchall()}
            assert ids <= {tenant}, t
        assert con.execute("select count(*) from tenant_sre_rollup").fetchone()[0] > 0
        assert not {"fleet_sre_rollup", "fleet_sre_worst_p95", "fleet_usage_rollup", "fleet_active_tenants"} & set(tables)
    finally:
        con.close()


def test_a_tenant_copy_has_the_range_macros_over_its_own_rows(snap):
    con = snap.tenant_connection("acme")
    try:
        week = {"s": NOW - dt.timedelta(days=3), "e": NOW}
        ids = con.execute("select distinct tenant_id from hourly_rollup_range('tenant_sre_rollup', $s, $e, 'week')",
                          week).fetchall()
        assert ids == [("acme",)]
    finally:
        con.close()


def test_a_tenant_copy_cannot_read_files_or_unlock_settings(snap, warehouse):
    con = snap.tenant_connection("acme")
    try:
        with pytest.raises(duckdb.Error):
            con.execute(f"select * from read_parquet('{warehouse}/lake/sre_hourly_partials/*/*.parquet')")
        with pytest.raises(duckdb.Error):
            con.execute("set enable_external_access = true")
        with pytest.raises(duckdb.Error):
            con.execute(f"attach '{warehouse}/tenantry.duckdb' as w (read_only)")
    finally:
        con.close()


def test_a_tenant_copy_of_only_some_views(snap):
    con = snap.tenant_connection("acme", {"tenant_usage_rollup", "processor_stats"})
    try:
        assert [t for (t,) in con.execute("select table_name from duckdb_tables()").fetchall()] == [
            "tenant_usage_rollup"]  # processor_stats is operator-only
    finally:
        con.close()


@pytest.mark.parametrize("bad", ["", "ünï", "a" * 129, "x' or '1'='1", "-acme", None, 7])
def test_invalid_tenant_ids_are_refused(snap, bad):
    with pytest.raises(QueryError, match="not valid"):
        snap.tenant_connection(bad)


def test_an_unknown_tenant_gets_empty_tables(snap):
    con = snap.tenant_connection("nobody")
    try:
        assert con.execute("select count(*) from tenant_sre_rollup").fetchone()[0] == 0
    finally:
        con.close()


def test_a_missing_warehouse_says_so(tmp_path):
    with pytest.raises(WarehouseError, match="no warehouse here"):
        build_snapshot(tmp_path / "nowhere", {"tenant_sre_hourly"})


def test_a_mart_not_in_the_warehouse_is_left_out(warehouse):
    s = build_snapshot(warehouse, {"tenant_sre_hourly", "no_such_mart"})
    assert set(s.columns) == {"tenant_sre_hourly"}


def _copy(warehouse: Path, tmp_path: Path) -> Path:
    # views reference the lake by absolute path: rebuild them in the copy
    root = tmp_path / "wh"
    shutil.copytree(warehouse, root, ignore=shutil.ignore_patterns(".views.sha256", "tenantry.duckdb"))
    return root


def test_a_new_run_is_served_after_a_background_rebuild_and_not_before(warehouse, tmp_path):
    root = _copy(warehouse, tmp_path)
    synthetic_warehouse(root, ["acme"], days=1, now=NOW, run_id="first")
    cache = MartCache(root, {"tenant_sre_hourly"}, check_every_s=0)
    old = cache.get()
    assert cache.get() is old  # nothing committed: the same snapshot
    synthetic_warehouse(root, ["newco"], days=1, now=NOW, run_id="second")
    assert cache_key(root) != old.key
    first = cache.get()  # starts the rebuild and answers from the previous snapshot meanwhile
    cache.wait(60)
    new = cache.get()
    assert new is not old and new.key == cache_key(root)
    has = "select count(*) from tenant_sre_hourly where tenant_id = 'newco'"
    assert old.con.execute(has).fetchone()[0] == 0 and new.con.execute(has).fetchone()[0] > 0
    assert first is old or first is new


def test_rollups_built_on_cached_marts_follow_a_new_run(warehouse, tmp_path):
    root = _copy(warehouse, tmp_path)
    synthetic_warehouse(root, ["acme"], days=1, now=NOW, run_id="first", requests_of={"acme": 10.0})
    cache = MartCache(root, {"tenant_sre_rollup", "fleet_sre_rollup"}, check_every_s=0)
    total = "select sum(requests) from fleet_sre_rollup where grain = 'month'"
    before = cache.get().con.execute(total).fetchone()[0]
    synthetic_warehouse(root, ["newco"], days=1, now=NOW, run_id="second", requests_of={"newco": 1000.0})
    cache.get()
    cache.wait(60)
    after = cache.get().con.execute(total).fetchone()[0]
    assert after - before == 1000.0 * cache.get().con.execute(
        "select sum(hours) from tenant_sre_rollup where grain = 'month' and tenant_id = 'newco'").fetchone()[0]


def test_a_failed_rebuild_keeps_serving_the_previous_snapshot(warehouse, tmp_path):
    root = _copy(warehouse, tmp_path)
    synthetic_warehouse(root, ["acme"], days=1, now=NOW, run_id="first")
    cache = MartCache(root, {"tenant_sre_hourly"}, check_every_s=0)
    old = cache.get()
    (root / "tenantry.duckdb").rename(root / "moved.duckdb")  # the next build cannot read it
    (root / "lake" / "_manifests" / "late.json").write_text('{"run_id": "late", "inputs": [], "files": {}}')
    cache.get()
    cache.wait(60)
    assert cache.get() is old and "no warehouse here" in cache.last_error


def test_serve_shows_a_tenant_committed_after_start(warehouse, tmp_path):
    root = _copy(warehouse, tmp_path)
    synthetic_warehouse(root, ["acme"], days=1, run_id="first")
    app = create_app(root)
    client = TestClient(app, base_url="http://127.0.0.1")
    assert "value='/tenant/acme'" in client.get("/").text
    synthetic_warehouse(root, ["late-co"], days=1, run_id="second")
    deadline = time.monotonic() + 60
    while "value='/tenant/late-co'" not in client.get("/").text:
        assert time.monotonic() < deadline, "the new run never reached the page"
        time.sleep(0.2)
    assert client.get("/tenant/late-co/dashboards/sre?range=7d").status_code == 200


def test_tenant_pages_from_the_cache_name_no_other_tenant(warehouse):
    client = TestClient(create_app(warehouse, now=lambda: NOW), base_url="http://127.0.0.1")
    defs = load_definitions()
    for name, d in defs.items():
        if not d.per_tenant or not visible_panels(d, "acme"):
            continue
        html = client.get(f"/tenant/acme/dashboards/{name}?range=all&period=hour").text
        for other in ("acme-2", "drop.table--x", "ünï", "7110002", "7110003", "7110004"):
            assert other not in html, (name, other)
