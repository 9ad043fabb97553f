"""Dashboards: YAML definitions in ``dashboards/`` rendered to self-contained HTML pages.

A definition (one file per dashboard)::

    title: SRE
    audience: sre
    panels:
      - title: p95 latency by tenant
        kind: timeseries          # timeseries | bar | table | stat | heatmap
        sql: select hour, tenant_id, p95_ms from tenant_sre_hourly order by hour
        x: hour
        y: p95_ms
        color: tenant_id          # optional series split
        unit: ms

Panels query the ``sql/`` marts. Pages embed plotly.js, so they open offline with nothing loaded
from the internet. With a tenant, every panel runs on a private copy of that tenant's rows only
(``tenantry.querying.tenant_connection``), so a tenant page cannot show another tenant's data.
"""

from __future__ import annotations

import datetime as dt
import decimal
import html
from pathlib import Path
from typing import Any, Literal

import duckdb
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tenantry import querying, resources
from tenantry.warehouse import Warehouse

KINDS = ("timeseries", "bar", "table", "stat", "heatmap")


class DashboardError(ValueError):
    """A definition is invalid or a panel's query failed; the message names file and panel."""


class Panel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str
    kind: Literal["timeseries", "bar", "table", "stat", "heatmap"]
    sql: str
    x: str | None = None
    y: str | None = None
    color: str | None = None
    unit: str | None = None


class Dashboard(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str
    audience: str
    description: str | None = None
    #: "tenant" when the dashboard is meant to be built per tenant
    parameters: list[Literal["tenant", "time_range", "period"]] = Field(default_factory=list)
    panels: list[Panel]


def load_definitions(folder: Path | None = None) -> dict[str, Dashboard]:
    folder = folder or resources.dashboards_dir()
    out = {}
    for f in sorted(folder.glob("*.yaml")):
        try:
            out[f.stem] = Dashboard.model_validate(yaml.safe_load(f.read_text(encoding="utf-8")))
        except ValidationError as e:
            errs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise DashboardError(f"dashboards/{f.name}: {errs}") from None
        except yaml.YAMLError as e:
            raise DashboardError(f"dashboards/{f.name}: not valid YAML: {e}") from None
    return out


def run_panel(con: duckdb.DuckDBPyConnection, name: str, panel: Panel) -> tuple[list[str], list[tuple]]:
    try:
        cur = con.execute(panel.sql)
    except duckdb.Error as e:
        raise DashboardError(f"dashboards/{name}.yaml: panel {panel.title!r}: query failed: {e}") from None
    cols = [d[0] for d in cur.description]
    for field in (panel.x, panel.y, panel.color):
        if field and field not in cols:
            raise DashboardError(
                f"dashboards/{name}.yaml: panel {panel.title!r}: column {field!r} is not in the result "
                f"({', '.join(cols)})"
            )
    return cols, cur.fetchall()


def _plain(v: Any) -> Any:
    if isinstance(v, decimal.Decimal):
        return float(v)  # charts only; exact figures are in tables and exports
    return v


def _figure(panel: Panel, cols: list[str], rows: list[tuple]) -> str:
    import plotly.graph_objects as go

    idx = {c: i for i, c in enumerate(cols)}
    fig = go.Figure()
    series: dict[Any, list[tuple]] = {}
    for r in rows:
        series.setdefault(r[idx[panel.color]] if panel.color else panel.y, []).append(r)
    for key, rs in series.items():
        xs = [_plain(r[idx[panel.x]]) for r in rs]
        ys = [_plain(r[idx[panel.y]]) for r in rs]
        name = str(key)
        if panel.kind == "bar":
            fig.add_trace(go.Bar(x=xs, y=ys, name=name))
        elif panel.kind == "timeseries":
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name))
    if panel.kind == "heatmap":
        xs = sorted({r[idx[panel.x]] for r in rows})
        cs = sorted({str(r[idx[panel.color]]) for r in rows})
        z = [[None] * len(xs) for _ in cs]
        for r in rows:
            z[cs.index(str(r[idx[panel.color]]))][xs.index(r[idx[panel.x]])] = _plain(r[idx[panel.y]])
        fig.add_trace(go.Heatmap(x=xs, y=cs, z=z, colorbar={"title": panel.unit or ""}))
    fig.update_layout(
        margin={"l": 50, "r": 20, "t": 30, "b": 40}, height=340, barmode="group",
        yaxis_title=panel.unit or "", legend={"orientation": "h"},
    )
    return fig.to_html(full_html=False, include_plotlyjs=False)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    return str(v)


def _table(cols: list[str], rows: list[tuple], limit: int = 200) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in r) + "</tr>" for r in rows[:limit]
    )
    more = f"<p class=more>{len(rows) - limit} more rows</p>" if len(rows) > limit else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def render_panel(name: str, panel: Panel, cols: list[str], rows: list[tuple]) -> str:
    title = html.escape(panel.title)
    if not rows:
        content = "<p class=empty>No data yet for this panel.</p>"
    elif panel.kind == "table":
        content = _table(cols, rows)
    elif panel.kind == "stat":
        v = rows[0][cols.index(panel.y)] if panel.y else rows[0][0]
        content = f"<p class=stat>{html.escape(_cell(v))} <small>{html.escape(panel.unit or '')}</small></p>"
    else:
        content = _figure(panel, cols, rows)
    return f'<section class=panel data-kind="{panel.kind}"><h2>{title}</h2>{content}</section>'


_CSS = """body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 24px}header a{color:#9cc3ff}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:16px;padding:16px}
.panel{background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 3px #0002;overflow:auto}
.panel h2{font-size:15px;margin:0 0 8px}table{border-collapse:collapse;font-size:13px;width:100%}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eee}.stat{font-size:36px;margin:8px 0}
.empty{color:#888}"""


def page(title: str, subtitle: str, body: str, with_plotly: bool) -> str:
    script = ""
    if with_plotly:
        from plotly.offline import get_plotlyjs

        script = f"<script>{get_plotlyjs()}</script>"
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style>{script}</head><body><header><h1>{html.escape(title)}</h1>"
        f"<div>{subtitle}</div></header><main>{body}</main></body></html>"
    )


def build(warehouse: str | Path, out: str | Path, tenant: str | None = None) -> list[Path]:
    """Render every dashboard (or, with ``tenant``, the per-tenant ones on that tenant's data)."""
    defs = load_definitions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    con = querying.tenant_connection(str(warehouse), tenant) if tenant else Warehouse(warehouse).connect()
    written = []
    try:
        links = []
        for name, d in defs.items():
            if tenant and "tenant" not in d.parameters:
                continue
            panels = [render_panel(name, p, *run_panel(con, name, p)) for p in d.panels]
            scope = f"tenant {html.escape(tenant)}" if tenant else f"for {html.escape(d.audience)}"
            f = out / f"{name}.html"
            f.write_text(page(d.title, scope + " · <a href=index.html>all dashboards</a>", "".join(panels),
                              any(p.kind in ("timeseries", "bar", "heatmap") for p in d.panels)), encoding="utf-8")
            written.append(f)
            links.append(f"<li><a href='{name}.html'>{html.escape(d.title)}</a> ({html.escape(d.audience)})</li>")
        idx = out / "index.html"
        idx.write_text(page("tenantry dashboards", html.escape(f"tenant {tenant}") if tenant else "all roles",
                            f"<section class=panel><ul>{''.join(links)}</ul></section>", False), encoding="utf-8")
        written.insert(0, idx)
    finally:
        con.close()
    return written
