"""The landing zone: immutable, durable segment files of accepted OTLP requests.

Two kinds of segment, both Arrow IPC files that no reader sees until they are complete:

- a **raw segment** ``<landing>/seg-<UTC time>-<random>.arrow`` (what ``tenantry collect`` writes by
  default) has one row per accepted request (schema :data:`SEGMENT`): the signal, when it was
  received, and the request as OTLP protobuf bytes (JSON requests are converted on receipt, so
  readers decode one format);
- a **normalized segment** ``<landing>/nseg-<UTC time>-<random>.arrow`` (``tenantry collect
  --process``) holds what one group commit became after decoding and the processor chain: one row
  per non-empty table (schema :data:`NORMALIZED_SEGMENT`), its rows as an Arrow IPC stream in the
  ``tenantry.schemas`` schema of that table (``spans``, ``logs``, ``metric_points``,
  ``usage_events``, ``quarantine``, ``processor_stats``). All tables of a flush are in one file,
  so a flush lands whole or not at all. The file's schema metadata says which chain produced it
  (``tenantry.processed_by``, see :func:`chain_digest`), its ``tenantry.ingest_batch``
  (``nseg:<file name>``, the ``ingest_batch`` of every row) and ``tenantry.accounting``
  (JSON ``{table: {"in", "kept", "quarantined"}}``).

Durability (both kinds): a segment is written under a temporary name (``.seg-*.tmp`` /
``.nseg-*.tmp``, which no reader globs), flushed and fsynced, then renamed into place and the
directory fsynced. A crash therefore never leaves a half-written segment visible, and once the
write function returns the data survives a power cut; only then does the receiver acknowledge
the request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from tenantry import schemas

SIGNALS = ("traces", "logs", "metrics")

SEGMENT = pa.schema(
    [
        pa.field("signal", pa.string(), nullable=False),  # traces | logs | metrics
        pa.field("received_at", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("body", pa.large_binary(), nullable=False),  # serialized Export*ServiceRequest
    ]
)

SEGMENT_GLOB = "seg-*.arrow"

NORMALIZED_SEGMENT = pa.schema(
    [
        pa.field("table", pa.string(), nullable=False),  # a name in NORMALIZED_TABLES
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("data", pa.large_binary(), nullable=False),  # Arrow IPC stream, schemas.LAKE_TABLES[table]
    ]
)

NORMALIZED_SEGMENT_GLOB = "nseg-*.arrow"
NORMALIZED_FORMAT = "tenantry.normalized-segment/1"

#: the tables a normalized segment may hold
NORMALIZED_TABLES = (*schemas.SIGNAL_TABLES, "quarantine", "processor_stats")

#: schema metadata keys of a normalized segment
META_FORMAT = "tenantry.format"
META_PROCESSED_BY = "tenantry.processed_by"
META_INGEST_BATCH = "tenantry.ingest_batch"
META_ACCOUNTING = "tenantry.accounting"
META_TABLE = "tenantry.table"  # on each table's own IPC stream


#: codecs a segment's Arrow IPC buffers may be compressed with (readers need no option: Arrow
#: records the codec in each message). Measured on normalized spans (2 attributes a span): none
#: 354 bytes a span; lz4 127 (+0.18 µs a span to write, +0.09 to read); zstd 84 (+0.43 / +0.24)
COMPRESSIONS = ("none", "lz4", "zstd")


def ipc_options(compression: str | None) -> pa.ipc.IpcWriteOptions:
    """IPC write options for a segment codec in :data:`COMPRESSIONS` (None: ``"none"``).
    Raises ``ValueError`` naming the choices for anything else."""
    codec = "none" if compression is None else str(compression).strip().lower()
    if codec not in COMPRESSIONS:
        raise ValueError(f"segment compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
    return pa.ipc.IpcWriteOptions(compression=None if codec == "none" else codec)


class NormalizedSegmentError(ValueError):
    """A file is not a readable normalized segment (wrong schema, truncated, unknown table)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stamp(now: dt.datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%S%fZ")


def segment_name(prefix: str = "seg", now: dt.datetime | None = None) -> str:
    """A fresh ``<prefix>-<UTC time>-<random>.arrow`` name (names sort by time)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{prefix}-{_stamp(now)}-{uuid.uuid4().hex[:12]}.arrow"


def _commit(landing: Path, name: str, write: Callable[[Any], None]) -> Path:
    """Write ``name`` durably: temporary name, ``write(file)``, fsync, rename, fsync the folder."""
    landing.mkdir(parents=True, exist_ok=True)
    tmp = landing / f".{name}.tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        final = landing / name
        os.rename(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave garbage; nothing was acknowledged
        raise
    _fsync_dir(landing)
    return final


def write_segment(landing: str | Path, records: Sequence[tuple[str, bytes]], now: dt.datetime | None = None,
                  compression: str | None = None) -> Path:
    """Write ``records`` (signal, protobuf body) as one durable segment; return its path.
    ``compression``: a codec of :data:`COMPRESSIONS` for the file's buffers (default none)."""
    options = ipc_options(compression)
    now = now or dt.datetime.now(dt.timezone.utc)
    for signal, _ in records:
        if signal not in SIGNALS:
            raise ValueError(f"unknown signal {signal!r}; expected one of {', '.join(SIGNALS)}")
    table = pa.table(
        {
            "signal": pa.array([r[0] for r in records], pa.string()),
            "received_at": pa.array([now] * len(records), SEGMENT.field("received_at").type),
            "body": pa.array([r[1] for r in records], pa.large_binary()),
        },
        schema=SEGMENT,
    )

    def write(f) -> None:
        with pa.ipc.new_file(f, SEGMENT, options=options) as w:
            w.write_table(table)

    return _commit(Path(landing), segment_name("seg", now), write)


def read_segment(path: str | Path) -> pa.Table:
    """Read one segment. Raises ``ValueError`` if it is not a segment (wrong schema, truncated)."""
    try:
        with pa.memory_map(str(path)) as src:
            table = pa.ipc.open_file(src).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{path}: not a readable landing segment: {e}") from None
    if not table.schema.equals(SEGMENT, check_metadata=False):
        raise ValueError(f"{path}: not a landing segment (schema {table.schema.names})")
    return table


def iter_requests(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """Yield (signal, protobuf body) for every request stored in a segment."""
    table = read_segment(path)
    for signal, body in zip(table.column("signal").to_pylist(), table.column("body").to_pylist()):
        yield signal, body


def list_segments(landing: str | Path) -> list[Path]:
    """Committed raw segments in a landing folder, oldest first (names sort by receive time)."""
    return sorted(Path(landing).glob(SEGMENT_GLOB))


# -- normalized segments ----------------------------------------------------------------------


def _ipc_stream(table: str, data: pa.Table, options: pa.ipc.IpcWriteOptions) -> bytes:
    schema = data.schema.with_metadata({META_TABLE: table})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema, options=options) as w:
        w.write_table(data.replace_schema_metadata(schema.metadata))
    return sink.getvalue().to_pybytes()


def write_normalized_segment(
    landing: str | Path,
    tables: Mapping[str, pa.Table],
    processed_by: str,
    ingest_batch: str | None = None,
    name: str | None = None,
    accounting: Mapping[str, Mapping[str, int]] | None = None,
    now: dt.datetime | None = None,
    compression: str | None = None,
) -> Path:
    """Write one flush's tables as one durable normalized segment; return its path.

    ``tables`` maps names in :data:`NORMALIZED_TABLES` to tables in exactly their
    ``tenantry.schemas`` schema (empty ones are left out). ``name`` (from
    ``segment_name("nseg")``) lets the caller stamp rows with ``ingest_batch = "nseg:<name>"``
    before writing; ``ingest_batch`` defaults to that. ``compression``: a codec of
    :data:`COMPRESSIONS` for the tables' IPC streams (default none). Raises ``ValueError`` for an
    unknown table or codec or a schema that does not match, before anything touches the disk.
    """
    options = ipc_options(compression)
    name = name or segment_name("nseg", now)
    if not (name.startswith("nseg-") and name.endswith(".arrow") and "/" not in name):
        raise ValueError(f"normalized segment name {name!r} must look like nseg-<stamp>-<random>.arrow")
    names, rows, blobs = [], [], []
    for table, data in tables.items():
        if table not in NORMALIZED_TABLES:
            raise ValueError(f"normalized segment: unknown table {table!r}; "
                             f"expected one of {', '.join(NORMALIZED_TABLES)}")
        if not data.schema.equals(schemas.LAKE_TABLES[table], check_metadata=False):
            raise ValueError(f"normalized segment: table {table!r} does not have the schema of schemas.LAKE_TABLES"
                             f"[{table!r}] (columns {data.schema.names}); conform it first")
        if data.num_rows:
            names.append(table)
            rows.append(data.num_rows)
            blobs.append(_ipc_stream(table, data, options))
    metadata = {
        META_FORMAT: NORMALIZED_FORMAT,
        META_PROCESSED_BY: processed_by,
        META_INGEST_BATCH: ingest_batch or f"nseg:{name}",
        META_ACCOUNTING: json.dumps(accounting or {}, sort_keys=True),
    }
    schema = NORMALIZED_SEGMENT.with_metadata(metadata)
    batch = pa.table(
        {"table": pa.array(names, pa.string()), "rows": pa.array(rows, pa.int64()),
         "data": pa.array(blobs, pa.large_binary())},
        schema=schema,
    )

    def write(f) -> None:
        with pa.ipc.new_file(f, schema) as w:
            w.write_table(batch)

    return _commit(Path(landing), name, write)


def read_normalized_segment(path: str | Path) -> tuple[dict[str, pa.Table], dict[str, str]]:
    """``({table: rows}, metadata)`` of one normalized segment; tables it does not hold are absent.

    ``metadata`` has ``tenantry.processed_by``, ``tenantry.ingest_batch``, ``tenantry.accounting``
    (JSON) and ``tenantry.format``. Raises :class:`NormalizedSegmentError` naming the file when it
    is truncated, not a normalized segment, or holds a table in the wrong schema.
    """
    try:
        with pa.memory_map(str(path)) as src:
            outer = pa.ipc.open_file(src).read_all()
        outer.validate(full=True)  # offsets in bounds before they slice anything (a few rows: cheap)
    except (pa.ArrowInvalid, OSError) as e:
        raise NormalizedSegmentError(f"{path}: not a readable normalized segment: {e}") from None
    meta = {k.decode(): v.decode() for k, v in (outer.schema.metadata or {}).items()}
    if not outer.schema.equals(NORMALIZED_SEGMENT, check_metadata=False) or meta.get(META_FORMAT) != NORMALIZED_FORMAT:
        raise NormalizedSegmentError(f"{path}: not a normalized segment (schema {outer.schema.names}, "
                                     f"format {meta.get(META_FORMAT)!r}; expected {NORMALIZED_FORMAT!r})")
    if outer.column("data").null_count:
        raise NormalizedSegmentError(f"{path}: not a readable normalized segment: a table's data is null")
    tables: dict[str, pa.Table] = {}
    data = _values(outer.column("data"))
    for i, (table, rows) in enumerate(zip(outer.column("table").to_pylist(), outer.column("rows").to_pylist())):
        if table not in NORMALIZED_TABLES or table in tables:
            raise NormalizedSegmentError(f"{path}: row {i} holds table {table!r}; expected each of "
                                         f"{', '.join(NORMALIZED_TABLES)} at most once")
        try:
            got = pa.ipc.open_stream(data[i]).read_all()
        except pa.ArrowInvalid as e:
            raise NormalizedSegmentError(f"{path}: table {table!r} is not a readable Arrow stream: {e}") from None
        if got.num_rows != rows or not got.schema.equals(schemas.LAKE_TABLES[table], check_metadata=False):
            raise NormalizedSegmentError(f"{path}: table {table!r} holds {got.num_rows} rows (expected {rows}) "
                                         f"with columns {got.schema.names}; expected schemas.LAKE_TABLES[{table!r}]")
        tables[table] = got.replace_schema_metadata(None)
    return tables, meta


def _values(column: pa.ChunkedArray) -> list[pa.Buffer]:
    """Each value of a large_binary column as a zero-copy slice of its data buffer (indexing the
    column would copy every value into a scalar first: the whole segment, once more)."""
    out = []
    for chunk in column.chunks:
        _validity, offsets, values = chunk.buffers()
        offs = np.frombuffer(offsets, np.int64, len(chunk) + 1, chunk.offset * 8)
        out.extend(values.slice(int(a), int(b - a)) for a, b in zip(offs[:-1], offs[1:]))
    return out


def normalized_segment_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a normalized segment without reading its tables (only the file footer):
    enough to compare ``tenantry.processed_by`` with :func:`chain_digest` when planning a run."""
    try:
        with pa.memory_map(str(path)) as src:
            schema = pa.ipc.open_file(src).schema
    except (pa.ArrowInvalid, OSError) as e:
        raise NormalizedSegmentError(f"{path}: not a readable normalized segment: {e}") from None
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    if not schema.equals(NORMALIZED_SEGMENT, check_metadata=False) or meta.get(META_FORMAT) != NORMALIZED_FORMAT:
        raise NormalizedSegmentError(f"{path}: not a normalized segment (format {meta.get(META_FORMAT)!r}; "
                                     f"expected {NORMALIZED_FORMAT!r})")
    return meta


def iter_normalized_segment(path: str | Path) -> Iterator[tuple[str, pa.Table, dict[str, str]]]:
    """``(table, rows, metadata)`` for each table a normalized segment holds (the pipeline's chunks)."""
    tables, meta = read_normalized_segment(path)
    for table, data in tables.items():
        yield table, data, meta


def list_normalized_segments(landing: str | Path) -> list[Path]:
    """Committed normalized segments in a landing folder, oldest first."""
    return sorted(Path(landing).glob(NORMALIZED_SEGMENT_GLOB))


def chain_digest(chain: Any) -> str:
    """A stable ``sha256:<hex>`` of what a processor chain does: each processor's type, name and
    full options in order, and the tenant catalog (id -> tier) a processor holds.

    Two chains built from the same ``processors:`` list and tenant catalog have the same digest,
    on any host and in any process. Secrets (``hash_key``, ``api_keys``) are inside the hash, so
    changing them changes the digest, but only the digest leaves this function.
    """
    return "sha256:" + hashlib.sha256(json.dumps(_describe(chain), sort_keys=True, default=str).encode()).hexdigest()


def _describe(proc: Any) -> list[dict]:
    subs = getattr(proc, "processors", None)
    if subs is not None:  # a chain (possibly nested): its members, in order
        return [d for p in subs for d in _describe(p)]
    options = getattr(proc, "options", None)
    catalog = getattr(proc, "catalog", None) or {}
    return [{
        "type": getattr(proc, "type_name", type(proc).__name__),
        "name": getattr(proc, "name", None),
        "options": options.model_dump(mode="json") if hasattr(options, "model_dump") else options,
        "catalog": {tid: getattr(t, "tier", None) for tid, t in sorted(catalog.items())},
    }]
