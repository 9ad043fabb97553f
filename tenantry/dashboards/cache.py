"""A materialized copy of the marts the dashboards read, rebuilt when a run commits.

The marts are views that rebuild everything from partial rows (sketch buckets, the ledger) on
every query: over 10,000 tenants x 90 days one panel takes seconds. The cache computes each mart
once into a private in-memory DuckDB, and panels query those tables instead.

- A mart built on other marts (the rollups on tenant_sre_hourly and tenant_usage_daily, and the
  fleet rollups on those) reads their materialized copies: its view's own SQL runs in the cache
  with the cache first on the search path, so every mart is computed once per build. A mart only
  built on (read by no panel) is dropped as soon as nothing left to build reads it.
- The warehouse's macros are defined in the cache (and in every tenant copy): panels call the
  rollup range macros (sql/marts/rollup_range.sql), which then read the cached rollups.
- Rows are sorted by (grain, time, tenant_id): fleet panels ask for a time range, and DuckDB's
  per-row-group min/max (zone maps) skip the row groups outside it. Tables of 50,000 rows or
  more get an index on tenant_id, so copying one tenant's rows is a lookup, not a scan.
- Keyed by the committed runs (the manifest names in ``lake/_manifests/``) and the views'
  definition stamp: a new manifest or rebuilt views make the key stale.
- A stale cache is rebuilt in a background thread; until the new one is ready, readers keep
  getting the previous snapshot (a snapshot never changes once built). Only the very first
  snapshot is built in the caller's thread.
- The warehouse file is attached read-only only while a snapshot is built, then detached: the
  server never holds DuckDB's file lock between builds, so pipelines can rebuild the views.

Tenant scope keeps the guarantee of :func:`tenantry.querying.tenant_connection`: a tenant page
runs on its own in-memory database that holds only that tenant's rows, copied from the snapshot
with the tenant id bound as a parameter, with file access off and the configuration locked.
A tenant's SQL therefore cannot name, join or scan another tenant's rows: they are not in its
database. (Tenant-scoping table macros over the shared snapshot were rejected: the panel SQL would
run in the database that holds every tenant's rows, one forgotten macro away from a leak.)
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import duckdb

from tenantry import querying
from tenantry.config import TENANT_ID_RE
from tenantry.dashboards.model import Dashboard, analyze_sql, mart_views, relations_read
from tenantry.dashboards.query import macro_statements
from tenantry.warehouse import DB_NAME, Warehouse, WarehouseError

logger = logging.getLogger(__name__)

#: columns that order a mart in time, most specific first; the first one present is the sort key
TIME_COLUMNS = ("hour", "minute", "day", "week", "month", "period_start", "time", "date")
#: a cached mart this big gets an index on tenant_id (tenant copies look their rows up)
INDEX_MIN_ROWS = 50_000
#: an index lookup beats a scan up to about this share of a table's rows (DuckDB's default, 0.1%,
#: would scan for a tenant with three services' hours over a quarter)
INDEX_SCAN_SHARE = 0.02
_VIEW_SQL = re.compile(r'^\s*create\s+(?:or\s+replace\s+)?view\s+(?:"(?:[^"]|"")+"|[\w.]+)\s+as\s+(.*?);?\s*$',
                       re.IGNORECASE | re.DOTALL)
#: how often readers look for new manifests (a directory listing; cheap, but not per panel)
CHECK_EVERY_S = 1.0
LOCK_WAIT_S = 5.0


class CacheError(RuntimeError):
    """The cache could not be built; the message says which mart failed and why."""


def cache_key(warehouse: str | Path) -> tuple:
    """What a snapshot is valid for: the committed runs and the views' definition stamp."""
    wh = Warehouse(warehouse)
    try:
        runs = tuple(sorted(p.name for p in wh.manifests.iterdir()
                            if p.suffix == ".json" and not p.name.startswith(".")))
    except FileNotFoundError:
        runs = ()
    stamp = wh.root / ".views.sha256"
    try:
        views = stamp.read_text()
    except OSError:
        views = ""
    try:
        st = wh.db_path.stat()
        db = (st.st_mtime_ns, st.st_size)
    except OSError:
        db = None
    return runs, views, db


def _attach(con: duckdb.DuckDBPyConnection, wh: Warehouse, wait_s: float) -> None:
    """Attach the warehouse read-only, waiting while a pipeline holds its write lock."""
    path = str(wh.db_path).replace("'", "''")
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            con.execute(f"attach '{path}' as wh (read_only)")
            return
        except duckdb.Error as e:
            if "lock" not in str(e).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


@dataclass
class Snapshot:
    """The materialized marts of one cache key. Never modified after it is built."""

    key: tuple
    con: duckdb.DuckDBPyConnection
    columns: dict[str, list[str]]  # mart -> columns
    build_s: float = 0.0
    rows: int = 0
    macros: list[str] = field(default_factory=list)  # create statements, replayed in tenant copies
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fleet_connection(self) -> duckdb.DuckDBPyConnection:
        """A cursor on the snapshot (every tenant's rows): for fleet pages only."""
        with self._lock:  # cursor() on a connection shared between threads
            return self.con.cursor()

    def tenant_connection(self, tenant: str, views: Iterable[str] | None = None) -> duckdb.DuckDBPyConnection:
        """A private in-memory database with only ``tenant``'s rows of the cached marts that have
        a tenant_id and are not operator-only (or of ``views`` only)."""
        if not isinstance(tenant, str) or not TENANT_ID_RE.match(tenant):
            raise querying.QueryError(f"tenant id {tenant!r} is not valid: use 1-128 letters, digits and . _ : @ -")
        wanted = set(views) if views is not None else None
        src = self.fleet_connection()
        con = duckdb.connect(":memory:")
        try:
            for mart, cols in self.columns.items():
                if "tenant_id" not in cols or mart in querying.INTERNAL_VIEWS:
                    continue
                if wanted is not None and mart not in wanted:
                    continue
                part = src.sql(f'select * from "{mart}" where tenant_id = ?', params=[tenant]).to_arrow_table()  # noqa: F841
                con.execute(f'create table main."{mart}" as select * from part')
        finally:
            src.close()
        for stmt in self.macros:
            con.execute(stmt)
        con.execute("set TimeZone = 'UTC'")
        con.execute("set enable_external_access = false")
        con.execute("set lock_configuration = true")
        return con

    def memory_bytes(self) -> int:
        with self._lock:
            row = self.con.execute("select sum(memory_usage_bytes) from duckdb_memory()").fetchone()
        return int(row[0] or 0)


def _view_sql(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The warehouse's views: name -> the SELECT that defines it (None when it cannot be split off)."""
    out = {}
    for name, sql in con.execute("select view_name, sql from duckdb_views() "
                                 "where database_name = 'wh' and schema_name = 'main' and not internal").fetchall():
        m = _VIEW_SQL.match(sql or "")
        out[name.lower()] = m.group(1) if m else None
    return out


def _build_order(wanted: set[str], views: dict[str, str | None]) -> list[tuple[str, frozenset[str]]]:
    """``wanted`` and the marts they are built on (transitively), each after what it reads: a list
    of (mart, the marts it reads)."""
    marts = mart_views()
    order: list[tuple[str, frozenset[str]]] = []

    def visit(v: str, path: frozenset) -> None:
        if v in path or any(v == m for m, _ in order):
            return
        body = views.get(v)
        deps = frozenset(relations_read(body) & marts & set(views)) if body else frozenset()
        for dep in sorted(deps):
            visit(dep, path | {v})
        order.append((v, deps))

    for v in sorted(wanted):
        visit(v, frozenset())
    return order


def _sort_key(cols: list[str]) -> str:
    order = ([c for c in ("grain",) if c in cols] + [c for c in TIME_COLUMNS if c in cols][:1]
             + [c for c in ("tenant_id",) if c in cols])
    return (" order by " + ", ".join(f'"{c}"' for c in order)) if order else ""


def _materialize(con: duckdb.DuckDBPyConnection, mart: str, sql: str | None, cols: list[str], for_panels: bool) -> None:
    """``create table`` the mart from its view's own SQL (which finds the marts cached so far
    first on the search path), or from the warehouse's view when the SQL cannot be run apart."""
    by = _sort_key(cols) if for_panels else ""  # marts only built on are read whole, once
    try:
        if sql is not None:
            con.execute(f'create table memory.main."{mart}" as select * from ({sql}){by}')
            got = [c for (c,) in con.execute(
                "select column_name from duckdb_columns() where database_name = 'memory' and table_name = ? "
                "order by column_index", [mart]).fetchall()]
            if got == cols:
                return
            con.execute(f'drop table memory.main."{mart}"')  # the view names its columns apart
        con.execute(f'create table memory.main."{mart}" as select * from wh.main."{mart}"{by}')
    except duckdb.Error as e:
        raise CacheError(f"caching mart {mart!r} failed: {e}") from None


def build_snapshot(warehouse: str | Path, marts: Iterable[str], wait_s: float = LOCK_WAIT_S) -> Snapshot:
    """Materialize ``marts`` (those that exist in the warehouse) into a new in-memory snapshot."""
    wh = Warehouse(warehouse)
    if not wh.db_path.exists():
        raise WarehouseError(f"{wh.root}: no warehouse here (no {DB_NAME}); run `tenantry run batch --input ... "
                             f"--warehouse {wh.root}` first")
    t0 = time.perf_counter()
    key = cache_key(warehouse)
    con = duckdb.connect(":memory:")
    con.execute("set TimeZone = 'UTC'")  # days and hours bucket the same as on the warehouse
    con.execute(f"set index_scan_percentage = {INDEX_SCAN_SHARE}")
    # building from a partial run would pin a mix; the key read above is a lower bound, and a
    # run committing meanwhile makes the key stale again, so the next check rebuilds
    _attach(con, wh, wait_s)
    columns: dict[str, list[str]] = {}
    rows = 0
    built: set[str] = set()
    try:
        existing = {v.lower(): cols for v, cols in con.execute(
            "select table_name, list(column_name order by column_index) from duckdb_columns() "
            "where database_name = 'wh' and schema_name = 'main' group by table_name").fetchall()}
        views = _view_sql(con)
        macros = macro_statements(con, "wh")
        for stmt in macros:
            con.execute(stmt)
        # a mart's own SQL finds the marts it reads in the cache first, the rest in the warehouse
        con.execute("set search_path = 'memory.main,wh.main'")
        wanted = {m for m in marts if m in existing}  # a mart not there yet: "not available yet"
        order = _build_order(wanted, views)
        for i, (mart, _) in enumerate(order):
            cols = existing[mart]
            _materialize(con, mart, views.get(mart), cols, for_panels=mart in wanted)
            built.add(mart)
            if mart in wanted:
                n = con.execute(f'select count(*) from memory.main."{mart}"').fetchone()[0]
                rows += n
                columns[mart] = cols
                if "tenant_id" in cols and n >= INDEX_MIN_ROWS:
                    con.execute(f'create index "{mart}__tenant_id" on memory.main."{mart}" (tenant_id)')
            # a mart only built on goes as soon as nothing left to build reads it (memory)
            later = {d for _, deps in order[i + 1:] for d in deps}
            for helper, _ in order[:i + 1]:
                if helper not in wanted and helper not in later and helper in built:
                    con.execute(f'drop table memory.main."{helper}"')
                    built.discard(helper)
    finally:
        con.execute("reset search_path")
        con.execute("detach wh")
    con.execute("set enable_external_access = false")  # panels read the cached tables, nothing else
    con.execute("set lock_configuration = true")
    return Snapshot(key, con, columns, time.perf_counter() - t0, rows, macros)


def marts_read(defs: dict[str, Dashboard]) -> frozenset[str]:
    """Every view some panel of ``defs`` reads: what the cache materializes."""
    return frozenset(v for d in defs.values() for p in d.panels for v in analyze_sql(p.sql).views)


class MartCache:
    """The current snapshot of ``marts`` for one warehouse, refreshed in the background.

    ``get()`` returns the newest ready snapshot and, when the committed runs changed, starts one
    background rebuild (at most one at a time). A failed rebuild is logged and retried on the
    next check; readers keep the previous snapshot.
    """

    def __init__(self, warehouse: str | Path, marts: Iterable[str], check_every_s: float = CHECK_EVERY_S):
        self.warehouse = str(warehouse)
        self.marts = frozenset(marts)
        self.check_every_s = check_every_s
        self._snap: Snapshot | None = None
        self._lock = threading.Lock()
        self._building: threading.Thread | None = None
        self._checked = 0.0
        self.last_error: str | None = None

    def get(self) -> Snapshot:
        """The newest ready snapshot; builds the first one in this thread (raises WarehouseError
        or duckdb.Error when the warehouse cannot be read)."""
        snap = self._snap
        if snap is None:
            with self._lock:
                if self._snap is None:
                    self._snap = build_snapshot(self.warehouse, self.marts)
                    self._checked = time.monotonic()
                return self._snap
        now = time.monotonic()
        if now - self._checked >= self.check_every_s:
            self._checked = now
            if cache_key(self.warehouse) != snap.key:
                self._refresh_in_background()
        return snap

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._building is not None and self._building.is_alive():
                return
            self._building = threading.Thread(target=self._rebuild, name="mart-cache", daemon=True)
            self._building.start()

    def _rebuild(self) -> None:
        try:
            snap = build_snapshot(self.warehouse, self.marts)
        except (WarehouseError, CacheError, duckdb.Error) as e:
            self.last_error = str(e)
            logger.warning("dashboard cache rebuild failed (serving the previous one): %s", e)
            return
        self.last_error = None
        self._snap = snap  # one reference swap: readers see the old or the new snapshot, whole
        logger.info("dashboard cache rebuilt in %.1fs (%d rows)", snap.build_s, snap.rows)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a running background rebuild (tests, benchmarks)."""
        t = self._building
        if t is not None:
            t.join(timeout)
