"""Reading the lake and committing billing runs, without touching ``tenantry.duckdb``.

Billing reads committed lake rows through an in-memory DuckDB connection (so it works before
``build_views`` and never takes the database's write lock) and writes each run as Parquet parts
plus a manifest, under the warehouse's writer lock (so ``discard_uncommitted`` of a concurrent
pipeline can never remove a run half-written).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal
from typing import Any, Iterable

import duckdb
import pyarrow as pa

from tenantry import schemas
from tenantry.warehouse import Warehouse

UTC = dt.timezone.utc


def connect(wh: Warehouse) -> duckdb.DuckDBPyConnection:
    """An in-memory connection where ``wh.render_sql`` sources resolve (committed runs only)."""
    con = duckdb.connect()
    con.execute(f"create view _committed_runs as {wh.committed_runs_sql()}")
    return con


def rows(wh: Warehouse, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    """Run ``sql`` (with ``{{ lake('t') }}`` placeholders) and return rows as dicts."""
    con = connect(wh)
    try:
        cur = con.execute(wh.render_sql(sql), params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        con.close()


def from_us(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=int(us))


def digest(*parts: Any, n: int = 32) -> str:
    h = hashlib.blake2b(digest_size=32)
    for p in parts:
        h.update(str(p).encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()[:n]


def table(name: str, records: Iterable[dict[str, Any]]) -> pa.Table:
    """Rows as a lake table of ``name``, typed by its schema (Decimals and datetimes exact)."""
    schema = schemas.LAKE_TABLES[name]
    records = list(records)
    cols = {f.name: [r.get(f.name) for r in records] for f in schema}
    arrays = []
    for f in schema:
        vals = cols[f.name]
        if pa.types.is_timestamp(f.type):
            arr = pa.array(vals, pa.timestamp("us", tz="UTC")).cast(f.type)
        elif pa.types.is_decimal(f.type):
            arr = pa.array([None if v is None else Decimal(v) for v in vals], f.type)
        else:
            arr = pa.array(vals, f.type)
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=schema)


def commit_run(wh: Warehouse, run_id: str, parts: dict[str, pa.Table], summary: dict) -> None:
    """Write each table's part and the manifest (the commit point). Caller holds the writer lock."""
    for name, t in parts.items():
        wh.write_part(name, run_id, "part-0", t)
    wh.commit(run_id, inputs=[], summary=summary)
