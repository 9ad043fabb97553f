"""``tenantry dashboard serve``: the same dashboards, live, with tenant, time-range and period pickers.

Routes::

    /                                   fleet dashboards and a tenant picker
    /dashboards/<name>?range=7d&period=day
    /tenant/<id>                        one tenant's dashboards (only that tenant's data)
    /tenant/<id>/dashboards/<name>?range=...&period=...
    /static/plotly.min.js               plotly.js, served from the package (nothing from the internet)
    /healthz

Panels read a materialized copy of the marts (:mod:`.cache`), rebuilt in the background when a
run commits, so a page costs milliseconds instead of one view rebuild per panel; tenant URLs run on
a private in-memory database holding only that tenant's rows of the copy (the guarantee of
``tenantry.querying.tenant_connection``). The warehouse file is only opened, read-only, while a
copy is built, so the server keeps working while a pipeline appends to the lake and rebuilds the
views. Tenant ids outside TENANT_ID_RE, and the reserved ids
(``__unattributed__``, ``__platform__``), are answered 404 without echoing them.
There is no authentication: bind to loopback (the default) or put an authenticating proxy in front
that maps each tenant's users to their /tenant/<id> prefix.
"""

from __future__ import annotations

import datetime as dt
import html
import secrets
from pathlib import Path
from typing import Callable
from urllib.parse import quote, urlencode

import duckdb
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from tenantry.config import TENANT_ID_RE
from tenantry.conventions import UNATTRIBUTED
from tenantry.dashboards import render
from tenantry.dashboards.build import render_dashboard, uses_charts, views_read, visible_panels
from tenantry.dashboards.cache import CacheError, MartCache, marts_read
from tenantry.dashboards.model import Dashboard, load_definitions
from tenantry.dashboards.query import PERIODS, RANGES, Selection, SelectionError
from tenantry.warehouse import WarehouseError

RESERVED_TENANTS = frozenset({UNATTRIBUTED, "__platform__"})
PICKER_TENANTS = 500  # the picker lists the busiest tenants; any other id can be typed
PICKER_MART = "tenant_sre_rollup"
_e = html.escape


def _headers(nonce: str) -> dict[str, str]:
    return {"Content-Security-Policy": render.csp(nonce), "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Frame-Options": "DENY"}


def _html(title: str, subtitle: str, body: str, *, charts: bool = False, controls: str = "",
          status: int = 200) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    text = render.page(title=title, subtitle_html=subtitle, body_html=body, nonce=nonce, controls_html=controls,
                       plotly="/static/plotly.min.js" if charts else None, csp_meta=False)
    return HTMLResponse(text, status_code=status, headers=_headers(nonce))


def _problem(status: int, message: str) -> HTMLResponse:
    return _html("tenantry dashboards", "<a href=/>all dashboards</a>",
                 f"<section class=panel><p class=error>{_e(message)}</p></section>", status=status)


def _valid_tenant(tenant: str) -> bool:
    return bool(TENANT_ID_RE.match(tenant)) and tenant not in RESERVED_TENANTS


def _options(name: str, choices, chosen: str) -> str:
    opts = "".join(f"<option value={_e(c)}{' selected' if c == chosen else ''}>{_e(c)}</option>" for c in choices)
    return f"<select name={name} id=pick-{name} data-autosubmit>{opts}</select>"


class DashboardApp:
    def __init__(self, warehouse: str | Path, definitions: Path | None, default: Selection,
                 now: Callable[[], dt.datetime] | None):
        self.warehouse = str(warehouse)
        self.defs = load_definitions(definitions)  # a bad definition fails at start-up, not per request
        # panels read materialized marts, rebuilt in the background when a run commits; the
        # tenant picker reads the monthly rollup
        self.cache = MartCache(warehouse, marts_read(self.defs) | {PICKER_MART})
        self.default = default
        self.now = now or (lambda: dt.datetime.now(dt.timezone.utc))

    def _selection(self, request: Request) -> Selection:
        q = request.query_params
        return Selection(q.get("range", self.default.range), q.get("period", self.default.period))

    def _tenants(self) -> list[str]:
        try:
            con = self.cache.get().fleet_connection()
        except (WarehouseError, duckdb.Error):
            return []
        try:
            # all-time totals: the monthly blocks hold every hour once, in a few rows per tenant
            rows = con.execute(
                f"select tenant_id from {PICKER_MART} where grain = 'month' group by all "
                f"order by sum(requests) desc, tenant_id limit {PICKER_TENANTS + len(RESERVED_TENANTS)}").fetchall()
        except duckdb.Error:
            return []
        finally:
            con.close()
        return [t for (t,) in rows if isinstance(t, str) and _valid_tenant(t)][:PICKER_TENANTS]

    def _controls(self, sel: Selection, tenant_links: list[tuple[str, str]] | None) -> str:
        tenant_pick = ""
        if tenant_links is not None:
            opts = "".join(f"<option value='{_e(url)}'>{_e(t)}</option>" for t, url in tenant_links)
            tenant_pick = (f"<label>tenant <select id=pick-tenant data-navigate><option value=''>all tenants"
                           f"</option>{opts}</select></label>")
        return (f"<form class=pickers method=get>{tenant_pick}<label>time range {_options('range', RANGES, sel.range)}"
                f"</label><label>period {_options('period', PERIODS, sel.period)}</label>"
                f"<button type=submit>apply</button></form>")

    # -- endpoints ----------------------------------------------------------------------------

    def index(self, request: Request) -> Response:
        links = "".join(f"<li><a href='/dashboards/{quote(n)}'>{_e(d.title)}</a> ({_e(d.audience)})</li>"
                        for n, d in self.defs.items() if not d.tenant_only)
        opts = "".join(f"<option value='/tenant/{quote(t, safe='')}'>{_e(t)}</option>" for t in self._tenants())
        picker = ("<section class=panel><h2>One tenant's view</h2><form method=get action=/tenant>"
                  "<select id=pick-tenant data-navigate><option value=''>choose a tenant</option>"
                  f"{opts}</select> or <input name=id placeholder='tenant id' maxlength=128>"
                  "<button type=submit>open</button></form></section>")
        return _html("tenantry dashboards", "all roles",
                     f"<section class=panel><h2>Dashboards</h2><ul>{links}</ul></section>{picker}")

    def tenant_lookup(self, request: Request) -> Response:
        tenant = request.query_params.get("id", "")
        if not _valid_tenant(tenant):
            return _problem(404, "no such tenant")
        return RedirectResponse(f"/tenant/{quote(tenant, safe='')}", status_code=303)

    def dashboard(self, request: Request) -> Response:
        name = request.path_params["name"]
        tenant = request.path_params.get("tenant")
        d = self.defs.get(name)
        if tenant is not None and not _valid_tenant(tenant):
            return _problem(404, "no such tenant")
        if d is None or (tenant is None and d.tenant_only) or (tenant is not None and not d.per_tenant):
            return _problem(404, "no such dashboard")
        try:
            sel = self._selection(request)
        except SelectionError as e:
            return _problem(400, str(e))
        return self._render(name, d, sel, tenant)

    def _render(self, name: str, d: Dashboard, sel: Selection, tenant: str | None) -> Response:
        try:
            snap = self.cache.get()
            con = (snap.fleet_connection() if tenant is None
                   else snap.tenant_connection(tenant, views_read(visible_panels(d, tenant))))
        except (WarehouseError, CacheError, duckdb.Error) as e:
            return _problem(503, f"the warehouse cannot be read right now: {e}")
        try:
            body, _ = render_dashboard(con, d, sel, tenant, self.now())
        finally:
            con.close()
        qs = urlencode({"range": sel.range, "period": sel.period})
        if tenant is None:
            links = ([(t, f"/tenant/{quote(t, safe='')}/dashboards/{quote(name)}?{qs}") for t in self._tenants()]
                     if d.per_tenant else None)
            subtitle = f"for {_e(d.audience)} · <a href=/>all dashboards</a>"
        else:
            links = None  # a tenant page never lists other tenants
            subtitle = f"tenant {_e(tenant)} · <a href='/tenant/{quote(tenant, safe='')}'>your dashboards</a>"
        return _html(d.title, subtitle, body, charts=uses_charts(d), controls=self._controls(sel, links))

    def tenant_index(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        if not _valid_tenant(tenant):
            return _problem(404, "no such tenant")
        base = f"/tenant/{quote(tenant, safe='')}/dashboards/"
        links = "".join(f"<li><a href='{base}{quote(n)}'>{_e(d.title)}</a></li>"
                        for n, d in self.defs.items() if d.per_tenant)
        return _html(f"tenant {tenant}", f"tenant {_e(tenant)}",
                     f"<section class=panel><h2>Dashboards</h2><ul>{links}</ul></section>")

    def plotly(self, request: Request) -> Response:
        return Response(render.plotly_js(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})

    def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")


def create_app(warehouse: str | Path, *, definitions: Path | None = None,
               default: Selection = Selection("7d", "day"), allowed_hosts: list[str] | None = None,
               now: Callable[[], dt.datetime] | None = None) -> Starlette:
    """The ASGI app. ``allowed_hosts`` guards a loopback server against DNS rebinding."""
    app = DashboardApp(warehouse, definitions, default, now)
    routes = [
        Route("/", app.index), Route("/healthz", app.healthz), Route("/static/plotly.min.js", app.plotly),
        Route("/dashboards/{name}", app.dashboard), Route("/tenant", app.tenant_lookup),
        Route("/tenant/{tenant}", app.tenant_index), Route("/tenant/{tenant}/dashboards/{name}", app.dashboard),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)] if allowed_hosts else []
    return Starlette(routes=routes, middleware=middleware)
