"""Running panels: picker values to bound SQL parameters, read-only connections, panel results.

A panel never fails a page: a view that does not exist yet gives ``missing`` ("not available yet
(view X missing)"), a failing query gives ``error`` with DuckDB's message; ``dashboard check``
turns both into findings. Picker values are bound as parameters, never spliced into SQL.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from tenantry import querying
from tenantry.dashboards.model import Panel, SqlRefs, mart_macros
from tenantry.warehouse import Warehouse

#: time-range picker: key -> how far back from now (None: everything)
RANGES: dict[str, dt.timedelta | None] = {
    "24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7), "30d": dt.timedelta(days=30),
    "90d": dt.timedelta(days=90), "all": None,
}
PERIODS = ("hour", "day", "week", "month")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_FAR = dt.timedelta(days=3650)  # "all" still ends somewhere: a decade past now covers clock skew
#: rows a chart draws at most (tables show fewer); the rest is counted, never silently dropped
MAX_ROWS = 20_000
#: how long to wait for DuckDB's file lock while a pipeline rebuilds the views
LOCK_WAIT_S = 5.0


class SelectionError(ValueError):
    """A picker value is not one of the offered choices."""


@dataclass(frozen=True)
class Selection:
    """What the pickers chose: a time range ending now and a period to bucket by."""

    range: str = "all"
    period: str = "day"

    def __post_init__(self):
        if self.range not in RANGES:
            raise SelectionError(f"unknown time range {self.range!r}; choose one of {', '.join(RANGES)}")
        if self.period not in PERIODS:
            raise SelectionError(f"unknown period {self.period!r}; choose one of {', '.join(PERIODS)}")

    def params(self, now: dt.datetime | None = None) -> dict[str, Any]:
        now = now or dt.datetime.now(dt.timezone.utc)
        back = RANGES[self.range]
        start = now - back if back else _EPOCH
        end = now if back else now + _FAR
        return {"start": start, "end": end, "period": self.period}


@dataclass
class PanelData:
    """One panel's outcome. ``status``: ok | empty | missing | error."""

    status: str
    columns: list[str] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)
    message: str = ""
    truncated: bool = False


def macro_statements(con: duckdb.DuckDBPyConnection, catalog: str) -> list[str]:
    """``create macro`` statements for the scalar macros of ``catalog`` (sketch_value, ...) and the
    table macros panels call (the rollup range macros of sql/marts/), to define them again in
    another database: a cache or a tenant's private copy, where they then read its tables. (Other
    table macros name tables such a copy may not hold; DuckDB binds them when they are created.)"""
    rows = con.execute(
        "select function_name, function_type, parameters, macro_definition from duckdb_functions() "
        "where database_name = ? and schema_name = 'main' and not internal "
        "and function_type in ('macro', 'table_macro') order by function_name", [catalog]).fetchall()
    overloads: dict[str, list[str]] = {}
    wanted = mart_macros()
    for name, kind, params, body in rows:
        if kind == "table_macro" and name.lower() not in wanted:
            continue
        args = ", ".join(f'"{a}"' for a in params)
        overloads.setdefault(name, []).append(f"({args}) as {'table ' if kind == 'table_macro' else ''}{body}")
    return [f'create or replace macro "{name}"{", ".join(forms)}' for name, forms in overloads.items()]


def connect(warehouse: str | Path, tenant: str | None = None, wait_s: float = LOCK_WAIT_S):
    """A fresh read-only connection (tenant scope: a private copy of that tenant's rows, with the
    warehouse's macros defined over it).

    Retries while the database file is locked (a pipeline rebuilding the views holds it for a
    moment) so a dashboard keeps working during a run; other errors are raised at once.
    """
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            if tenant is not None:
                wh = Warehouse(warehouse).connect(read_only=True)
                try:
                    macros = macro_statements(wh, wh.execute("select current_database()").fetchone()[0])
                finally:
                    wh.close()
                con = querying.tenant_connection(str(warehouse), tenant)
                for stmt in macros:
                    con.execute(stmt)
                return con
            return Warehouse(warehouse).connect(read_only=True)
        except duckdb.Error as e:
            if "lock" not in str(e).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def relations(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Views and tables of the connection's own database: name -> columns."""
    rows = con.execute(
        "select table_name, list(column_name order by column_index) from duckdb_columns() "
        "where database_name = current_database() and schema_name = 'main' group by table_name"
    ).fetchall()
    return {name.lower(): cols for name, cols in rows}


def run_panel(con: duckdb.DuckDBPyConnection, panel: Panel, refs: SqlRefs, params: dict[str, Any],
              available: dict[str, list[str]]) -> PanelData:
    missing = sorted(refs.views - set(available))
    if missing:
        views = ", ".join(missing)
        return PanelData("missing", message=f"not available yet (view {views} missing)")
    try:
        cur = con.execute(panel.sql, {k: params[k] for k in refs.params})
        cols = [d[0] for d in cur.description]
        rows = cur.fetchmany(MAX_ROWS + 1)
    except duckdb.Error as e:
        return PanelData("error", message=f"query failed: {e}")
    absent = [f for f in panel.fields() if f not in cols]
    if absent:
        return PanelData("error", columns=cols, message=(
            f"column(s) {', '.join(absent)} not in the query's result ({', '.join(cols)}); "
            "fix x/y/z/color or the SQL"))
    truncated = len(rows) > MAX_ROWS
    rows = rows[:MAX_ROWS]
    return PanelData("ok" if rows else "empty", cols, rows, truncated=truncated)
