"""All pipeline I/O: finding inputs, reading them into Arrow chunks, writing the lake.

Everything else in ``pipelines/`` is pure transforms over Arrow tables, testable with
``beam.Create``.

Inputs (files or folders, searched recursively):

- landing segments ``seg-*.arrow`` written by ``tenantry collect``;
- OTLP files: ``.json`` (OTLP/JSON request body), ``.jsonl`` (Collector file exporter), ``.pb``
  (protobuf request body), each optionally ``.gz``;
- Parquet files of a normalized table (e.g. exported ``spans``), read row group by row group.

Each input has a stable id (``seg:<name>`` for segments, ``file:<sha256 prefix>`` otherwise):
runs record the ids they consumed, so a re-run over the same input is a no-op.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import os
import threading
from pathlib import Path
from typing import Iterator, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.coders import coder_impl, coders
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from pipelines import runtime
from tenantry import schemas

OTLP_SUFFIXES = (".json", ".jsonl", ".pb")
SUPPORTED = "seg-*.arrow and nseg-*.arrow (landing), *.json, *.jsonl, *.pb (optionally .gz) and *.parquet of a normalized table"


#: schema metadata key on chunks that a receiver already ran the processor chain over
PROCESSED_BY = b"tenantry.processed_by"


#: what flows between the pipeline's steps: (table, part name, rows)
Chunk = Tuple[str, str, pa.Table]


class ArrowTableCoder(coders.Coder):
    """Arrow tables as Arrow IPC streams, with a size estimate that reads no data.

    Beam samples the encoded size of elements for its counters; with the default (pickle) coder
    that meant serializing whole batches just to measure them. Registered for ``pa.Table``, so
    steps typed with :data:`Chunk` use it.
    """

    def encode(self, table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write(table)
        return sink.getvalue().to_pybytes()

    def decode(self, data: bytes) -> pa.Table:
        return pa.ipc.open_stream(pa.py_buffer(data)).read_all()

    def _create_impl(self):
        return coder_impl.CallbackCoderImpl(self.encode, self.decode, size_estimator=_nbytes)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return pa.Table


def _nbytes(table) -> int:
    return table.get_total_buffer_size()


beam.coders.registry.register_coder(pa.Table, ArrowTableCoder)


class InputError(ValueError):
    """An input path is missing or of a kind tenantry cannot read."""


@dataclasses.dataclass(frozen=True)
class InputFile:
    path: str
    ingest_id: str
    kind: str  # segment | otlp | parquet
    table: str | None = None  # for parquet: which normalized table
    row_groups: int = 0


def _content_id(path: Path) -> str:
    from tenantry.otlp.files import content_id  # remembered: decoding the file asks again

    return content_id(path)


def _parquet_table(path: Path) -> tuple[str, int]:
    try:
        meta = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: not a readable Parquet file: {e}") from None
    names = set(meta.schema_arrow.names)
    matches = [
        t for t, schema in schemas.TABLES.items() if {f.name for f in schema if not f.nullable} <= names
    ]
    named = [t for t in matches if t in path.name]
    if named:
        return named[0], meta.num_row_groups
    if matches:
        best = max(matches, key=lambda t: len(names & set(schemas.TABLES[t].names)))
        return best, meta.num_row_groups
    raise InputError(
        f"{path}: Parquet columns ({', '.join(sorted(names)[:8])}, ...) match no normalized table; "
        f"expected the columns of one of: {', '.join(schemas.TABLES)}"
    )


def _classify(path: Path) -> InputFile | None:
    name = path.name
    if name.startswith(".") or name.endswith(".tmp"):
        return None  # temporary files of a writer that has not committed
    base = name[:-3] if name.endswith(".gz") else name
    if name.startswith("seg-") and name.endswith(".arrow"):
        return InputFile(str(path), f"seg:{name}", "segment")
    if name.startswith("nseg-") and name.endswith(".arrow"):
        return InputFile(str(path), f"nseg:{name}", "normalized")
    if base.endswith(OTLP_SUFFIXES):
        return InputFile(str(path), _content_id(path), "otlp")
    if name.endswith(".parquet"):
        table, groups = _parquet_table(path)
        return InputFile(str(path), _content_id(path), "parquet", table, groups)
    return None


def _classify_all(paths: list[Path]) -> Iterator[InputFile | None]:
    """:func:`_classify` of each path, in order. Classifying hashes the content of OTLP and Parquet
    files (their ingest ids), which releases the GIL: many files are hashed on two threads."""
    if len(paths) < 8:
        yield from map(_classify, paths)
        return
    with cf.ThreadPoolExecutor(2, thread_name_prefix="tenantry-discover") as pool:
        yield from pool.map(_classify, paths)


def discover(paths: list[str | Path]) -> list[InputFile]:
    """Every readable input under ``paths``, in a stable order. Raises :class:`InputError` for a
    missing path or a named file of an unsupported kind."""
    found: dict[str, InputFile] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
        candidates = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        for c, inp in zip(candidates, _classify_all(candidates)):
            if inp is None:
                if not p.is_dir():
                    raise InputError(f"{c}: not a supported input; tenantry reads {SUPPORTED}")
                continue
            found.setdefault(inp.ingest_id, inp)  # the same content twice is one input
    return list(found.values())


@dataclasses.dataclass(frozen=True)
class ReadTask:
    """One unit of reading: one row group of a Parquet file, a normalized segment, or a group of
    OTLP files / landing segments read together (so thousands of small requests become a few
    large batches, not thousands of tiny lake files)."""

    input: InputFile
    row_group: int | None = None
    group: tuple[InputFile, ...] = ()

    @property
    def inputs(self) -> tuple[InputFile, ...]:
        return self.group or (self.input,)

    @property
    def key(self) -> str:
        """Deterministic id of what this task reads (names its lake parts)."""
        if len(self.inputs) == 1:
            return self.input.ingest_id
        h = hashlib.sha256("\0".join(i.ingest_id for i in self.inputs).encode()).hexdigest()[:24]
        return f"grp:{h}"


#: OTLP files and raw segments are read in groups of about this many bytes (compressed on disk)
GROUP_BYTES = 32 * 2**20
GROUP_FILES = 512


def read_tasks(inputs: list[InputFile]) -> list[ReadTask]:
    tasks: list[ReadTask] = []
    group: list[InputFile] = []
    size = 0

    def close():
        nonlocal group, size
        if group:
            tasks.append(ReadTask(group[0], group=tuple(group) if len(group) > 1 else ()))
        group, size = [], 0

    for inp in inputs:
        if inp.kind == "parquet":
            tasks.extend(ReadTask(inp, i) for i in range(inp.row_groups))
        elif inp.kind == "normalized":
            tasks.append(ReadTask(inp))
        else:
            group.append(inp)
            size += os.path.getsize(inp.path)
            if size >= GROUP_BYTES or len(group) >= GROUP_FILES:
                close()
    close()
    return tasks


def read_task(task: ReadTask, batch_rows: int) -> Iterator[tuple[str, str, pa.Table]]:
    """Yield (table, part name, rows) chunks for one task, at most about ``batch_rows`` rows each.

    Part names are deterministic (input id, table, sequence), so re-reading the same input yields
    the same parts.
    """
    inp = task.input
    if inp.kind == "parquet":
        pf = pq.ParquetFile(inp.path)
        data = pf.read_row_group(task.row_group)
        if "ingest_batch" not in data.column_names:
            data = data.append_column("ingest_batch", pa.repeat(pa.scalar(inp.ingest_id), data.num_rows))
        yield inp.table, f"{inp.ingest_id}-rg{task.row_group}", schemas.conform(inp.table, data)
        return

    if inp.kind == "normalized":
        # already decoded (and processed) by `tenantry collect --process`; the chain digest rides
        # along in the schema metadata so the pipeline can tell whether to process it again
        from tenantry import landing

        for table, data, meta in landing.iter_normalized_segment(inp.path):
            digest = meta.get("tenantry.processed_by", "")
            data = data.replace_schema_metadata({**(data.schema.metadata or {}), PROCESSED_BY: digest.encode()})
            yield table, f"{inp.ingest_id}-{table}", data
        return

    from tenantry import otlp  # decoding is only needed for OTLP inputs

    pending: dict[str, list[pa.Table]] = {}
    rows: dict[str, int] = {}
    seq: dict[str, int] = {}

    key = task.key

    def flush(table: str):
        parts = pending.pop(table, [])
        rows.pop(table, None)
        if parts:
            n = seq.get(table, 0)
            seq[table] = n + 1
            # one contiguous chunk per column: every step after this one would otherwise combine
            # the chunks of the columns it reads (the attribute maps most of all) again
            yield table, f"{key}-{table}-{n}", pa.concat_tables(parts).combine_chunks()

    paths = [one.path for one in task.inputs]
    # small .pb trace requests decode together, a group of files per call (on the decoder pool's
    # processes when there is more than one file): the decoder's cost is mostly per call
    decoded = otlp.decode_groups(paths, pool=_decode_pool() if len(paths) > 1 else None)
    for _batch_id, tables in decoded:
        for table, data in tables.items():
            if data.num_rows == 0:
                continue
            pending.setdefault(table, []).append(data)
            rows[table] = rows.get(table, 0) + data.num_rows
            if rows[table] >= batch_rows:
                yield from flush(table)
    for table in list(pending):
        yield from flush(table)


_POOL: list = []


def _decode_pool():
    """One pool of decoder processes per worker process, reused by every task, when the C span
    decoder is not built (protobuf decoding is then the CPU-heavy part of OTLP inputs; the pool
    spreads it over the machine's cores). With the C decoder, decoding on an I/O thread of this
    process is cheaper than the pool's processes and their Arrow IPC round trips (1M spans from
    ``.pb``: 12.6 s of CPU against 15.3 s). ``TENANTRY_DECODE_PROCESSES=N`` sets the pool's size
    either way (1: no pool). Spawned workers open no listener."""
    if not _POOL:
        from tenantry.otlp.spans import accelerated

        default = 1 if accelerated() else (os.cpu_count() or 1)
        n = int(os.environ.get("TENANTRY_DECODE_PROCESSES", default))
        if n <= 1:
            _POOL.append(None)
        else:
            import atexit

            from tenantry import otlp

            pool = otlp.DecodePool(n)
            atexit.register(pool.close)  # stop the workers before the interpreter tears down
            _POOL.append(pool)
    return _POOL[0]


class WriteLakeParts:
    """Writes (table, part, rows) chunks as Parquet parts of one run (see tenantry.warehouse).

    A plain callable so it can be used with ``beam.Map``; returns (table, rows written). The
    pipelines use :class:`WriteLake`, which does the same on background threads.
    """

    def __init__(self, warehouse_root: str, run_id: str):
        self.warehouse_root = warehouse_root
        self.run_id = run_id
        self._wh = None

    def __call__(self, chunk):
        table, rows = self.write(chunk)
        if table in schemas.SIGNAL_TABLES:
            Metrics.counter("tenantry", f"kept.{table}").inc(rows)
        return table, rows

    def write(self, chunk) -> tuple[str, int]:
        """Write one chunk (thread-safe: parts have distinct names and are renamed into place)."""
        from tenantry.warehouse import Warehouse

        if self._wh is None:
            self._wh = Warehouse(self.warehouse_root)
        table, part, data = chunk
        self._wh.write_part(table, self.run_id, part, data)
        return table, data.num_rows


# -- background threads: Parquet reads and writes overlap the processing of other batches ------

class _Background:
    """A few threads for Parquet reads and writes (Arrow releases the GIL while it decodes,
    encodes and compresses, so they run on the machine's other cores), with at most ``limit``
    tasks queued or running, so memory stays bounded however fast the producers are."""

    def __init__(self, threads: int):
        self._pool = cf.ThreadPoolExecutor(threads, thread_name_prefix="tenantry-io")
        self._slots = threading.BoundedSemaphore(2 * threads + 2)

    def submit(self, fn, *args) -> cf.Future:
        self._slots.acquire()
        try:
            future = self._pool.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _f: self._slots.release())
        return future


_BACKGROUND: list = []


def _background() -> _Background | None:
    """The process's I/O threads (one per core by default); ``TENANTRY_IO_THREADS=0`` reads
    and writes on the calling thread instead."""
    if not _BACKGROUND:
        n = int(os.environ.get("TENANTRY_IO_THREADS", os.cpu_count() or 1))
        _BACKGROUND.append(_Background(n) if n > 0 else None)
    return _BACKGROUND[0]


def _read_all(task: ReadTask, batch_rows: int) -> list:
    return list(read_task(task, batch_rows))


class ReadAhead(beam.DoFn):
    """:func:`read_task` for each task, reading the next Parquet row group while the steps
    after this one work on the current one (at most one task is read ahead). Other inputs are
    read in order as they come (OTLP decoding has its own process pool). For bounded pipelines:
    the last task's chunks are emitted when the bundle ends, in the global window."""

    def __init__(self, batch_rows: int):
        self.batch_rows = batch_rows
        self._ahead = None

    def start_bundle(self):
        self._ahead = None

    def process(self, task: ReadTask):
        pool = _background()
        # OTLP inputs decoded on the decoder pool's processes are read in order as they come;
        # everything else is read one task ahead on an I/O thread (the C span decoder and Arrow's
        # Parquet reader release the GIL, so reading overlaps the processing of the last task)
        if pool is None or (task.input.kind in ("otlp", "segment") and _decode_pool() is not None):
            yield from read_task(task, self.batch_rows)
            return
        ahead, self._ahead = self._ahead, pool.submit(_read_all, task, self.batch_rows)
        if ahead is not None:
            yield from ahead.result()

    def finish_bundle(self):
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            for chunk in ahead.result():
                yield GlobalWindows.windowed_value(chunk)


class WriteLake(beam.DoFn):
    """Writes chunks as lake parts of one run on the background threads; the bundle finishes
    only when its parts are written (a failed write fails the bundle). Counts ``kept.<table>``."""

    def __init__(self, warehouse_root: str, run_id: str):
        self.writer = WriteLakeParts(warehouse_root, run_id)
        self._pending: list[cf.Future] = []

    def setup(self):
        runtime.tune_allocator()  # see pipelines.runtime: kept for reuse, not faulted in per batch

    def start_bundle(self):
        self._pending = []

    def process(self, chunk):
        table, _part, data = chunk
        if table in schemas.SIGNAL_TABLES:
            Metrics.counter("tenantry", f"kept.{table}").inc(data.num_rows)
        pool = _background()
        if pool is None:
            self.writer.write(chunk)
            return
        still = []
        for f in self._pending:
            if f.done():
                f.result()  # a failed write fails the bundle now
            else:
                still.append(f)
        self._pending = still + [pool.submit(self.writer.write, chunk)]

    def finish_bundle(self):
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()
