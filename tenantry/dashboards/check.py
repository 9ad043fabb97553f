"""``tenantry dashboard check``: every definition against a warehouse, every problem at once.

Findings have a level:

- ``error``: the definition is wrong (bad YAML, unknown chart kind or parameter, staging view,
  unknown view or column, a field not in the query's result, a per-tenant panel on a view without
  ``tenant_id``); the command exits non-zero.
- ``missing``: the panel's view is not in this warehouse yet (a planned mart, or a mart the
  warehouse's views were built before); its SQL is still bound against the planned columns.
- ``note``: housekeeping, e.g. a planned mart that now exists (drop it from _planned_views.yaml).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb

from tenantry import resources
from tenantry.dashboards.model import (
    Dashboard, DashboardError, Panel, PlannedView, SqlRefs, analyze_sql, definition_files, load_file,
    load_planned, mart_views,
)
from tenantry.dashboards.query import Selection, connect, relations, run_panel


@dataclass(frozen=True)
class Finding:
    level: str  # error | missing | note
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


def _bind_on_stubs(panel: Panel, refs: SqlRefs, params: dict, columns: dict[str, list[tuple[str, str]]]) -> str | None:
    """Bind the panel's SQL on empty tables shaped like its views; None when it fits."""
    con = duckdb.connect(":memory:")
    try:
        for view in sorted(refs.views):
            cols = ", ".join(f'"{c}" {t}' for c, t in columns[view])
            con.execute(f'create table "{view}" ({cols})')
        cur = con.execute(panel.sql, {k: params[k] for k in refs.params})
        result = [d[0] for d in cur.description]
    except duckdb.Error as e:
        return f"the SQL does not fit the planned columns: {e}"
    finally:
        con.close()
    absent = [f for f in panel.fields() if f not in result]
    return f"column(s) {', '.join(absent)} not in the query's result ({', '.join(result)})" if absent else None


def _check_panel(name: str, d: Dashboard, p: Panel, con, available: dict[str, list[str]],
                 wh_types: dict[str, list[tuple[str, str]]], planned: dict[str, PlannedView],
                 params: dict) -> list[Finding]:
    where = f"dashboards/{name}.yaml: panel {p.title!r}"
    refs = analyze_sql(p.sql)
    out: list[Finding] = []
    if d.per_tenant and not p.fleet_only:
        for v in sorted(refs.views):
            cols = available.get(v) or (list(planned[v].columns) if v in planned else [])
            if cols and "tenant_id" not in cols:
                out.append(Finding("error", where, (
                    f"view {v!r} has no tenant_id, so it is absent in tenant scope; "
                    "mark the panel `fleet_only: true`")))
    missing = sorted(refs.views - set(available))
    if not missing:
        data = run_panel(con, p, refs, params, available)
        if data.status == "error":
            out.append(Finding("error", where, data.message))
        return out
    unplanned = [v for v in missing if v not in planned]
    for v in missing:
        if v in planned:
            msg = f"not available yet (view {v} missing; planned by {planned[v].owner})"
        else:
            msg = (f"not available yet (view {v} is in sql/marts/ but not in this warehouse; "
                   "run `tenantry views --warehouse DIR --rebuild` or re-run the pipeline)")
        out.append(Finding("missing", where, msg))
    if not unplanned:
        shapes = {v: wh_types[v] if v in wh_types else list(planned[v].columns.items()) for v in refs.views}
        problem = _bind_on_stubs(p, refs, params, shapes)
        if problem:
            out.append(Finding("error", where, problem))
    return out


def check(warehouse: str | Path, definitions: Path | None = None, selection: Selection | None = None,
          now: dt.datetime | None = None) -> list[Finding]:
    """Validate every definition and run every panel query once; returns all findings."""
    folder = definitions or resources.dashboards_dir()
    try:
        planned = load_planned(folder)
    except DashboardError as e:
        return [Finding("error", "dashboards/_planned_views.yaml", str(e))]
    defs: dict[str, Dashboard] = {}
    findings: list[Finding] = []
    for f in definition_files(folder):
        try:
            defs[f.stem] = load_file(f, planned)
        except DashboardError as e:
            findings.append(Finding("error", f"dashboards/{f.name}", str(e).removeprefix(f"dashboards/{f.name}: ")))
    if not defs and not findings:
        findings.append(Finding("error", str(folder), "no dashboard definitions (*.yaml) found"))
    params = (selection or Selection()).params(now)
    con = connect(warehouse)
    try:
        available = relations(con)
        wh_types: dict[str, list[tuple[str, str]]] = {}
        for t, c, ty in con.execute(
                "select table_name, column_name, data_type from duckdb_columns() "
                "where database_name = current_database() and schema_name = 'main' "
                "order by table_name, column_index").fetchall():
            wh_types.setdefault(t.lower(), []).append((c, ty))
        for name, d in defs.items():
            for p in d.panels:
                findings.extend(_check_panel(name, d, p, con, available, wh_types, planned, params))
    finally:
        con.close()
    marts = mart_views()
    for v in sorted(set(planned) & (set(available) | marts)):
        findings.append(Finding("note", "dashboards/_planned_views.yaml",
                                f"{v} now exists; remove its entry (sql/marts/{v}.sql is the contract)"))
    return findings
