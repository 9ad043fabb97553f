"""Cost files into the warehouse: one committed run per file, allocated to tenants on the way in.

Each cost file is its own run, ``cost-<first 24 hex of its SHA-256>``, whose input id is
``cost:<sha256>``: ingesting the same bytes again (any path, any name) is a no-op. The run writes
the file's normalized ``cost_lines`` and their ``cost_allocations`` (measured against the
telemetry already in the warehouse), then commits with ``Warehouse.commit``; a crash before the
manifest leaves nothing visible.

A re-delivered file at the same path or S3 key (CUR and FOCUS exports are restated during the
month) is a new input; the views keep only the newest ingest of each ``source_key``.

When telemetry arrives after the cost, or the rules change, :func:`reallocate` writes a new
allocation of every current cost file (run ``costalloc-<hash>``, idempotent for the same cost,
rules and drivers); the views use each cost file's newest allocation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tenantry.cost import allocate as alloc_mod
from tenantry.cost import drivers as drv
from tenantry.cost import readers, rules
from tenantry.schemas import conform
from tenantry.warehouse import Warehouse, WarehouseError

PART_ROWS = 1_000_000


@dataclasses.dataclass
class IngestReport:
    ingested: list[dict] = dataclasses.field(default_factory=list)  # one per new file
    skipped: list[str] = dataclasses.field(default_factory=list)  # already ingested (same content)
    warnings: list[str] = dataclasses.field(default_factory=list)


def _catalog(cfg: Any) -> list[str]:
    return sorted(getattr(cfg, "tenants", None) or {})


def _warehouse(wh: Warehouse | str | Path) -> Warehouse:
    return wh if isinstance(wh, Warehouse) else Warehouse.open(wh)


def _measure(wh: Warehouse, cost_cfg: rules.CostConfig, catalog: list[str], lines: pa.Table):
    needed = alloc_mod.required_drivers(cost_cfg, catalog)
    if not needed or lines.num_rows == 0:
        return drv.DRIVER_SCHEMA.empty_table(), []
    start = pc.min(lines.column("day")).as_py()
    end = pc.max(lines.column("charge_period_end")).as_py().date() + dt.timedelta(days=1)
    if not wh.db_path.exists():
        return drv.DRIVER_SCHEMA.empty_table(), ["no telemetry in this warehouse yet: driver rules measured nothing "
                                                 "(run `tenantry cost allocate` after `tenantry run batch`)"]
    con = wh.connect()
    try:
        return drv.measure(con, needed, start, end)
    finally:
        con.close()


def _write(wh: Warehouse, table: str, run_id: str, data: pa.Table) -> None:
    for i, start in enumerate(range(0, max(data.num_rows, 1), PART_ROWS)):
        wh.write_part(table, run_id, f"part-{i:04d}", data.slice(start, PART_ROWS))


def write_allocations(wh: Warehouse, run_id: str, lines: pa.Table, cost_cfg: rules.CostConfig, drivers: pa.Table,
                      *, catalog: list[str], cost_batch: str, allocated_at: dt.datetime,
                      max_rows: int = alloc_mod.DEFAULT_MAX_ROWS) -> dict:
    """Allocate ``lines`` chunk by chunk, writing each chunk as the part ``alloc-<chunk>`` of
    ``cost_allocations`` in ``run_id`` (uncommitted: the caller commits). Returns the stats.

    Only one chunk of allocation rows (about ``max_rows``) is in memory at a time; the same
    input and ``max_rows`` give the same part names, so a redone run overwrites its parts.
    """
    stats = alloc_mod.AllocationStats()
    chunks = alloc_mod.allocate_chunks(lines, cost_cfg, drivers, catalog=catalog, cost_batch=cost_batch,
                                       run_id=run_id, allocated_at=allocated_at, max_rows=max_rows, stats=stats)
    for k, chunk in enumerate(chunks):
        wh.write_part("cost_allocations", run_id, f"alloc-{k:05d}", chunk)
    return stats.as_dict()


def _cost_lines(parsed: readers.Parsed, f: readers.CostFile, batch: str, now: dt.datetime) -> pa.Table:
    t = parsed.lines
    n = t.num_rows
    prefix = f.sha256[:16]
    return conform("cost_lines", t.append_column("line_id", pa.array([f"{prefix}:{i}" for i in range(n)], pa.string()))
                   .append_column("source_key", pa.array([f.key] * n, pa.string()))
                   .append_column("source_format", pa.array([parsed.source_format] * n, pa.string()))
                   .append_column("ingested_at", pa.array([now] * n, pa.timestamp("us", tz="UTC")))
                   .append_column("ingest_batch", pa.array([batch] * n, pa.string())))


def ingest(wh: Warehouse | str | Path, paths: list[str], cfg: Any = None) -> IngestReport:
    """Ingest cost files (local paths, folders, s3:// prefixes) and allocate them. Idempotent.

    ``cfg`` is a :class:`tenantry.config.Config` (its ``cost`` section and tenant catalog) or None.
    Raises :class:`tenantry.cost.readers.CostInputError` naming the file, row and column of a bad
    input (nothing of that file is written) and :class:`tenantry.cost.rules.CostConfigError`.
    """
    cost_cfg = rules.from_config(cfg)
    catalog = _catalog(cfg)
    wh = _warehouse(wh)
    report = IngestReport()
    with wh.writer_lock():
        wh.discard_uncommitted()
        done = wh.committed_inputs()
        for f in readers.discover(list(paths), cost_cfg):
            batch = f"cost:{f.sha256}"
            if batch in done:
                report.skipped.append(f.key)
                continue
            parsed = readers.parse(f, cost_cfg)
            now = dt.datetime.now(dt.timezone.utc)
            run_id = f"cost-{f.sha256[:24]}"
            lines = _cost_lines(parsed, f, batch, now)
            drivers, warnings = _measure(wh, cost_cfg, catalog, lines)
            key = _allocation_key(batch, cost_cfg, catalog, drivers)
            _write(wh, "cost_lines", run_id, lines)
            stats = write_allocations(wh, run_id, lines, cost_cfg, drivers, catalog=catalog, cost_batch=batch,
                                      allocated_at=now)
            summary = {"source_key": f.key, "format": parsed.source_format, **parsed.stats,
                       "cost_batch": batch, "allocation_key": key,
                       "allocations": stats, "total": str(pc.sum(lines.column("amount")).as_py() or 0)}
            wh.commit(run_id, [batch], summary)
            done.add(batch)
            report.ingested.append({"run_id": run_id, **summary})
            report.warnings += [f"{f.key}: {w}" for w in warnings]
    _build_views(wh, committed=bool(report.ingested))
    return report


COST_VIEWS = ("stg_cost_lines", "stg_cost_allocations", "tenant_cost_daily", "tenant_unit_cost",
              "tenant_margin_monthly", "unallocated_cost")


def _views_present(wh: Warehouse) -> bool:
    if not wh.db_path.exists():
        return False
    try:
        con = wh.connect()
    except Exception:  # locked by a concurrent build: build (and report) below
        return False
    try:
        have = {v for (v,) in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
    finally:
        con.close()
    return set(COST_VIEWS) <= have


def _build_views(wh: Warehouse, committed: bool) -> None:
    """Build the views unless the cost views are already there (the views glob the lake, so a new
    committed run needs no rebuild; building takes DuckDB's write lock, which readers would block)."""
    if _views_present(wh):
        return
    try:
        wh.build_views()
    except WarehouseError as e:
        what = "cost data is committed, but " if committed else ""
        raise WarehouseError(f"{what}{e}") from e


def reallocate(wh: Warehouse | str | Path, cfg: Any = None) -> IngestReport:
    """Allocate every current cost file again with today's rules and telemetry.

    Writes nothing for a cost file whose cost, rules and measured drivers are unchanged.
    """
    cost_cfg = rules.from_config(cfg)
    catalog = _catalog(cfg)
    wh = _warehouse(wh)
    report = IngestReport()
    with wh.writer_lock():
        wh.discard_uncommitted()
        current = _current_allocation_keys(wh)
        con = _lake_connection(wh)
        try:
            batches = [b for (b,) in con.execute(
                "select distinct ingest_batch from " + wh.lake_source("cost_lines") + " l "
                "qualify ingested_at = max(ingested_at) over (partition by source_key) order by 1").fetchall()]
            for batch in batches:
                lines = con.sql("select * from " + wh.lake_source("cost_lines") + " l where ingest_batch = ? "
                                    "order by line_id", params=[batch]).to_arrow_table()
                lines = conform("cost_lines", lines)
                drivers, warnings = _measure(wh, cost_cfg, catalog, lines)
                key = _allocation_key(batch, cost_cfg, catalog, drivers)
                run_id = f"costalloc-{key}"
                if current.get(batch) == key:
                    report.skipped.append(batch)
                    continue
                now = dt.datetime.now(dt.timezone.utc)
                stats = write_allocations(wh, run_id, lines, cost_cfg, drivers, catalog=catalog, cost_batch=batch,
                                          allocated_at=now)
                wh.commit(run_id, [], {"cost_batch": batch, "allocation_key": key, "allocations": stats})
                report.ingested.append({"run_id": run_id, "cost_batch": batch, "allocations": stats})
                report.warnings += warnings
        finally:
            con.close()
    _build_views(wh, committed=bool(report.ingested))
    return report


def _allocation_key(batch: str, cost_cfg: rules.CostConfig, catalog: list[str], drivers: pa.Table) -> str:
    """What an allocation depends on: the cost file, the rules, the catalog and the drivers."""
    h = hashlib.sha256(batch.encode() + b"\0")
    h.update(json.dumps([cost_cfg.model_dump(mode="json"), catalog], sort_keys=True).encode() + b"\0")
    h.update(_digest(drivers))
    return h.hexdigest()[:24]


def _current_allocation_keys(wh: Warehouse) -> dict[str, str]:
    """cost_batch → allocation_key of its newest committed allocation (by commit time)."""
    latest: dict[str, tuple[str, str]] = {}
    for run in wh.committed_runs():
        s = run.get("summary") or {}
        batch, key, at = s.get("cost_batch"), s.get("allocation_key"), run.get("committed_at", "")
        if batch and key and (batch not in latest or at >= latest[batch][0]):
            latest[batch] = (at, key)
    return {b: k for b, (_, k) in latest.items()}


def _digest(t: pa.Table) -> bytes:
    """A content hash of the measured drivers (order-independent)."""
    t = t.sort_by([("day", "ascending"), ("driver_key", "ascending"), ("tenant_id", "ascending")])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t.combine_chunks())
    return hashlib.sha256(sink.getvalue().to_pybytes()).digest()


def _lake_connection(wh: Warehouse):
    import duckdb

    con = duckdb.connect()
    con.execute(f"create view _committed_runs as {wh.committed_runs_sql()}")
    return con
