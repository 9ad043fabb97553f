"""Running SQL on a warehouse for people: read-only, and optionally scoped to one tenant.

Tenant scope is enforced, not requested: the tenant's rows of every view that has a ``tenant_id``
are copied into a private in-memory database (the id is a bound parameter, never spliced into
SQL), the warehouse is detached, and file access is switched off and locked before the user's SQL
runs. Views without a ``tenant_id`` column (fleet-wide figures) are not visible in tenant scope.
"""

from __future__ import annotations

import dataclasses

import duckdb

from tenantry.config import TENANT_ID_RE
from tenantry.warehouse import Warehouse


class QueryError(ValueError):
    """The SQL failed or the tenant id is invalid; the message says what DuckDB objected to."""


@dataclasses.dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple]


def _fetch(con, sql: str, params=None) -> QueryResult:
    cur = con.execute(sql, params or [])
    if cur.description is None:
        return QueryResult([], [])
    return QueryResult([d[0] for d in cur.description], cur.fetchall())


#: operator-only views: they have a tenant_id but hold internal figures (our cost and margin for
#: the tenant, leakage findings, processor internals), so tenant scope never includes them
INTERNAL_VIEWS = frozenset({
    "tenant_cost_daily", "tenant_unit_cost", "tenant_margin_monthly", "unallocated_cost",
    "revenue_leakage", "processor_stats", "quarantine", "stg_processor_stats",
})


def tenant_connection(warehouse: str, tenant: str, views: list[str] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory connection holding only ``tenant``'s rows of the warehouse views (or of the
    given ``views`` only, which is faster when the caller knows what it will read)."""
    if not isinstance(tenant, str) or not TENANT_ID_RE.match(tenant):
        raise QueryError(
            f"tenant id {tenant!r} is not valid: use 1-128 letters, digits and . _ : @ -"
        )
    wh = Warehouse(warehouse)
    wh.connect().close()  # a clear error when there is no warehouse
    con = duckdb.connect(":memory:")
    path = str(wh.db_path).replace("'", "''")
    con.execute(f"attach '{path}' as wh (read_only)")
    found = con.execute(
        "select view_name from duckdb_views() where database_name = 'wh' and not internal "
        "and view_name not like '\\_%' escape '\\'"
    ).fetchall()
    wanted = set(views) if views is not None else None
    for (view,) in found:
        if view in INTERNAL_VIEWS or (wanted is not None and view not in wanted):
            continue
        cols = [r[0] for r in con.execute(f'describe wh.main."{view}"').fetchall()]
        if "tenant_id" in cols:
            con.execute(f'create table main."{view}" as select * from wh.main."{view}" where tenant_id = ?', [tenant])
    con.execute("detach wh")
    con.execute("set TimeZone = 'UTC'")  # days and hours bucket the same for every reader
    con.execute("set enable_external_access = false")
    con.execute("set lock_configuration = true")
    return con


def run(warehouse: str, sql: str, tenant: str | None = None) -> QueryResult:
    """Run ``sql`` read-only on the warehouse (or on one tenant's copy of it)."""
    if not sql.strip():
        raise QueryError("empty SQL; try: select * from tenant_sre_hourly limit 10")
    con = tenant_connection(warehouse, tenant) if tenant is not None else Warehouse(warehouse).connect()
    try:
        return _fetch(con, sql)
    except duckdb.Error as e:
        raise QueryError(f"query failed: {e}") from None
    finally:
        con.close()


def describe_views(warehouse: str) -> QueryResult:
    con = Warehouse(warehouse).connect()
    try:
        return _fetch(
            con,
            "select v.view_name as view, string_agg(c.column_name, ', ' order by c.column_index) as columns "
            "from duckdb_views() v join duckdb_columns() c on c.table_name = v.view_name "
            "where not v.internal and v.view_name not like '\\_%' escape '\\' "
            "group by v.view_name order by v.view_name",
        )
    finally:
        con.close()
