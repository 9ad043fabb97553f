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
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from tenantry import __version__
from tenantry.config import Config
from tenantry.ledger.compute import deduplicate, index_part, meters_table
from tenantry.ledger.entries import ledger_entries
from tenantry.ledger.settings import LedgerSettings, settings
from tenantry.warehouse import Warehouse

#: name of the env var that kills the process at a named point (crash tests only)
CRASH_ENV = "TENANTRY_LEDGER_CRASH_AT"
PART_PREFIX = "ledger"
INDEX_CHUNK_ROWS = 1_000_000
#: threads writing index parts: one Parquet file is encoded on one core
_WRITERS = min(2, os.cpu_count() or 1)


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


def history_views(con: duckdb.DuckDBPyConnection, wh: Warehouse, run_id: str) -> None:
    """Views ``hist_ledger`` / ``hist_index`` on ``con``: the committed ledger and dedup index."""
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
        history_views(con, wh, run_id)
        _crash_point("after_read")
        return write_ledger(con, wh, run_id, st, now, pipeline_version)
    finally:
        con.close()


def write_ledger(con: duckdb.DuckDBPyConnection, wh: Warehouse, run_id: str, st: LedgerSettings,
                 now: dt.datetime, pipeline_version: str) -> LedgerReport:
    """Compute the run's ledger on ``con`` (relations as :mod:`tenantry.ledger.compute` names
    them) and write its entries, index and quarantine parts, uncommitted."""
    acc = deduplicate(con, st, now)
    # the index parts are written on worker threads (Parquet encoding releases the GIL) while
    # DuckDB aggregates the entries from the same Arrow table: the two overlap on the cores
    with ThreadPoolExecutor(max_workers=_WRITERS) as pool:
        parts = [pool.submit(_write_index_part, wh, run_id, i, acc.events.slice(start, INDEX_CHUNK_ROWS),
                             None if acc.keep is None else acc.keep.slice(start, INDEX_CHUNK_ROWS))
                 for i, start in enumerate(range(0, acc.events.num_rows, INDEX_CHUNK_ROWS))]
        try:
            entries = ledger_entries(con, acc.events, acc.keep, st, now, run_id, pipeline_version)
            wh.write_part("usage_ledger", run_id, f"{PART_PREFIX}-entries", entries)
            _crash_point("after_entries")
        finally:
            for part in parts:
                part.result()
    wh.write_part("quarantine", run_id, f"{PART_PREFIX}-quarantine", acc.quarantine)
    _crash_point("after_quarantine")
    return LedgerReport(
        events_in=acc.counts["events_in"], accepted=acc.counts["accepted"],
        duplicates_in_run=acc.counts["duplicates_in_run"], duplicates_history=acc.counts["duplicates_history"],
        undeclared_meters=acc.undeclared, entries_written=entries.num_rows,
        adjustments=pc.sum(pc.equal(entries.column("kind"), "adjustment")).as_py() or 0,
        quarantined=dict(_value_counts(acc.quarantine.column("reason"))),
    )


def _write_index_part(wh: Warehouse, run_id: str, i: int, events: pa.Table, keep: pa.BooleanArray | None) -> None:
    # parts are cut before the filter, so their number and names depend on the valid events only
    # (an all-duplicate part writes no file)
    wh.write_part("usage_dedup", run_id, f"{PART_PREFIX}-index-{i:05d}", index_part(events, keep, run_id))
    _crash_point("during_index")


def _value_counts(col: pa.ChunkedArray) -> list[tuple[str, int]]:
    return sorted((v["values"].as_py(), v["counts"].as_py()) for v in pc.value_counts(col))
