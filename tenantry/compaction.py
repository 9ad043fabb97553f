"""Compaction: many small committed runs → one run, atomically, with every figure unchanged.

Every run (a batch, a stream micro-batch or tick) adds a manifest and a folder per table, and views
glob them all; a stream committing every second would make tens of thousands a day. Compaction
rewrites the parts of small runs into one new run and commits it with a manifest that ``replaces``
them (``Warehouse.committed_runs_sql``): in one atomic rename, views swap the old runs for the new
one. The new run's manifest carries the union of their inputs, so re-running over those inputs is
still a no-op, and rows keep their ``ingest_batch`` lineage (evidence and the ledger rely on it).

Rows are copied as they are (partials are not re-aggregated), so every view gives exactly the
same figures. The replaced runs' files are deleted at a later compaction, once ``grace`` has
passed, so a reader that opened before the swap never loses a file mid-query. A crash at any point
leaves either the old runs or the new one visible: never both, never neither.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from tenantry import schemas
from tenantry.warehouse import SCHEMA_RUN, Warehouse

DEFAULT_SMALL_RUN_BYTES = 64 * 2**20  # runs smaller than this are compacted
DEFAULT_MAX_BYTES = 1 * 2**30  # at most this much is rewritten per compaction (memory: one table's share)
DEFAULT_GRACE = dt.timedelta(minutes=10)


@dataclasses.dataclass
class CompactionReport:
    run_id: str | None  # the new run (None: nothing to compact)
    replaced: int  # runs folded into it
    files_before: int
    files_after: int
    bytes: int
    deleted_runs: int  # replaced runs (of earlier compactions) whose files were removed


def _run_bytes(wh: Warehouse, run_id: str) -> tuple[int, int]:
    size = files = 0
    for table in schemas.LAKE_TABLES:
        for f in (wh.lake / table / f"run={run_id}").glob("*.parquet"):
            size += f.stat().st_size
            files += 1
    return size, files


def compact(wh: Warehouse, *, small_run_bytes: int = DEFAULT_SMALL_RUN_BYTES, max_bytes: int = DEFAULT_MAX_BYTES,
            min_runs: int = 2, grace: dt.timedelta = DEFAULT_GRACE, now: dt.datetime | None = None) -> CompactionReport:
    """Fold the oldest small committed runs into one run. The caller holds ``wh.writer_lock()``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    deleted = collect_garbage(wh, grace, now)
    chosen, total, files_before = [], 0, 0
    for run in wh.committed_runs():
        rid = run.get("run_id")
        if not rid or rid == SCHEMA_RUN:
            continue
        size, files = _run_bytes(wh, rid)
        if size >= small_run_bytes:
            continue
        if chosen and total + size > max_bytes:
            break
        chosen.append(run)
        total += size
        files_before += files
    if len(chosen) < min_runs:
        return CompactionReport(None, 0, files_before, files_before, total, deleted)
    ids = [r["run_id"] for r in chosen]
    new_id = "c" + hashlib.sha256("\0".join(sorted(ids)).encode()).hexdigest()[:24]
    files_after = 0
    for table in schemas.LAKE_TABLES:
        parts = [f for rid in ids for f in sorted((wh.lake / table / f"run={rid}").glob("*.parquet"))]
        if not parts:
            continue
        # conformed to the table's current schema: parts written by an older version may lack a
        # column (null now) or carry one the schema dropped (no view reads it)
        data = pa.concat_tables([schemas.conform(table, pq.read_table(f)) for f in parts])
        if wh.write_part(table, new_id, "compacted", data) is not None:
            files_after += 1
    inputs = sorted({i for r in chosen for i in r.get("inputs", [])})
    wh.commit(new_id, inputs, {"compacted_runs": len(ids), "bytes": total}, replaces=ids)
    return CompactionReport(new_id, len(ids), files_before, files_after, total, deleted)


def collect_garbage(wh: Warehouse, grace: dt.timedelta, now: dt.datetime) -> int:
    """Delete the files and manifests of runs replaced by a compaction committed over ``grace`` ago."""
    removed = 0
    for m in wh.committed_runs(include_replaced=True):
        if not m.get("replaces"):
            continue
        committed_at = dt.datetime.fromisoformat(m["committed_at"])
        if now - committed_at < grace:
            continue
        for rid in m["replaces"]:
            manifest = wh.manifests / f"{rid}.json"
            for table in schemas.LAKE_TABLES:
                shutil.rmtree(wh.lake / table / f"run={rid}", ignore_errors=True)
            if manifest.exists():
                manifest.unlink()
                removed += 1
        # the replaced runs are gone: the list is history now, kept in the summary
        m["summary"] = {**m.get("summary", {}), "replaced": m.pop("replaces")}
        _rewrite_manifest(wh, m)
    return removed


def _rewrite_manifest(wh: Warehouse, manifest: dict) -> None:
    from tenantry.warehouse import _atomic_write_bytes

    _atomic_write_bytes(wh.manifests / f"{manifest['run_id']}.json",
                        json.dumps(manifest, indent=1, default=str).encode())
