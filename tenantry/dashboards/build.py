"""``tenantry dashboard build``: every dashboard as a self-contained HTML file, plus an index.

Pages embed plotly.js and a Content-Security-Policy that forbids loading anything, so they open
offline from a folder or an email attachment. With a tenant, only the dashboards that declare the
``tenant`` parameter are built, each panel runs on a private copy of that tenant's rows
(the guarantee of ``tenantry.querying.tenant_connection``), and fleet-only panels are left out.
The marts the pages read are materialized once (:func:`.cache.build_snapshot`), not per panel.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import os
import secrets
import uuid
from pathlib import Path

import duckdb

from tenantry import querying
from tenantry.dashboards import render
from tenantry.dashboards.cache import CacheError, build_snapshot, marts_read
from tenantry.dashboards.model import Dashboard, DashboardError, Panel, analyze_sql, load_definitions
from tenantry.dashboards.query import PanelData, Selection, relations, run_panel

logger = logging.getLogger(__name__)
CHART_KINDS = {"timeseries", "bar", "heatmap"}


def visible_panels(d: Dashboard, tenant: str | None) -> list[Panel]:
    """The panels shown in fleet scope (``tenant`` None) or in one tenant's scope."""
    return [p for p in d.panels if p.visible(tenant)]


def render_dashboard(con: duckdb.DuckDBPyConnection, d: Dashboard, selection: Selection,
                     tenant: str | None = None, now: dt.datetime | None = None,
                     ) -> tuple[str, list[tuple[Panel, PanelData]]]:
    """(HTML of the panels, each panel's data) on ``con`` for one picker selection."""
    available = relations(con)
    params = selection.params(now)
    parts, results = [], []
    for i, p in enumerate(visible_panels(d, tenant)):
        data = run_panel(con, p, analyze_sql(p.sql), params, available)
        parts.append(render.render_panel(i, p, data))
        results.append((p, data))
    return "".join(parts), results


def views_read(panels) -> set[str]:
    """The views the given panels read."""
    return {v for p in panels for v in analyze_sql(p.sql).views}


def uses_charts(d: Dashboard) -> bool:
    return any(p.kind in CHART_KINDS for p in d.panels)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a browser or web server never sees half a page


def build(warehouse: str | Path, out: str | Path, tenant: str | None = None, *,
          selection: Selection | None = None, definitions: Path | None = None, strict: bool = False,
          now: dt.datetime | None = None) -> list[Path]:
    """Write ``index.html`` and one page per dashboard into ``out``; returns the paths, index first.

    A panel whose view does not exist yet says so on its page. A panel whose query fails shows
    the error and is logged; with ``strict`` the build then raises DashboardError listing them.
    """
    defs = load_definitions(definitions)
    selection = selection or Selection()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = {n: d for n, d in defs.items()
              if not ((tenant is not None and not d.per_tenant) or (tenant is None and d.tenant_only))}
    try:
        # each mart is computed once and shared by every panel that reads it
        snap = build_snapshot(warehouse, marts_read(wanted))
        con = (snap.fleet_connection() if tenant is None else
               snap.tenant_connection(tenant, views_read(p for d in wanted.values() for p in visible_panels(d, tenant))))
    except (querying.QueryError, CacheError) as e:
        raise DashboardError(str(e)) from None
    written: list[Path] = []
    failures: list[str] = []
    links = []
    picked = f"time range {selection.range} · period {selection.period}"
    try:
        for name, d in defs.items():
            if (tenant is not None and not d.per_tenant) or (tenant is None and d.tenant_only):
                continue
            body, results = render_dashboard(con, d, selection, tenant, now)
            for p, data in results:
                if data.status == "error":
                    failures.append(f"dashboards/{name}.yaml: panel {p.title!r}: {data.message}")
            scope = f"tenant {html.escape(tenant)}" if tenant is not None else f"for {html.escape(d.audience)}"
            f = out / f"{name}.html"
            _write(f, render.page(
                title=d.title, nonce=secrets.token_urlsafe(16),
                subtitle_html=f"{scope} · {html.escape(picked)} · <a href=index.html>all dashboards</a>",
                body_html=body, plotly="inline" if uses_charts(d) else None))
            written.append(f)
            links.append(f"<li><a href='{html.escape(name)}.html'>{html.escape(d.title)}</a> "
                         f"({html.escape(d.audience)})</li>")
    finally:
        con.close()
    idx = out / "index.html"
    _write(idx, render.page(
        title="tenantry dashboards", nonce=secrets.token_urlsafe(16), plotly=None,
        subtitle_html=html.escape(f"tenant {tenant}" if tenant is not None else "all roles"),
        body_html=f"<section class=panel><ul>{''.join(links)}</ul></section>"))
    written.insert(0, idx)
    for msg in failures:
        logger.warning("%s", msg)
    if strict and failures:
        raise DashboardError("some panels failed (pages were written):\n" + "\n".join(failures))
    return written
