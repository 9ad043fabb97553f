"""Helpers for testing code that feeds or reads the ledger (no Beam needed).

``ledger_run`` does what the batch driver does around the ledger: write the run's usage_events
part, call :func:`update_for_run`, commit the manifest and rebuild the views::

    wh = Warehouse.open(tmp_path)
    report = ledger_run(wh, "r1", [UsageEvent("e1", "acme", "api.calls", "2", t0)], cfg, now=t0)
    assert balances(wh) == {("acme", "api.calls", day_start, "{}"): Decimal("2")}
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from decimal import Decimal

import duckdb
import pyarrow as pa

from tenantry import schemas
from tenantry.config import Config
from tenantry.ledger.run import LedgerReport, update_for_run
from tenantry.warehouse import Warehouse


@dataclasses.dataclass(frozen=True)
class UsageEvent:
    event_id: str
    tenant_id: str
    meter: str
    quantity: str | Decimal
    time: dt.datetime
    dimensions: tuple[tuple[str, str], ...] = ()
    unit: str | None = None
    source: str = "app"
    trace_id: str | None = None
    span_id: str | None = None


def usage_table(events: list[UsageEvent], ingest_batch: str = "test-batch") -> pa.Table:
    """A USAGE_EVENTS table of ``events``."""
    cols = {
        "event_id": [e.event_id for e in events], "tenant_id": [e.tenant_id for e in events],
        "meter": [e.meter for e in events],
        "quantity": pa.array([Decimal(str(e.quantity)) for e in events], schemas.QUANTITY),
        "unit": pa.array([e.unit for e in events], pa.string()),
        "time": pa.array([e.time for e in events], schemas.TS),
        "dimensions": pa.array([list(e.dimensions) for e in events], schemas.ATTRS),
        "source": [e.source for e in events], "service_name": ["svc"] * len(events),
        "trace_id": pa.array([e.trace_id for e in events], pa.string()),
        "span_id": pa.array([e.span_id for e in events], pa.string()),
        "ingest_batch": [ingest_batch] * len(events),
    }
    return schemas.conform("usage_events", pa.table(cols))


def ledger_run(wh: Warehouse, run_id: str, events: list[UsageEvent] | pa.Table, cfg: Config,
               now: dt.datetime, build_views: bool = False) -> LedgerReport:
    """Write ``events`` as the run's usage, update the ledger, commit the run."""
    data = events if isinstance(events, pa.Table) else usage_table(events, ingest_batch=f"in-{run_id}")
    wh.write_part("usage_events", run_id, "usage-0", data)
    report = update_for_run(wh, run_id, cfg, now)
    wh.commit(run_id, [f"in-{run_id}"])
    if build_views:
        wh.build_views()
    return report


def committed(wh: Warehouse, table: str, sql: str = "select * from t") -> list[tuple]:
    """Rows of ``sql`` over the committed rows of lake ``table`` (as ``t``), without the views."""
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute("create temp table _committed_runs (run_id varchar)")
        con.executemany("insert into _committed_runs values (?)", [[r["run_id"]] for r in wh.committed_runs()])
        con.execute(f"create temp view t as select * from {wh.lake_source(table)}")
        return con.execute(sql).fetchall()
    finally:
        con.close()


def balances(wh: Warehouse) -> dict[tuple, Decimal]:
    """{(tenant, meter, period_start, dimensions_key): balance} over the committed ledger."""
    rows = committed(wh, "usage_ledger", "select tenant_id, meter, period_start, dimensions_key, sum(quantity) "
                                          "from t group by all")
    return {r[:4]: r[4] for r in rows}


def run_id_for(*parts: str) -> str:
    return "r" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
