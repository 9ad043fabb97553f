"""The warehouse: an append-only Parquet lake (the truth) and a DuckDB file of views (the lens).

Layout under a warehouse folder::

    lake/<table>/run=<run_id>/<part>.parquet   files of one pipeline run, per lake table
    lake/_manifests/<run_id>.json              the commit record of a run (written last)
    tenantry.duckdb                            views over the lake + macros; no data

Commit protocol: a run writes its files (each atomically: temporary name, then rename) into
``run=<run_id>`` folders, then writes its manifest atomically. The views only read runs that have a
manifest, so the manifest's rename is the one commit point: a crashed run is invisible, and
re-running it (same inputs, same ``run_id``) rewrites the same files and commits. Inputs already
named in a manifest are skipped, so a re-run over the same input is a no-op.

Readers never take the write lock: pipelines write Parquet, not into the database, and the views
glob the lake, so ``tenantry query``, dashboards and any DuckDB client (read-only) see each
committed run as soon as its manifest lands.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tenantry import resources, schemas, sketch

SCHEMA_RUN = "__schema__"
_HIGH_CARDINALITY = {"trace_id", "span_id", "parent_span_id", "event_id", "raw", "body", "detail",
                     "status_message", "duration_ms", "start_time", "end_time", "time", "observed_time"}
_PRUNING_COLUMNS = {"tenant_id", "start_time", "time", "hour", "day", "period_start"}
DB_NAME = "tenantry.duckdb"


def _leaf_paths(field: pa.Field, prefix: str = "") -> list[str]:
    """The Parquet column paths of an Arrow field: options such as ``use_dictionary`` name leaves,
    so a map column ``attributes`` is ``attributes.key_value.key`` and ``attributes.key_value.value``
    (naming only ``attributes`` silently encodes neither)."""
    path = f"{prefix}{field.name}"
    t = field.type
    if pa.types.is_map(t):
        return [f"{path}.key_value.key", *_leaf_paths(pa.field("value", t.item_type), f"{path}.key_value.")]
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _leaf_paths(pa.field("element", t.value_type), f"{path}.list.")
    if pa.types.is_struct(t):
        return [leaf for i in range(t.num_fields) for leaf in _leaf_paths(t.field(i), f"{path}.")]
    return [path]


class WarehouseError(RuntimeError):
    """The warehouse is missing, locked or inconsistent; the message says what to do."""


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Warehouse:
    """A warehouse folder. Create with :meth:`open` (initializes an empty lake if needed)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.lake = self.root / "lake"
        self.manifests = self.lake / "_manifests"
        self.db_path = self.root / DB_NAME

    # -- layout -----------------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | Path) -> "Warehouse":
        wh = cls(root)
        wh.init()
        return wh

    def init(self) -> None:
        """Create the lake folders, and for every table an empty schema file in a committed run
        (so every view has at least one file to read and a typed schema, even with no data)."""
        self.manifests.mkdir(parents=True, exist_ok=True)
        for table, schema in schemas.LAKE_TABLES.items():
            d = self.lake / table / f"run={SCHEMA_RUN}"
            f = d / "empty.parquet"
            if not f.exists():
                d.mkdir(parents=True, exist_ok=True)
                self._write_parquet(f, schema.empty_table())
        m = self.manifests / f"{SCHEMA_RUN}.json"
        if not m.exists():
            _atomic_write_bytes(m, json.dumps({"run_id": SCHEMA_RUN, "inputs": [], "files": {}}).encode())

    def exists(self) -> bool:
        return self.db_path.exists() and self.manifests.exists()

    @contextmanager
    def writer_lock(self):
        """Exclusive lock for the one pipeline that writes this warehouse at a time."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".writer.lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WarehouseError(
                    f"{self.root}: another tenantry pipeline is writing this warehouse; "
                    "wait for it to finish or use another --warehouse"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- writing ----------------------------------------------------------------------------

    @staticmethod
    def _write_parquet(path: Path, table: pa.Table, fsync: bool = True) -> None:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        # dictionary-encode only low-cardinality columns and keep statistics only where queries
        # prune on them: random ids and free text gain nothing from either and cost the most.
        # Floats (durations, partial sums) are byte-stream-split instead of dictionary-encoded:
        # about half the encoding time of those columns, and files no larger. Attribute maps are
        # dictionary-encoded too (keys repeat, and so do most values): with ten attributes a span,
        # ~20% cheaper to write and ~20% smaller than plain
        names = table.column_names
        floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
        dictionary = [leaf for f in table.schema if f.name not in _HIGH_CARDINALITY and f.name not in floats
                      for leaf in _leaf_paths(f)]
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            compression_level=1,
            use_dictionary=dictionary,
            use_byte_stream_split=floats or False,
            write_statistics=[c for c in names if c in _PRUNING_COLUMNS],
        )
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)

    def write_part(self, table: str, run_id: str, part: str, data: pa.Table) -> Path | None:
        """Write one part file of ``table`` for ``run_id`` atomically. Empty data writes nothing.

        ``part`` must be deterministic for the input it came from, so a re-run overwrites
        instead of duplicating.
        """
        if data.num_rows == 0:
            return None
        if not re.fullmatch(r"[A-Za-z0-9_.:=-]+", part):
            raise ValueError(f"part name {part!r} has characters not allowed in a file name")
        d = self.lake / table / f"run={run_id}"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{part.replace(':', '_')}.parquet"
        # no fsync per part: commit() makes the whole run durable before its manifest lands,
        # which is the only moment durability matters (an uncommitted run is invisible and redone)
        self._write_parquet(path, schemas.conform(table, data), fsync=False)
        return path

    def commit(self, run_id: str, inputs: Iterable[str], summary: dict | None = None,
               replaces: Iterable[str] = ()) -> Path:
        """Make the run's files durable, then write its manifest: from now on they are visible to
        every view (and the runs it ``replaces``, a compaction's, are not)."""
        self._sync_run(run_id)
        files = {
            t: sorted(p.name for p in (self.lake / t / f"run={run_id}").glob("*.parquet"))
            for t in schemas.LAKE_TABLES
            if (self.lake / t / f"run={run_id}").exists()
        }
        manifest = {
            "run_id": run_id,
            "committed_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "inputs": sorted(inputs),
            "files": files,
            "summary": summary or {},
        }
        if replaces:
            manifest["replaces"] = sorted(replaces)
        path = self.manifests / f"{run_id}.json"
        _atomic_write_bytes(path, json.dumps(manifest, indent=1, default=str).encode())
        return path

    def _sync_run(self, run_id: str) -> None:
        for table in schemas.LAKE_TABLES:
            d = self.lake / table / f"run={run_id}"
            if not d.is_dir():
                continue
            for f in d.glob("*.parquet"):
                fd = os.open(f, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)  # the renames into the run folder
            finally:
                os.close(fd)

    def committed_runs(self, include_replaced: bool = False) -> list[dict]:
        """The manifests of the visible runs (a run a compaction replaced is not visible)."""
        out = []
        for m in sorted(self.manifests.glob("*.json")):
            try:
                out.append(json.loads(m.read_text()))
            except (OSError, json.JSONDecodeError) as e:
                raise WarehouseError(f"{m}: unreadable manifest ({e}); move it away to continue") from None
        if include_replaced:
            return out
        replaced = {r for m in out for r in m.get("replaces") or ()}
        return [m for m in out if m.get("run_id") not in replaced]

    def committed_inputs(self) -> set[str]:
        """Every input (ingest batch id) some committed run has consumed."""
        return {i for run in self.committed_runs() for i in run.get("inputs", [])}

    def discard_uncommitted(self) -> int:
        """Remove run folders without a manifest (left by a crashed run). Call under the lock."""
        committed = {r["run_id"] for r in self.committed_runs()}
        removed = 0
        for table in schemas.LAKE_TABLES:
            for d in (self.lake / table).glob("run=*"):
                if d.name.removeprefix("run=") not in committed:
                    for f in d.iterdir():
                        f.unlink()
                    d.rmdir()
                    removed += 1
        return removed

    # -- views ------------------------------------------------------------------------------

    def committed_runs_sql(self) -> str:
        """SQL selecting the ``run_id`` of every visible run: committed by a manifest and not
        replaced by a compaction's manifest. One statement reads every manifest once, so a
        compaction's manifest swaps the runs it replaces for itself atomically."""
        glob = str(self.manifests / "*.json").replace("'", "''")
        source = (f"read_json('{glob}', columns = {{'run_id': 'VARCHAR', 'replaces': 'VARCHAR[]'}}, "
                  "format = 'auto')")
        return (f"select run_id from {source} where run_id is not null and run_id not in "
                f"(select unnest(replaces) from {source} where replaces is not null)")

    def lake_source(self, table: str) -> str:
        """SQL for the committed rows of a lake table (what ``{{ lake('t') }}`` expands to)."""
        if table not in schemas.LAKE_TABLES:
            raise WarehouseError(f"unknown lake table {table!r}; known: {', '.join(schemas.LAKE_TABLES)}")
        glob = str(self.lake / table / "run=*" / "*.parquet").replace("'", "''")
        return (
            f"(select * exclude (run) from read_parquet('{glob}', hive_partitioning = true, "
            f"hive_types = {{'run': 'VARCHAR'}}, union_by_name = true) "
            f"where run in (select run_id from _committed_runs))"
        )

    def render_sql(self, sql: str) -> str:
        return re.sub(
            r"\{\{\s*lake\('([a-z_]+)'\)\s*\}\}", lambda m: self.lake_source(m.group(1)), sql
        )

    def _views_digest(self) -> str:
        import hashlib

        h = hashlib.sha256(sketch.sql_macros().encode() + str(self.lake).encode())
        for name, sql in resources.sql_files():
            h.update(name.encode() + b"\0" + sql.encode())
        return h.hexdigest()

    def build_views(self, force: bool = False) -> list[str]:
        """(Re)create the macros and every view in ``sql/`` (staging, marts, tenant, in that order).

        Skipped when the definitions are unchanged since the last build (the views glob the lake,
        so new runs need no rebuild): then no DuckDB write lock is taken and readers that hold the
        database open are never disturbed. Views reference the lake by absolute path.
        """
        digest = self._views_digest()
        stamp = self.root / ".views.sha256"
        if not force and self.db_path.exists() and stamp.exists() and stamp.read_text() == digest:
            return []
        created: list[str] = []
        # built into a new file, then renamed over the old one: readers that have the database
        # open keep their snapshot, new readers get the new views, and nobody meets a write lock
        building = self.db_path.with_name(f".{DB_NAME}.building-{os.getpid()}")
        building.unlink(missing_ok=True)
        con = duckdb.connect(str(building))
        current, built = "_committed_runs", False
        try:
            con.execute(f"create or replace view _committed_runs as {self.committed_runs_sql()}")
            current = "macros"
            con.execute(sketch.sql_macros())
            # marts may build on other marts: create in name order, deferring a view whose
            # dependency does not exist yet, until no progress is made
            pending = resources.sql_files()
            while pending:
                deferred = []
                for name, sql in pending:
                    current = name
                    try:
                        con.execute(self.render_sql(sql))
                        created.append(name)
                    except duckdb.CatalogException:
                        deferred.append((name, sql))
                if len(deferred) == len(pending):
                    current = deferred[0][0]
                    con.execute(self.render_sql(deferred[0][1]))  # raises the real error
                pending = deferred
            built = True
        except duckdb.Error as e:
            raise WarehouseError(f"building views failed at sql/{current}.sql: {e}") from e
        finally:
            con.close()
            if built:
                with open(building, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(building, self.db_path)
            else:
                building.unlink(missing_ok=True)
        _atomic_write_bytes(stamp, digest.encode())
        return created

    def connect(self, read_only: bool = True) -> duckdb.DuckDBPyConnection:
        """A connection to the warehouse database (read-only by default, never blocking writers
        of the lake). A read-only connection sees the runs committed when it opened; open a new
        one to see newer runs."""
        if not self.db_path.exists():
            raise WarehouseError(
                f"{self.root}: no warehouse here (no {DB_NAME}); run `tenantry run batch --input ... "
                f"--warehouse {self.root}` first"
            )
        con = duckdb.connect(str(self.db_path), read_only=read_only)
        con.execute("set TimeZone = 'UTC'")  # hours and days bucket the same on every machine
        if read_only:
            # one snapshot of the committed runs for the connection's life: every view read through
            # it agrees with every other, even while a pipeline commits new runs (a temp table
            # shadows the database's _committed_runs view)
            con.execute(f"create temp table _committed_runs as {self.committed_runs_sql()}")
        return con
