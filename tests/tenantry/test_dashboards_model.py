"""Dashboard definitions: the model and the static checks (no warehouse needed)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from tenantry import resources
from tenantry.dashboards import DashboardError, Selection, SelectionError, load_definitions
from tenantry.dashboards.model import analyze_sql, load_planned, mart_macros, mart_views, staging_views

GOOD_PANEL = """
  - title: Requests
    kind: bar
    sql: select tenant_id, sum(requests) as requests from tenant_sre_hourly group by all
    x: tenant_id
    y: requests
"""


def write_defs(tmp_path: Path, body: str, name: str = "d.yaml", planned: bool = True) -> Path:
    folder = tmp_path / "defs"
    folder.mkdir(exist_ok=True)
    if planned:
        shutil.copy(resources.dashboards_dir() / "_planned_views.yaml", folder / "_planned_views.yaml")
    (folder / name).write_text(body, encoding="utf-8")
    return folder


def dash(panels: str, header: str = "title: T\naudience: sre\n") -> str:
    return header + "panels:" + panels


def test_shipped_definitions_cover_every_role():
    defs = load_definitions()
    assert {"overview", "sre", "security", "product", "tenant"} <= set(defs)
    assert defs["tenant"].tenant_only and defs["tenant"].per_tenant
    assert all(d.panels for d in defs.values())


def test_shipped_definitions_read_no_staging_view():
    staging = staging_views()
    for name, d in load_definitions().items():
        for p in d.panels:
            assert not (analyze_sql(p.sql).views & staging), (name, p.title)


def test_a_valid_definition_loads(tmp_path):
    defs = load_definitions(write_defs(tmp_path, dash(GOOD_PANEL)))
    assert defs["d"].panels[0].kind == "bar"


def test_files_starting_with_underscore_are_not_dashboards(tmp_path):
    folder = write_defs(tmp_path, dash(GOOD_PANEL))
    assert list(load_definitions(folder)) == ["d"]


@pytest.mark.parametrize("view", ["spans", "logs", "metric_points", "usage_events", "quarantine",
                                  "stg_sre_hourly_partials", "stg_made_up"])
def test_staging_views_are_refused(tmp_path, view):
    panel = f"\n  - title: raw\n    kind: table\n    sql: select * from {view}\n"
    with pytest.raises(DashboardError, match=rf"d.yaml: panel 'raw': reads staging view '{view}'"):
        load_definitions(write_defs(tmp_path, dash(panel)))


def test_staging_view_hidden_in_a_subquery_is_refused(tmp_path):
    panel = ("\n  - title: sneaky\n    kind: table\n    sql: select * from tenant_summary where tenant_id in "
             "(select tenant_id from spans)\n")
    with pytest.raises(DashboardError, match="staging view 'spans'"):
        load_definitions(write_defs(tmp_path, dash(panel)))


def test_cte_names_are_not_views():
    refs = analyze_sql("with spans as (select * from tenant_summary) select * from spans")
    assert refs.views == {"tenant_summary"}


@pytest.mark.parametrize("sql, match", [
    ("select * from read_parquet('/etc/passwd')", "table function"),
    ("select * from tenant_usage_daily_for('acme')", "table function"),
    ("select * from wh.main.tenant_summary", "bare mart names"),
    ("select 1; select 2", "2 statements"),
    ("drop view tenant_summary", "not a single valid SELECT"),
    ("selec nonsense", "not a single valid SELECT"),
])
def test_sql_that_is_not_one_select_over_marts_is_refused(tmp_path, sql, match):
    panel = f"\n  - title: bad\n    kind: table\n    sql: \"{sql}\"\n"
    with pytest.raises(DashboardError, match=match):
        load_definitions(write_defs(tmp_path, dash(panel)))


def test_unknown_view_names_the_known_marts(tmp_path):
    panel = "\n  - title: typo\n    kind: table\n    sql: select * from tenant_sumary\n"
    with pytest.raises(DashboardError, match=r"unknown view 'tenant_sumary'; known marts: .*tenant_summary"):
        load_definitions(write_defs(tmp_path, dash(panel)))


def test_unknown_chart_kind_lists_the_kinds(tmp_path):
    panel = "\n  - title: pie\n    kind: pie\n    sql: select 1\n"
    with pytest.raises(DashboardError, match=r"panels.0.kind: unknown chart kind 'pie'; known kinds: timeseries"):
        load_definitions(write_defs(tmp_path, dash(panel)))


@pytest.mark.parametrize("kind, fields, match", [
    ("timeseries", "x: a", "needs the field 'y'"),
    ("heatmap", "x: a\n    y: b", "needs the field 'z'"),
    ("stat", "", "needs the field 'y'"),
    ("table", "x: a", "does not use x"),
    ("stat", "y: a\n    color: b", "does not use color"),
])
def test_fields_must_fit_the_kind(tmp_path, kind, fields, match):
    panel = f"\n  - title: p\n    kind: {kind}\n    sql: select 1 as a\n    {fields}\n"
    with pytest.raises(DashboardError, match=match):
        load_definitions(write_defs(tmp_path, dash(panel)))


def test_a_parameter_used_but_not_declared_is_named(tmp_path):
    panel = ("\n  - title: ranged\n    kind: table\n    sql: select * from tenant_sre_hourly where hour >= $start\n")
    with pytest.raises(DashboardError, match=r"uses \$start but the dashboard does not declare parameter\(s\) time_range"):
        load_definitions(write_defs(tmp_path, dash(panel)))


def test_declared_parameters_may_be_used(tmp_path):
    header = "title: T\naudience: sre\nparameters: [time_range, period]\n"
    panel = ("\n  - title: ranged\n    kind: table\n    sql: select date_trunc($period, hour) as t from tenant_sre_hourly "
             "where hour >= $start and hour < $end\n")
    assert load_definitions(write_defs(tmp_path, dash(panel, header)))


def test_unknown_parameter_is_refused(tmp_path):
    header = "title: T\naudience: sre\nparameters: [region]\n"
    with pytest.raises(DashboardError, match="unknown parameter 'region'"):
        load_definitions(write_defs(tmp_path, dash(GOOD_PANEL, header)))


def test_tenant_only_needs_the_tenant_parameter(tmp_path):
    header = "title: T\naudience: tenant\ntenant_only: true\n"
    with pytest.raises(DashboardError, match="tenant_only: true needs 'tenant'"):
        load_definitions(write_defs(tmp_path, dash(GOOD_PANEL, header)))


def test_duplicate_panel_titles_are_refused(tmp_path):
    with pytest.raises(DashboardError, match="share a title"):
        load_definitions(write_defs(tmp_path, dash(GOOD_PANEL + GOOD_PANEL)))


@pytest.mark.parametrize("text, match", [
    ("title: [unclosed", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
    ("title: T\naudience: a\npanels: []\n", "panels"),
    ("title: T\naudience: a\nsurprise: 1\n" + "panels:" + GOOD_PANEL, "surprise"),
])
def test_malformed_files_name_the_file(tmp_path, text, match):
    with pytest.raises(DashboardError, match=rf"dashboards/d.yaml: .*{match}"):
        load_definitions(write_defs(tmp_path, text))


def test_an_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DashboardError, match="no dashboard definitions"):
        load_definitions(tmp_path / "empty")


def test_planned_views_are_not_marts_yet():
    planned = load_planned()
    # every planned mart has landed today; the file stays as the place to declare the next one
    assert not (set(planned) & (staging_views() | mart_views()))
    for v in planned.values():
        assert v.columns and v.owner


def test_marts_are_the_sql_marts_folder():
    assert {"tenant_sre_hourly", "tenant_usage_daily", "tenant_summary"} <= mart_views()


def test_selection_binds_a_range_ending_now():
    now = dt.datetime(2026, 11, 30, 12, tzinfo=dt.timezone.utc)
    p = Selection("7d", "hour").params(now)
    assert p == {"start": now - dt.timedelta(days=7), "end": now, "period": "hour"}
    assert Selection("all").params(now)["start"].year == 1970


@pytest.mark.parametrize("rng, period", [("1y", "day"), ("7d", "fortnight"), ("7d'; drop", "day"), ("", "day")])
def test_selection_refuses_values_not_offered(rng, period):
    with pytest.raises(SelectionError, match="choose one of"):
        Selection(rng, period)


def test_rollup_range_macros_read_the_mart_they_name():
    refs = analyze_sql("select tenant_id, sum(requests) from hourly_rollup_range('tenant_sre_rollup', $start, $end, "
                       "$period) join daily_rollup_range('tenant_usage_rollup', $start, $end, 'week') using (tenant_id) "
                       "group by all")
    assert refs.views == {"tenant_sre_rollup", "tenant_usage_rollup"} and refs.params == {"start", "end", "period"}
    assert {"hourly_rollup_range", "daily_rollup_range"} <= mart_macros()
    assert not mart_macros() & mart_views() and "rollup_range" not in mart_views()


@pytest.mark.parametrize("sql, match", [
    ("select * from hourly_rollup_range($start, $start, $end, 'day')", "first argument, in quotes"),
    ("select * from hourly_rollup_range(lower('TENANT_SRE_ROLLUP'), $start, $end, 'day')", "first argument, in quotes"),
    ("select * from main.hourly_rollup_range('tenant_sre_rollup', $start, $end, 'day')", "bare mart names"),
    ("select * from query_table('tenant_sre_rollup')", "table function"),
])
def test_table_functions_other_than_the_range_macros_are_refused(sql, match):
    with pytest.raises(DashboardError, match=match):
        analyze_sql(sql)


def test_a_range_macro_on_an_unknown_mart_is_an_unknown_view(tmp_path):
    panel = ("\n  - title: ranged\n    kind: table\n    sql: select * from hourly_rollup_range('stg_spans', "
             "$start, $end, 'day')\n")
    with pytest.raises(DashboardError, match="staging view 'stg_spans'"):
        load_definitions(write_defs(tmp_path, dash(panel, "title: T\naudience: sre\nparameters: [time_range]\n")))


def test_tenant_only_panels_show_only_in_tenant_scope(tmp_path):
    twin = ("\n  - title: mine\n    kind: table\n    tenant_only: true\n    sql: select * from tenant_sre_rollup\n")
    d = load_definitions(write_defs(tmp_path, dash(GOOD_PANEL + twin, "title: T\naudience: sre\nparameters: [tenant]\n")))["d"]
    assert [p.title for p in d.panels if p.visible(None)] == ["Requests"]
    assert [p.title for p in d.panels if p.visible("acme")] == ["Requests", "mine"]


@pytest.mark.parametrize("flags, header, match", [
    ("    tenant_only: true\n    fleet_only: true\n", "parameters: [tenant]\n", "both fleet_only and tenant_only"),
    ("    tenant_only: true\n", "", "tenant_only panel needs 'tenant'"),
])
def test_tenant_only_panels_are_checked(tmp_path, flags, header, match):
    panel = f"\n  - title: mine\n    kind: table\n{flags}    sql: select * from tenant_sre_rollup\n"
    with pytest.raises(DashboardError, match=match):
        load_definitions(write_defs(tmp_path, dash(panel, f"title: T\naudience: sre\n{header}")))
