"""Rollup marts and their range macros: any range is covered exactly, and the panels that read the
rollups give the figures of the plain hourly and daily marts they replaced."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.dashboards import synthetic_warehouse
from tenantry.dashboards import PERIODS, Selection, load_definitions
from tenantry.dashboards.cache import build_snapshot, marts_read
from tenantry.dashboards.model import analyze_sql
from tenantry.dashboards.query import connect, relations, run_panel

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 3, 14, tzinfo=UTC)  # a Tuesday afternoon: ranges cut weeks and months
# more tenants than a block's list of the 25 worst p95, so "(other tenants)" is found in it
TENANTS = [f"t{i:02d}" for i in range(30)]
EPOCH, FAR = dt.datetime(1970, 1, 1, tzinfo=UTC), NOW + dt.timedelta(days=3650)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rollup")
    synthetic_warehouse(root, TENANTS, days=70, services=("api", "web"), meters=("calls", "bytes"),
                        density=0.5, now=NOW)
    return root


@pytest.fixture(scope="module")
def snap(warehouse):
    # with the marts the rollups roll up, cached too: references read those
    return build_snapshot(warehouse, marts_read(load_definitions()) | {"tenant_sre_hourly", "tenant_usage_daily"})


def _ranges() -> list[tuple[dt.datetime, dt.datetime]]:
    """Ranges on and off the hour, day, week and month boundaries, empty and unbounded ones."""
    rng = random.Random(9)
    base = NOW - dt.timedelta(days=75)
    out = [(EPOCH, FAR), (NOW - dt.timedelta(days=7), NOW), (NOW, NOW), (NOW - dt.timedelta(minutes=20), NOW),
           (dt.datetime(2026, 2, 1, tzinfo=UTC), dt.datetime(2026, 3, 1, tzinfo=UTC)),  # one whole month
           (dt.datetime(2026, 2, 2, tzinfo=UTC), dt.datetime(2026, 2, 16, tzinfo=UTC))]  # two whole weeks
    for _ in range(40):
        a = base + dt.timedelta(minutes=rng.randrange(80 * 24 * 60))
        a = rng.choice([a, a.replace(minute=0), a.replace(hour=0, minute=0)])
        b = a + dt.timedelta(minutes=rng.randrange(60 * 24 * 60))
        out.append((a, rng.choice([b, b.replace(minute=0), FAR])))
    return out


# (rows from a rollup macro, the same figures from the mart it rolls up)
COVERS = [
    ("""select date_trunc($b, period_start) as t, tenant_id, service_name, sum(requests), sum(errors),
              max(worst_p95_ms), max(worst_p99_ms), sum(hours)
       from hourly_rollup_range('tenant_service_sre_rollup', $s, $e, $b) group by all order by all""",
     """select date_trunc($b, hour) as t, tenant_id, service_name, sum(requests), sum(errors),
              max(p95_ms), max(p99_ms), count(*)
       from tenant_sre_hourly where hour >= $s and hour < $e group by all order by all"""),
    ("""select date_trunc($b, period_start) as t, tenant_id, sum(requests), sum(errors),
              max(worst_p95_ms), max(worst_p99_ms), sum(hours)
       from hourly_rollup_range('tenant_sre_rollup', $s, $e, $b) group by all order by all""",
     """select date_trunc($b, hour) as t, tenant_id, sum(requests), sum(errors), max(p95_ms), max(p99_ms), count(*)
       from tenant_sre_hourly where hour >= $s and hour < $e group by all order by all"""),
    ("""select date_trunc($b, period_start) as t, sum(requests), sum(errors), sum(tenant_hours)
       from hourly_rollup_range('fleet_sre_rollup', $s, $e, $b) group by all order by all""",
     """select date_trunc($b, hour) as t, sum(requests), sum(errors), count(*)
       from tenant_sre_hourly where hour >= $s and hour < $e group by all order by all"""),
    ("""select date_trunc($b, period_start) as t, tenant_id, meter, sum(quantity), sum(event_count)
       from daily_rollup_range('tenant_usage_rollup', $s, $e, $b) group by all order by all""",
     """select date_trunc($b, day) as t, tenant_id, meter, sum(quantity), sum(event_count)
       from tenant_usage_daily where day >= $s and day < $e group by all order by all"""),
    ("""select date_trunc($b, period_start) as t, meter, sum(quantity), sum(event_count)
       from daily_rollup_range('fleet_usage_rollup', $s, $e, $b) group by all order by all""",
     """select date_trunc($b, day) as t, meter, sum(quantity), sum(event_count)
       from tenant_usage_daily where day >= $s and day < $e group by all order by all"""),
    ("""select t, sum(n)::bigint from (
           select date_trunc($b, period_start) as t, tenant_chunk, bit_count(bit_or(active_tenants)) as n
           from daily_rollup_range('fleet_active_tenants', $s, $e, $b) group by all) group by all order by all""",
     """select date_trunc($b, day) as t, count(distinct tenant_id)
       from tenant_usage_daily where day >= $s and day < $e and quantity > 0 group by all order by all"""),
]


@pytest.mark.parametrize("bucket", PERIODS)
def test_a_rollup_range_holds_exactly_the_hours_or_days_of_the_range(snap, bucket):
    con = snap.fleet_connection()
    try:
        for s, e in _ranges():
            p = {"s": s, "e": e, "b": bucket}
            for macro_sql, mart_sql in COVERS:
                assert con.execute(macro_sql, p).fetchall() == con.execute(mart_sql, p).fetchall(), (s, e, macro_sql[:60])
    finally:
        con.close()


def test_the_macros_work_the_same_on_the_warehouse_views(warehouse, snap):
    views, cached = connect(warehouse), snap.fleet_connection()
    try:
        for s, e in _ranges()[:3]:
            p = {"s": s, "e": e, "b": "week"}
            for macro_sql, _ in COVERS:
                assert views.execute(macro_sql, p).fetchall() == cached.execute(macro_sql, p).fetchall()
    finally:
        views.close()
        cached.close()


def test_a_week_reads_one_row_per_tenant_where_it_fits(snap):
    con = snap.fleet_connection()
    try:
        week = {"s": dt.datetime(2026, 2, 2, tzinfo=UTC), "e": dt.datetime(2026, 2, 9, tzinfo=UTC)}
        for rollup, per_tenant in (("tenant_sre_rollup", 1), ("tenant_service_sre_rollup", 2)):
            n = con.execute(f"select count(*) from hourly_rollup_range('{rollup}', $s, $e, 'week')", week).fetchone()[0]
            assert n == len(TENANTS) * per_tenant
    finally:
        con.close()


# The panels as they read before the rollups (with ties in their rankings broken by tenant id):
# (dashboard, panel) -> SQL over the hourly and daily marts.
TOP_REQUESTS = """
    with per_period as (
        select date_trunc($period, hour) as t, tenant_id, sum(requests) as requests
        from tenant_sre_hourly where hour >= $start and hour < $end group by all),
    top_tenants as (
        select tenant_id from per_period group by tenant_id order by sum(requests) desc, tenant_id limit 10)
    select t, case when tenant_id in (select tenant_id from top_tenants) then tenant_id
                   else '(other tenants)' end as tenant_id, sum(requests) as requests
    from per_period group by all"""
TOP_P95 = """
    with per_period as (
        select date_trunc($period, hour) as t, tenant_id, max(p95_ms) as p95_ms
        from tenant_sre_hourly where hour >= $start and hour < $end group by all),
    top_tenants as (
        select tenant_id from per_period group by tenant_id order by max(p95_ms) desc nulls last, tenant_id limit 10)
    select t, case when tenant_id in (select tenant_id from top_tenants) then tenant_id
                   else '(other tenants)' end as tenant_id, max(p95_ms) as p95_ms
    from per_period group by all"""
HOURS = "from tenant_sre_hourly where hour >= $start and hour < $end"
DAYS = "from tenant_usage_daily where day >= $start and day < $end"
REFERENCE = {
    ("overview", "Requests by tenant"):
        f"select tenant_id, sum(requests) as requests {HOURS} group by all order by requests desc, tenant_id limit 25",
    ("overview", "Usage per tenant and meter"):
        f"""select tenant_id, meter, sum(quantity) as quantity, any_value(unit) as unit, sum(event_count) as events
            {DAYS} group by all order by tenant_id, meter limit 200""",
    ("product", "Usage per meter per period"):
        f"select date_trunc($period, day) as t, meter, sum(quantity) as quantity {DAYS} group by all",
    ("product", "Usage per meter per period (this tenant)"):
        f"select date_trunc($period, day) as t, meter, sum(quantity) as quantity {DAYS} group by all",
    ("product", "Usage per meter and plan"):
        """with plans as (select distinct tenant_id, plan from entitlement_status)
            select u.meter, coalesce(p.plan, 'no plan') as plan, sum(u.quantity) as quantity
            from tenant_usage_daily u left join plans p using (tenant_id)
            where u.day >= $start and u.day < $end group by all""",
    ("product", "Active tenants per period"):
        f"""select date_trunc($period, day) as t, count(distinct tenant_id) as active_tenants
            {DAYS} and quantity > 0 group by all""",
    ("sre", "Requests per period by tenant"): TOP_REQUESTS,
    ("sre", "Requests per period by service"):
        f"select date_trunc($period, hour) as t, service_name, sum(requests) as requests {HOURS} group by all",
    ("sre", "Error rate by tenant"):
        f"""select tenant_id, sum(errors) / nullif(sum(requests), 0) * 100 as error_pct {HOURS}
            group by all order by error_pct desc nulls last, tenant_id limit 25""",
    ("sre", "p95 latency per period by tenant"): TOP_P95,
    ("sre", "p95 latency per period by service"):
        f"select date_trunc($period, hour) as t, service_name, max(p95_ms) as p95_ms {HOURS} group by all",
    ("sre", "Error rate heatmap (tenant x period)"):
        f"""with top_tenants as (select tenant_id {HOURS} group by tenant_id order by sum(errors) desc, tenant_id limit 25)
            select date_trunc($period, hour) as t, tenant_id, sum(errors) / nullif(sum(requests), 0) * 100 as error_pct
            {HOURS} and tenant_id in (select tenant_id from top_tenants) group by all""",
    ("sre", "Latency per tenant and service"):
        f"""select tenant_id, service_name, sum(requests) as requests, sum(errors) as errors,
                   max(p95_ms) as worst_p95_ms, max(p99_ms) as worst_p99_ms {HOURS}
            group by all order by worst_p99_ms desc nulls last, tenant_id, service_name limit 200""",
    ("tenant", "Requests"): f"select sum(requests) as requests {HOURS}",
    ("tenant", "Usage per meter per period"):
        f"select date_trunc($period, day) as t, meter, sum(quantity) as quantity {DAYS} group by all",
}
SELECTIONS = [Selection("all", "day"), Selection("24h", "hour"), Selection("7d", "hour"), Selection("30d", "week"),
              Selection("90d", "month"), Selection("90d", "day")]


def test_every_panel_on_a_rollup_has_a_reference():
    on_rollups = {(n, p.title) for n, d in load_definitions().items() for p in d.panels
                  if any(v.endswith("_rollup") or v.startswith("fleet_") for v in analyze_sql(p.sql).views)}
    assert on_rollups == set(REFERENCE)


@pytest.mark.parametrize("sel", SELECTIONS, ids=lambda s: f"{s.range}-{s.period}")
def test_panels_on_rollups_give_the_figures_of_the_hourly_and_daily_marts(snap, sel):
    defs = load_definitions()
    cached = snap.fleet_connection()
    params = sel.params(NOW)
    try:
        available = relations(cached)
        for (name, title), sql in REFERENCE.items():
            panel = next(p for p in defs[name].panels if p.title == title)
            got = run_panel(cached, panel, analyze_sql(panel.sql), params, available)
            want = cached.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql}).fetchall()
            assert got.status in ("ok", "empty"), (title, got.message)
            assert Counter(got.rows) == Counter(want), (title, sel)
            if "(other tenants)" in sql and sel.range != "24h":
                assert any(r[1] == "(other tenants)" for r in got.rows), title  # the case is exercised
    finally:
        cached.close()

