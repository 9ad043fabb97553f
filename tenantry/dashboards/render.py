"""HTML for panels and pages. Every string from data or definitions is escaped exactly once.

Charts are plotly figures we build as plain JSON (no plotly.py round trip) and embed in a
``<script type="application/json">`` block with ``<``, ``>`` and ``&`` written as ``\\u003c``...,
so no value can close the block; strings are also HTML-escaped before plotly sees them because
plotly renders a subset of HTML (``<b>``, ``<a href>``) in names, ticks and hover labels. One
script with the page's nonce draws every chart; a Content-Security-Policy refuses all others and
anything from the network, so a page works offline and an injected script does not run.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import html
import json
import math
from typing import Any

from tenantry.dashboards.model import Panel
from tenantry.dashboards.query import PanelData

MAX_SERIES = 20
TABLE_ROWS = 200
_e = html.escape


def _chart_value(v: Any) -> Any:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, decimal.Decimal):
        return float(v)  # charts only; exact figures are in tables and exports
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, int):
        return v
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    return _e(str(v))


def _number(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0.0
    return f if math.isfinite(f) else 0.0


def _series(panel: Panel, data: PanelData) -> tuple[dict[Any, list[tuple]], int]:
    ix = data.columns.index
    xi, yi = ix(panel.x), ix(panel.y)
    ci = ix(panel.color) if panel.color else None
    groups: dict[Any, list[tuple]] = {}
    for r in data.rows:
        groups.setdefault(r[ci] if ci is not None else panel.y, []).append((r[xi], r[yi]))
    if len(groups) <= MAX_SERIES:
        return groups, len(groups)
    # keep the series that matter most; the caption says how many were left out
    top = sorted(groups, key=lambda k: -sum(abs(_number(y)) for _, y in groups[k]))[:MAX_SERIES]
    return {k: groups[k] for k in top}, len(groups)


def figure(panel: Panel, data: PanelData) -> tuple[dict, str]:
    """(plotly figure as JSON-able dict, caption) for a chart panel with rows."""
    layout = {"margin": {"l": 56, "r": 16, "t": 12, "b": 48}, "height": 340, "barmode": "group",
              "yaxis": {"title": {"text": _e(panel.unit or "")}, "automargin": True},
              "xaxis": {"automargin": True}, "legend": {"orientation": "h"}, "showlegend": True}
    caption = ""
    if panel.kind == "heatmap":
        ix = data.columns.index
        xi, yi, zi = ix(panel.x), ix(panel.y), ix(panel.z)
        xs = sorted({r[xi] for r in data.rows if r[xi] is not None}, key=str)
        ys = sorted({r[yi] for r in data.rows if r[yi] is not None}, key=str)
        xpos, ypos = {v: i for i, v in enumerate(xs)}, {v: i for i, v in enumerate(ys)}
        z: list[list[Any]] = [[None] * len(xs) for _ in ys]
        for r in data.rows:
            if r[xi] in xpos and r[yi] in ypos:
                z[ypos[r[yi]]][xpos[r[xi]]] = _chart_value(r[zi])
        traces = [{"type": "heatmap", "x": [_chart_value(v) for v in xs], "y": [_chart_value(v) for v in ys],
                   "z": z, "colorbar": {"title": {"text": _e(panel.unit or "")}}, "hoverongaps": False}]
        layout["yaxis"] = {"type": "category", "automargin": True}  # the unit is on the colorbar
        layout["showlegend"] = False
        return {"data": traces, "layout": layout}, caption
    groups, total = _series(panel, data)
    layout["showlegend"] = panel.color is not None  # one unnamed series needs no legend
    if total > len(groups):
        caption = f"showing the {len(groups)} largest of {total} series"
    traces = []
    for key, pts in groups.items():
        trace = {"x": [_chart_value(x) for x, _ in pts], "y": [_chart_value(y) for _, y in pts],
                 "name": _e(str(key))}
        if panel.kind == "bar":
            trace["type"] = "bar"
        else:
            trace.update(type="scatter", mode="lines+markers")
        traces.append(trace)
    if panel.kind == "bar" and data.rows and isinstance(data.rows[0][data.columns.index(panel.x)], str):
        layout["xaxis"]["type"] = "category"  # tenant ids like "2024" must stay labels, not numbers
    return {"data": traces, "layout": layout}, caption


def json_for_script(obj: Any) -> str:
    """JSON that cannot end a <script> block or start a comment in it."""
    s = json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str)
    return (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.2f}" if math.isfinite(v) else str(v)
    if isinstance(v, decimal.Decimal):
        return f"{v.normalize():,f}"  # exact: no float on the way
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    return str(v)


def _table(data: PanelData) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in data.columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(cell(v))}</td>" for v in r) + "</tr>" for r in data.rows[:TABLE_ROWS])
    n_more = len(data.rows) - TABLE_ROWS
    more = f"<p class=more>{n_more:,}{'+' if data.truncated else ''} more rows</p>" if n_more > 0 else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def render_panel(i: int, panel: Panel, data: PanelData) -> str:
    """One panel as a <section>; ``data-status`` says ok | empty | missing | error."""
    desc = f"<p class=desc>{_e(panel.description)}</p>" if panel.description else ""
    if data.status == "missing":
        content = f"<p class=missing>{_e(data.message)}</p>"
    elif data.status == "error":
        content = f"<p class=error>{_e(data.message)} (run <code>tenantry dashboard check</code>)</p>"
    elif data.status == "empty" or (panel.kind == "stat" and data.rows[0][data.columns.index(panel.y)] is None):
        content = "<p class=empty>No data yet for this panel.</p>"
    elif panel.kind == "table":
        content = _table(data)
    elif panel.kind == "stat":
        v = data.rows[0][data.columns.index(panel.y)]
        content = f"<p class=stat>{_e(cell(v))} <small>{_e(panel.unit or '')}</small></p>"
    else:
        spec, caption = figure(panel, data)
        cap = f"<p class=caption>{_e(caption)}</p>" if caption else ""
        content = (f"<div class=chart id=chart-{i} data-spec=spec-{i}></div>{cap}"
                   f"<script type=application/json id=spec-{i}>{json_for_script(spec)}</script>")
    return (f'<section class=panel id=panel-{i} data-kind="{panel.kind}" data-status="{data.status}">'
            f"<h2>{_e(panel.title)}</h2>{desc}{content}</section>")


_CSS = """body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 24px}header a{color:#9cc3ff}header h1{margin:0 0 4px;font-size:20px}
form.pickers{display:flex;gap:12px;align-items:center;padding:10px 24px;background:#e9edf3;flex-wrap:wrap}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:16px;padding:16px}
.panel{background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 3px #0002;overflow:auto}
.panel h2{font-size:15px;margin:0 0 8px}table{border-collapse:collapse;font-size:13px;width:100%}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eee}.stat{font-size:36px;margin:8px 0}
.empty,.missing,.caption,.desc{color:#667}.error{color:#a00}"""

# draws every chart from its JSON block and wires the pickers; no inline handlers (CSP)
_BOOT = """(function(){if(window.Plotly){document.querySelectorAll('div.chart').forEach(function(d){
var f=JSON.parse(document.getElementById(d.dataset.spec).textContent);
Plotly.newPlot(d,f.data,f.layout,{displaylogo:false,responsive:true});});}
document.querySelectorAll('select[data-autosubmit]').forEach(function(s){
s.addEventListener('change',function(){s.form.submit();});});
document.querySelectorAll('select[data-navigate]').forEach(function(s){
s.addEventListener('change',function(){if(s.value){window.location.href=s.value;}});});})();"""


@functools.lru_cache(maxsize=1)
def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def csp(nonce: str, header: bool = True) -> str:
    """Only our nonce'd scripts run; nothing loads from the network; forms stay on this site.
    (frame-ancestors only works as a header: browsers report it as an error in a <meta>.)"""
    return (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
            "img-src data: blob:; font-src data:; connect-src 'none'; base-uri 'none'; form-action 'self'"
            + ("; frame-ancestors 'none'" if header else ""))


def page(*, title: str, subtitle_html: str, body_html: str, nonce: str, plotly: str | None,
         controls_html: str = "", csp_meta: bool = True) -> str:
    """A whole page. ``plotly``: "inline" (self-contained file), a same-site URL, or None."""
    scripts = ""
    if plotly == "inline":
        scripts = f"<script nonce={nonce}>{plotly_js()}</script>"
    elif plotly:
        scripts = f'<script nonce={nonce} src="{_e(plotly)}"></script>'
    meta = f'<meta http-equiv="Content-Security-Policy" content="{csp(nonce, header=False)}">' if csp_meta else ""
    boot = f"<script nonce={nonce}>{_BOOT}</script>"
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>{meta}"
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style>{scripts}</head><body>"
            f"<header><h1>{_e(title)}</h1><div>{subtitle_html}</div></header>{controls_html}"
            f"<main>{body_html}</main>{boot}</body></html>")
