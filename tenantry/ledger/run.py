"""``update_for_run``: the ledger step of a pipeline run, committed by the run's own manifest.

Called by the driver after the Beam pipeline wrote the run's files and before
``Warehouse.commit``. It reads the run's new usage_events files (not yet committed) and the
committed ledger state, and writes the run's ledger entries, dedup-index rows and quarantine rows
into the same ``run=<run_id>`` folders, under part names that depend only on the run. Nothing is
visible until the manifest lands, so a crash anywhere leaves the ledger as it was; the re-run
(same inputs, same run id) clears this step's earlier parts and recomputes them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal

import duckdb
import pyarrow as pa

from tenantry import __version__, schemas
from tenantry.config import Config
from tenantry.ledger.compute import compute, meters_table
from tenantry.ledger.settings import settings
from tenantry.warehouse import Warehouse

#: name of the env var that kills the process at a named point (crash tests only)
CRASH_ENV = "TENANTRY_LEDGER_CRASH_AT"
PART_PREFIX = "ledger"
INDEX_CHUNK_ROWS = 1_000_000


@dataclasses.dataclass
class LedgerReport:
    """What one run did to the ledger. ``events_in = accepted + duplicates + quarantined``."""

    events_in: int = 0
    accepted: int = 0
    duplicates_in_run: int = 0
    duplicates_history: int = 0
    #: meters seen in this run's usage without a definition (accepted unless ledger.strict)
    undeclared_meters: list[str] = dataclasses.field(default_factory=list)
    #: quarantined events per reason code
    quarantined: dict[str, int] = dataclasses.field(default_factory=dict)
    entries_written: int = 0
    adjustments: int = 0

    @property
    def duplicates(self) -> int:
        return self.duplicates_in_run + self.duplicates_history

    @property
    def balanced(self) -> bool:
        return self.events_in == self.accepted + self.duplicates + sum(self.quarantined.values())


def _crash_point(name: str) -> None:
    # a test hook: SIGKILL, like a power cut, so no finally/atexit code runs
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _clear_own_parts(wh: Warehouse, run_id: str) -> None:
    """Remove this step's parts left by a crashed attempt of the same run (only ours)."""
    for table in ("usage_ledger", "usage_dedup", "quarantine"):
        d = wh.lake / table / f"run={run_id}"
        if d.is_dir():
            for f in d.glob(f"{PART_PREFIX}-*.parquet"):
                f.unlink()


def _history(con: duckdb.DuckDBPyConnection, wh: Warehouse, run_id: str) -> None:
    # committed runs only, and never this run itself: a re-run of a committed run id must compute
    # exactly what the first attempt did, not see its own rows as history
    committed = [r["run_id"] for r in wh.committed_runs() if r.get("run_id") != run_id]
    con.execute("create or replace temp table _committed_runs (run_id varchar)")
    if committed:
        con.executemany("insert into _committed_runs values (?)", [[r] for r in committed])
    con.execute(f"create or replace temp view hist_ledger as select * from {wh.lake_source('usage_ledger')}")
    con.execute(f"create or replace temp view hist_index as select * from {wh.lake_source('usage_dedup')}")


def update_for_run(wh: Warehouse, run_id: str, cfg: Config, now: dt.datetime,
                   pipeline_version: str = __version__) -> LedgerReport:
    """Write the ledger parts of ``run_id`` (uncommitted) from its usage_events files.

    Raises ``ConfigError`` / ``MeterError`` for a bad ``ledger:`` or ``meters:`` section before
    touching anything. ``now`` decides which periods are closed and which events are too old or
    too new; pass the run's start time (tests pass a fixed one).
    """
    st = settings(cfg)
    meters = meters_table(cfg.meters)
    if now.tzinfo is None:
        raise ValueError("update_for_run: now must be timezone-aware, e.g. datetime.now(timezone.utc)")
    wh.init()  # warehouses made before the ledger tables existed get their empty schema files
    _clear_own_parts(wh, run_id)
    run_dir = wh.lake / "usage_events" / f"run={run_id}"
    files = sorted(str(f) for f in run_dir.glob("*.parquet")) if run_dir.is_dir() else []
    if not files:
        return LedgerReport()
    con = duckdb.connect(":memory:")
    try:
        con.register("meters", meters)
        # file paths go in as a literal list: views cannot take prepared parameters
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        con.execute(f"create temp view new_events as select * from read_parquet([{listed}], union_by_name = true)")
        _history(con, wh, run_id)
        _crash_point("after_read")
        result = compute(con, st, now, run_id, pipeline_version)
        report = LedgerReport(
            events_in=result.counts["events_in"], accepted=result.counts["accepted"],
            duplicates_in_run=result.counts["duplicates_in_run"],
            duplicates_history=result.counts["duplicates_history"],
            undeclared_meters=result.undeclared, entries_written=result.entries.num_rows,
            adjustments=sum(1 for k in result.entries.column("kind").to_pylist() if k == "adjustment"),
        )
        for reason in result.quarantine.column("reason").to_pylist():
            report.quarantined[reason] = report.quarantined.get(reason, 0) + 1
        wh.write_part("usage_ledger", run_id, f"{PART_PREFIX}-entries", result.entries)
        _crash_point("after_entries")
        reader = con.sql("select * from accepted_index").to_arrow_reader(INDEX_CHUNK_ROWS)
        for i, batch in enumerate(_chunks(reader, INDEX_CHUNK_ROWS)):
            wh.write_part("usage_dedup", run_id, f"{PART_PREFIX}-index-{i:05d}", batch)
            _crash_point("during_index")
        wh.write_part("quarantine", run_id, f"{PART_PREFIX}-quarantine", result.quarantine)
        _crash_point("after_quarantine")
        return report
    finally:
        con.close()


def _chunks(reader: pa.RecordBatchReader, rows: int):
    """Re-slice the reader into tables of exactly ``rows`` rows (the last one shorter), so the
    number of parts depends on the row count only, not on DuckDB's batch sizes. Which rows land in
    which part may differ between attempts (the index is not sorted); a re-run clears every part
    of the earlier attempt first, so that is harmless."""
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in reader:
        pending.append(batch)
        size += batch.num_rows
        while size >= rows:
            table = pa.Table.from_batches(pending)
            yield schemas.conform("usage_dedup", table.slice(0, rows))
            rest = table.slice(rows)
            pending, size = rest.to_batches(), rest.num_rows
    if size:
        yield schemas.conform("usage_dedup", pa.Table.from_batches(pending))
