"""Dashboard definitions: the YAML model, loading, and static checks of each panel's SQL.

One file per dashboard in ``dashboards/`` (files starting with ``_`` are not dashboards)::

    title: SRE
    audience: sre
    description: Requests, errors and latency per tenant and service.
    parameters: [tenant, time_range, period]   # what the pickers offer; SQL binds $start $end $period
    tenant_only: false                         # true: only rendered for one tenant (/tenant/<id>)
    panels:
      - title: p95 latency by tenant
        kind: timeseries        # timeseries | bar | table | stat | heatmap
        sql: |
          select date_trunc($period, hour) as t, tenant_id, max(p95_ms) as p95_ms
          from tenant_sre_hourly where hour >= $start and hour < $end group by all order by t
        x: t                    # timeseries, bar, heatmap: the x column
        y: p95_ms               # timeseries, bar: the value; stat: the value; heatmap: the row label
        z: null                 # heatmap only: the cell value
        color: tenant_id        # timeseries, bar: one series per value (optional)
        unit: ms
        fleet_only: false       # true: the panel's view has no tenant_id; hidden in tenant scope
        tenant_only: false      # true: shown only in tenant scope (a fleet panel's one-tenant twin)

Panels read only the marts (``sql/marts/``) and the marts other issues are building, declared
with their columns in ``dashboards/_planned_views.yaml``. Staging views (spans, logs, stg_*),
table functions (read_parquet, ...) and qualified names are refused when a definition loads,
except the table macros of ``sql/marts/`` (``hourly_rollup_range`` and ``daily_rollup_range``):
they read the rollup mart named by their first argument, a string literal, which counts as a view
the panel reads::

    select tenant_id, sum(requests) as requests
    from hourly_rollup_range('tenant_sre_rollup', $start, $end, 'week') group by all
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tenantry import resources

KINDS = ("timeseries", "bar", "table", "stat", "heatmap")
#: parameter name -> the SQL parameters ($name) it provides
PARAMETERS = {"tenant": (), "time_range": ("start", "end"), "period": ("period",)}
_REQUIRED_FIELDS = {"timeseries": ("x", "y"), "bar": ("x", "y"), "heatmap": ("x", "y", "z"), "stat": ("y",),
                    "table": ()}
_ALLOWED_FIELDS = {"timeseries": {"x", "y", "color"}, "bar": {"x", "y", "color"}, "heatmap": {"x", "y", "z"},
                   "stat": {"y"}, "table": set()}


class DashboardError(ValueError):
    """A definition is invalid or a panel's query failed; the message names file and panel."""


class Panel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    title: str = Field(min_length=1)
    kind: str
    sql: str = Field(min_length=1)
    description: str | None = None
    x: str | None = None
    y: str | None = None
    z: str | None = None
    color: str | None = None
    unit: str | None = None
    fleet_only: bool = False
    tenant_only: bool = False

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in KINDS:
            raise ValueError(f"unknown chart kind {v!r}; known kinds: {', '.join(KINDS)}")
        return v

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> "Panel":
        for f in _REQUIRED_FIELDS[self.kind]:
            if not getattr(self, f):
                raise ValueError(f"a {self.kind} panel needs the field {f!r} (a column of its query)")
        extra = [f for f in ("x", "y", "z", "color") if getattr(self, f) and f not in _ALLOWED_FIELDS[self.kind]]
        if extra:
            raise ValueError(f"a {self.kind} panel does not use {', '.join(extra)}; remove it")
        if self.fleet_only and self.tenant_only:
            raise ValueError("a panel cannot be both fleet_only and tenant_only; drop one")
        return self

    def visible(self, tenant: str | None) -> bool:
        """Whether the panel is shown in fleet scope (``tenant`` None) or a tenant's scope."""
        return not (self.fleet_only if tenant is not None else self.tenant_only)

    def fields(self) -> list[str]:
        return [v for v in (self.x, self.y, self.z, self.color) if v]


class Dashboard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    title: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    description: str | None = None
    parameters: list[str] = Field(default_factory=list)
    tenant_only: bool = False
    panels: list[Panel] = Field(min_length=1)

    @field_validator("parameters")
    @classmethod
    def _known_parameters(cls, v: list[str]) -> list[str]:
        for p in v:
            if p not in PARAMETERS:
                raise ValueError(f"unknown parameter {p!r}; known parameters: {', '.join(PARAMETERS)}")
        return v

    @model_validator(mode="after")
    def _tenant_only_needs_tenant(self) -> "Dashboard":
        if self.tenant_only and "tenant" not in self.parameters:
            raise ValueError("tenant_only: true needs 'tenant' in parameters")
        if "tenant" not in self.parameters and any(p.tenant_only for p in self.panels):
            raise ValueError("a tenant_only panel needs 'tenant' in the dashboard's parameters")
        return self

    @property
    def per_tenant(self) -> bool:
        return "tenant" in self.parameters

    def sql_params(self) -> set[str]:
        return {name for p in self.parameters for name in PARAMETERS[p]}


@dataclass(frozen=True)
class PlannedView:
    name: str
    owner: str
    columns: dict[str, str]  # column -> DuckDB type


@dataclass(frozen=True)
class SqlRefs:
    views: frozenset[str]
    params: frozenset[str]


# -- SQL analysis -----------------------------------------------------------------------------


def _walk(node, refs: set, ctes: set, params: set, funcs: list) -> None:
    if isinstance(node, dict):
        if node.get("type") == "BASE_TABLE":
            refs.add((node.get("catalog_name", ""), node.get("schema_name", ""), node.get("table_name", "")))
        elif node.get("type") == "TABLE_FUNCTION":
            funcs.append(node.get("function", {}))
        elif node.get("class") == "PARAMETER":
            params.add(node.get("identifier", ""))
        for item in node.get("cte_map", {}).get("map", []) if isinstance(node.get("cte_map"), dict) else []:
            ctes.add(item.get("key", "").lower())
        for v in node.values():
            _walk(v, refs, ctes, params, funcs)
    elif isinstance(node, list):
        for v in node:
            _walk(v, refs, ctes, params, funcs)


def _parse(sql: str) -> dict:
    con = duckdb.connect(":memory:")
    try:
        return json.loads(con.execute("select json_serialize_sql(?)", [sql]).fetchone()[0])
    finally:
        con.close()


def relations_read(sql: str) -> frozenset[str]:
    """The tables and views one SELECT names (CTEs excluded), whatever else it does; for the cache's
    build order, not a check."""
    tree = _parse(sql)
    if tree.get("error"):
        return frozenset()
    refs: set = set()
    ctes: set = set()
    _walk(tree["statements"], refs, ctes, set(), [])
    return frozenset(r[2].lower() for r in refs) - ctes


def _macro_mart(func: dict) -> str:
    """The mart a call to a mart table macro reads: its first argument, a string literal."""
    name = func.get("function_name", "?")
    args = func.get("arguments") or []
    first = (args[0].get("expression") or {}) if args else {}
    literal = first.get("literal") or {}
    text = literal.get("text") if literal.get("kind") == "STRING" else None
    if first.get("class") != "CONSTANT" or not isinstance(text, str):
        raise DashboardError(f"{name}(...) needs the rollup mart's name as its first argument, in quotes, "
                             f"e.g. {name}('tenant_sre_rollup', $start, $end, $period)")
    return text.lower()


@functools.lru_cache(maxsize=1024)
def analyze_sql(sql: str) -> SqlRefs:
    """The views and ``$parameters`` one SELECT reads; raises DashboardError for anything else."""
    tree = _parse(sql)
    if tree.get("error"):
        raise DashboardError(f"the SQL is not a single valid SELECT: {tree.get('error_message')}")
    if len(tree["statements"]) != 1:
        raise DashboardError(f"the SQL holds {len(tree['statements'])} statements; a panel runs exactly one SELECT")
    refs: set = set()
    ctes: set = set()
    params: set = set()
    funcs: list = []
    _walk(tree["statements"], refs, ctes, params, funcs)
    macros = mart_macros()
    other = sorted({f.get("function_name", "?") for f in funcs if f.get("function_name", "?").lower() not in macros})
    if other:
        raise DashboardError(f"the SQL calls table function(s) {', '.join(other)}; panels read only marts, by "
                             f"name, or through the mart macros {', '.join(sorted(macros)) or '(none)'}")
    qualified = sorted([".".join(p for p in r if p) for r in refs if r[0] or r[1]] + [
        ".".join(p for p in (f.get("catalog"), f.get("schema"), f.get("function_name")) if p)
        for f in funcs if f.get("catalog") or f.get("schema")])
    if qualified:
        raise DashboardError(f"the SQL names {', '.join(qualified)}; use bare mart names (no catalog or schema)")
    views = (frozenset(r[2].lower() for r in refs) - ctes) | {_macro_mart(f) for f in funcs}
    return SqlRefs(views=frozenset(views), params=frozenset(params))


# -- known views ------------------------------------------------------------------------------


def staging_views() -> frozenset[str]:
    """Names panels must never read: the views in sql/staging/ (a mart may share a lake table's
    name, e.g. invoice_lines, so lake table names alone are not refused)."""
    root = resources.sql_dir() / "staging"
    return frozenset(f.stem for f in root.glob("*.sql")) - mart_views()


@functools.lru_cache(maxsize=1)
def _mart_sql() -> dict[str, str]:
    return {f.stem: f.read_text(encoding="utf-8") for f in (resources.sql_dir() / "marts").glob("*.sql")}


def mart_views() -> frozenset[str]:
    """The views of sql/marts/: one per file, named like the file (files of macros only are not views)."""
    return frozenset(stem for stem, sql in _mart_sql().items()
                     if re.search(rf"create\s+(or\s+replace\s+)?view\s+{re.escape(stem)}\b", sql, re.IGNORECASE))


def mart_macros() -> frozenset[str]:
    """The table macros of sql/marts/ that panels may call (each reads the mart its first argument names)."""
    return frozenset(m.lower() for sql in _mart_sql().values()
                     for m in re.findall(r"create\s+(?:or\s+replace\s+)?macro\s+(\w+)\s*\([^)]*\)\s+as\s+table\b",
                                         sql, re.IGNORECASE))


def load_planned(folder: Path | None = None) -> dict[str, PlannedView]:
    """``dashboards/_planned_views.yaml``: marts other issues are building, with their columns."""
    f = (folder or resources.dashboards_dir()) / "_planned_views.yaml"
    if not f.exists():
        return {}
    try:
        raw = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise DashboardError(f"dashboards/{f.name}: not valid YAML: {e}") from None
    out = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("columns"), dict) or not spec["columns"]:
            raise DashboardError(f"dashboards/{f.name}: {name}: expected {{owner: ..., columns: {{name: type}}}}")
        out[name] = PlannedView(name, str(spec.get("owner", "?")), {str(k): str(v) for k, v in spec["columns"].items()})
    return out


def check_static(name: str, d: Dashboard, planned: dict[str, PlannedView]) -> dict[str, SqlRefs]:
    """Check every panel's SQL without a warehouse: marts only, declared parameters only.

    Returns the panel title -> SqlRefs; raises DashboardError naming file, panel and the fix.
    """
    marts, staging = mart_views(), staging_views()
    known = marts | set(planned)
    declared = d.sql_params()
    if len({p.title for p in d.panels}) != len(d.panels):
        raise DashboardError(f"dashboards/{name}.yaml: two panels share a title; titles must be unique")
    out = {}
    for p in d.panels:
        where = f"dashboards/{name}.yaml: panel {p.title!r}"
        try:
            refs = analyze_sql(p.sql)
        except DashboardError as e:
            raise DashboardError(f"{where}: {e}") from None
        for v in sorted(refs.views):
            if v in staging or v.startswith("stg_"):
                raise DashboardError(
                    f"{where}: reads staging view {v!r}; panels read only marts (sql/marts/): "
                    f"{', '.join(sorted(marts))}, or a planned mart in dashboards/_planned_views.yaml")
            if v not in known:
                raise DashboardError(
                    f"{where}: unknown view {v!r}; known marts: {', '.join(sorted(known))}")
        missing = sorted(refs.params - declared)
        if missing:
            needs = sorted({k for k, ps in PARAMETERS.items() for m in missing if m in ps})
            raise DashboardError(
                f"{where}: uses ${', $'.join(missing)} but the dashboard does not declare parameter(s) "
                f"{', '.join(needs) or '(none provides it)'}; add them to `parameters:`")
        out[p.title] = refs
    return out


def load_file(f: Path, planned: dict[str, PlannedView]) -> Dashboard:
    """One definition file, parsed and statically checked; raises DashboardError naming it."""
    try:
        raw = yaml.safe_load(f.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DashboardError(f"dashboards/{f.name}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise DashboardError(f"dashboards/{f.name}: expected a mapping with title, audience and panels")
    try:
        d = Dashboard.model_validate(raw)
    except ValidationError as e:
        errs = "; ".join(
            f"{'.'.join(map(str, x['loc'])) or '(top)'}: {x['msg'].removeprefix('Value error, ')}"
            for x in e.errors())
        raise DashboardError(f"dashboards/{f.name}: {errs}") from None
    check_static(f.stem, d, planned)
    return d


def definition_files(folder: Path | None = None) -> list[Path]:
    folder = folder or resources.dashboards_dir()
    return [f for f in sorted(folder.glob("*.yaml")) if not f.name.startswith("_")]


def load_definitions(folder: Path | None = None) -> dict[str, Dashboard]:
    """Every dashboard in ``folder`` (default: the shipped ``dashboards/``), statically checked."""
    folder = folder or resources.dashboards_dir()
    planned = load_planned(folder)
    out = {f.stem: load_file(f, planned) for f in definition_files(folder)}
    if not out:
        raise DashboardError(f"{folder}: no dashboard definitions (*.yaml) found")
    return out
