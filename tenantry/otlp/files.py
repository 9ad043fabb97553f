"""OTLP input files -> ``(ingest_batch, tables)`` chunks.

Formats (any of them may be gzip-compressed with a ``.gz`` suffix):

- ``.json``  one OTLP/JSON request body; the signal comes from its top-level key;
- ``.jsonl`` the OpenTelemetry Collector file exporter: one JSON request per line, any signal
  per line; a bad line is one quarantine row and the other lines still decode;
- ``.pb``    one protobuf request body; the signal comes from the file name (``trace``/``span``,
  ``log``, ``metric``), else it is inferred from the bytes, else the file is quarantined;
- ``seg-*.arrow`` landing segments (:mod:`tenantry.landing`), ``ingest_batch = "seg:<name>"``.

Promises: ``ingest_batch`` is derived from the file's bytes (``file:<sha256[:32]>``, plus
``:<chunk>`` for ``.jsonl``), so re-reading the same content gives the same ids; decompression
and reads are bounded by ``max_decompressed_bytes`` (a gzip bomb is a quarantine row, never an
OOM); an empty, unreadable or undecodable file is a quarantine row, never an exception, except a
path that does not exist (FileNotFoundError).
"""

from __future__ import annotations

import concurrent.futures as cf
import fnmatch
import functools
import gzip
import hashlib
import logging
import multiprocessing
import os
import time
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

from tenantry import landing
from tenantry.otlp.decode import decode_request, empty_tables, malformed_request
from tenantry.otlp.jsonfmt import detect_signal, load_json, parse_json_doc
from tenantry.otlp.messages import SIGNALS, OtlpDecodeError
from tenantry.otlp.spans import accelerated, decode_span_bodies
from tenantry.otlp.sniff import infer_signal, signal_from_name

#: default bound on the bytes read (after decompression) from one file, or one .jsonl line
DEFAULT_MAX_DECOMPRESSED_BYTES = 256 << 20
#: .jsonl lines are decoded into chunks of about this many input bytes
DEFAULT_CHUNK_BYTES = 8 << 20

Chunk = tuple[str, dict[str, pa.Table]]
logger = logging.getLogger(__name__)


class _TooLarge(Exception):
    pass


def _sha256(path: Path) -> str:
    """The SHA-256 of a file's content (its ingest id's source). Remembered per (path, size,
    mtime, inode): the pipeline hashes each input when it discovers it and again when it decodes
    it, and inputs are immutable files."""
    st = os.stat(path)
    return _sha256_of(str(path), st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=1 << 16)
def _sha256_of(path: str, _size: int, _mtime_ns: int, _inode: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_id(path) -> str:
    """The ingest id of an input file: ``file:`` and the first 32 hex digits of its SHA-256."""
    return "file:" + _sha256(Path(path))[:32]


def _open(path: Path, gz: bool):
    return gzip.open(path, "rb") if gz else open(path, "rb")


def _read_all(path: Path, gz: bool, limit: int) -> bytes:
    with _open(path, gz) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise _TooLarge(f"more than {limit} bytes{' after decompression' if gz else ''}")
    return data


def _concat(parts: list[dict[str, pa.Table]]) -> dict[str, pa.Table]:
    out = empty_tables()
    for name in out:
        tables = [p[name] for p in parts if p[name].num_rows]
        if tables:
            out[name] = pa.concat_tables(tables)
    return out


def iter_file(path, max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
              chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[Chunk]:
    """Decode one input file into ``(ingest_batch, tables)`` chunks (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such OTLP input file")
    lower = path.name.lower()
    gz = lower.endswith(".gz")
    base = lower[:-3] if gz else lower
    if fnmatch.fnmatch(base, landing.SEGMENT_GLOB):
        yield _segment(path, gz, max_decompressed_bytes)
        return
    try:
        batch = content_id(path)
    except OSError as e:
        batch = "file:path-" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
        yield batch, malformed_request(batch, None, f"{path}: cannot read the file ({e})")
        return
    try:
        if base.endswith(".jsonl"):
            yield from _jsonl(path, gz, batch, max_decompressed_bytes, chunk_bytes)
            return
        if base.endswith(".json") or base.endswith(".pb"):
            data = _read_all(path, gz, max_decompressed_bytes)
            if not data.strip():
                yield batch, malformed_request(batch, data, f"{path}: file is empty")
            elif base.endswith(".json"):
                yield batch, _json_request(data, batch, str(path))
            else:
                yield batch, _pb_request(data, batch, path)
            return
    except _TooLarge as e:
        yield batch, malformed_request(batch, None, f"{path}: {e} (max_decompressed_bytes={max_decompressed_bytes}); "
                                                    "split the file or raise the limit")
        return
    except (OSError, EOFError, zlib.error) as e:
        yield batch, malformed_request(batch, None, f"{path}: cannot read the file ({type(e).__name__}: {e})")
        return
    yield batch, malformed_request(batch, None, f"{path}: unsupported file type; expected .json, .jsonl, .pb or "
                                                f"{landing.SEGMENT_GLOB} (optionally .gz)")


def _json_request(data: bytes, batch: str, where: str) -> dict[str, pa.Table]:
    try:
        doc = load_json(data)
        signal = detect_signal(doc)
        if signal is None:
            raise OtlpDecodeError("no single top-level resourceSpans, resourceLogs or resourceMetrics key; "
                                  "is this an OTLP/JSON request body?")
        message = parse_json_doc(signal, doc)
    except OtlpDecodeError as e:
        return malformed_request(batch, data, f"{where}: {e}")
    return decode_request(signal, message, batch)


def _jsonl(path: Path, gz: bool, batch: str, limit: int, chunk_bytes: int) -> Iterator[Chunk]:
    parts, size, chunk, total, line_no = [], 0, 0, 0, 0
    with _open(path, gz) as f:
        while True:
            line = f.readline(limit + 1)
            if not line:
                break
            line_no += 1
            total += len(line)
            if total > limit:
                parts.append(malformed_request(f"{batch}:{chunk}", None, (
                    f"{path}: more than {limit} bytes{' after decompression' if gz else ''} at line {line_no}; "
                    f"the rest of the file is not decoded (max_decompressed_bytes={limit}); split the file "
                    "or raise the limit")))
                break
            if not line.strip():
                continue
            parts.append(_json_request(line, f"{batch}:{chunk}", f"{path} line {line_no}"))
            size += len(line)
            if size >= chunk_bytes:
                yield f"{batch}:{chunk}", _concat(parts)
                parts, size, chunk = [], 0, chunk + 1
    if parts or chunk == 0:
        if not parts:
            parts.append(malformed_request(f"{batch}:{chunk}", b"", f"{path}: file has no requests (empty)"))
        yield f"{batch}:{chunk}", _concat(parts)


def _pb_request(data: bytes, batch: str, path: Path) -> dict[str, pa.Table]:
    signal = signal_from_name(path.name) or infer_signal(data)
    if signal is None:
        return malformed_request(batch, data, (
            f"{path}: cannot tell whether this protobuf file holds traces, logs or metrics; put trace, log or "
            "metric in the file name (e.g. traces-0001.pb)"))
    return decode_request(signal, data, batch)


def _segment(path: Path, gz: bool, limit: int) -> Chunk:
    batch = f"seg:{path.name}"
    try:
        if gz:
            table = pa.ipc.open_file(pa.BufferReader(_read_all(path, gz, limit))).read_all()
            if not table.schema.equals(landing.SEGMENT, check_metadata=False):
                raise ValueError(f"{path}: not a landing segment (schema {table.schema.names})")
        else:
            table = landing.read_segment(path)
    except (ValueError, _TooLarge, OSError, EOFError, zlib.error, pa.ArrowException) as e:
        return batch, malformed_request(batch, None, f"{path}: cannot read the landing segment ({e})")
    parts = []
    for i, (signal, body) in enumerate(zip(table.column("signal").to_pylist(), table.column("body").to_pylist())):
        if signal not in SIGNALS:
            parts.append(malformed_request(batch, body, f"{path} row {i}: unknown signal {signal!r}"))
        else:
            parts.append(decode_request(signal, body, batch))
    return batch, _concat(parts) if parts else empty_tables()


# -- many files, optionally in parallel ----------------------------------------------------------

def _to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def _decode_file_ipc(path: str, max_decompressed_bytes: int, chunk_bytes: int) -> list:
    """Worker: one file's chunks with non-empty tables as Arrow IPC stream bytes."""
    return [(batch, {k: _to_ipc(t) for k, t in tables.items() if t.num_rows})
            for batch, tables in iter_file(path, max_decompressed_bytes, chunk_bytes)]


def _decode_group_ipc(paths: list[str], max_decompressed_bytes: int, chunk_bytes: int) -> list:
    """Worker: :func:`decode_group` with non-empty tables as Arrow IPC stream bytes."""
    return [(batch, {k: _to_ipc(t) for k, t in tables.items() if t.num_rows})
            for batch, tables in decode_group(paths, max_decompressed_bytes, chunk_bytes)]


def _trace_body(path: Path, limit: int) -> tuple[str, bytes] | None:
    """(ingest batch, body) of a readable, non-empty ``.pb`` file of trace requests within the
    size limit; None for anything else (which :func:`iter_file` handles, errors included)."""
    lower = path.name.lower()
    gz = lower.endswith(".gz")
    base = lower[:-3] if gz else lower
    if not base.endswith(".pb") or not path.exists():
        return None
    try:
        batch = content_id(path)
        data = _read_all(path, gz, limit)
    except (_TooLarge, OSError, EOFError, zlib.error):
        return None
    if not data or data.isspace() or (signal_from_name(path.name) or infer_signal(data)) != "traces":
        return None  # (isspace stops at the first other byte; strip() would copy the body)
    return batch, data


def decode_group(paths: Iterable, max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[Chunk]:
    """The rows of :func:`iter_file` over each path, with the ``.pb`` trace requests among them
    decoded together in one vectorized pass (:func:`~tenantry.otlp.spans.decode_span_bodies`),
    which shares the numpy decoder's per-call cost. Every row keeps its own file's
    ``ingest_batch``; the chunk of the combined requests is named after the first of them. Files
    the combined pass cannot take are decoded one by one, exactly as :func:`iter_file` does.
    """
    chunks: list[Chunk] = []
    bodies: list[bytes] = []
    batches: list[str] = []
    for p in map(Path, paths):
        found = _trace_body(p, max_decompressed_bytes)
        if found is None:
            chunks.extend(iter_file(p, max_decompressed_bytes, chunk_bytes))
        else:
            batches.append(found[0])
            bodies.append(found[1])
    if not bodies:
        return chunks
    try:
        fast = decode_span_bodies(bodies, batches) if len(bodies) > 1 else None
    except Exception:  # noqa: BLE001 - a decoder bug must not lose data: decode body by body instead
        logger.exception("combined span decoder failed; decoding the requests one by one")
        fast = None
    if fast is None:
        return chunks + [(b, decode_request("traces", d, b)) for d, b in zip(bodies, batches)]
    out = empty_tables()
    out["spans"], out["quarantine"] = fast
    return chunks + [(batches[0], out)]


#: files per group for the numpy span decoder: four 1,000-span requests decode about 1.5x faster
#: together than one by one, but larger groups get slower again (its arrays outgrow the CPU caches)
NUMPY_GROUP_FILES = 4
#: the C decoder gains up to ~2 MB groups, then stays flat while its peak memory grows (about 20x the
#: group's bytes): groups close at this many bytes of requests (on disk) or files. 1,000-span
#: requests, per span: one at a time 1.9 us, 1 MB groups 1.3, 2 MB 1.15, 8 MB 1.15 (+100 MiB)
C_GROUP_BYTES = 2 << 20
C_GROUP_FILES = 256


def decode_groups(paths: Iterable, pool: DecodePool | None = None, group_files: int | None = None,
                  max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
                  chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[Chunk]:
    """:func:`decode_group` over consecutive groups of paths, in order; across the ``pool``'s
    workers when one is given (at most two groups per worker in flight). ``group_files`` fixes the
    files per group; by default groups are sized for the decoder in use (:data:`NUMPY_GROUP_FILES`,
    or :data:`C_GROUP_BYTES` / :data:`C_GROUP_FILES` with the C accelerator)."""
    paths = [str(p) for p in paths]
    if group_files is None and accelerated():
        groups = list(_groups_by_size(paths, C_GROUP_BYTES, C_GROUP_FILES))
    else:
        n = group_files or NUMPY_GROUP_FILES
        groups = [paths[i:i + n] for i in range(0, len(paths), n)]
    if pool is None:
        for g in groups:
            yield from decode_group(g, max_decompressed_bytes, chunk_bytes)
        return
    yield from _run_in(pool, _decode_group_ipc, groups, max_decompressed_bytes, chunk_bytes)


def _groups_by_size(paths: list[str], max_bytes: int, max_files: int) -> Iterator[list[str]]:
    """Consecutive groups of paths, each closed once it holds ``max_bytes`` (file sizes on disk) or
    ``max_files`` files."""
    group: list[str] = []
    size = 0
    for p in paths:
        try:
            size += os.path.getsize(p)
        except OSError:  # gone or unreadable: decode_group reports it like any bad input
            pass
        group.append(p)
        if size >= max_bytes or len(group) >= max_files:
            yield group
            group, size = [], 0
    if group:
        yield group


def _exit_with_host(host_pid: int, every_s: float = 1.0) -> None:
    """In a decode worker: exit when the process that started the pool is gone (killed with
    SIGKILL, it cannot shut its pool down), instead of idling forever."""
    import threading

    def watch():
        while True:
            time.sleep(every_s)
            try:
                os.kill(host_pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # the pid now belongs to another user's process: ours is gone
                os._exit(0)

    threading.Thread(target=watch, name="tenantry-host-watch", daemon=True).start()


class DecodePool:
    """Worker processes for :func:`decode_files`, started once and reused across calls.

    Starting workers is the expensive part of a parallel decode: each one is forked from a fork
    server and, as multiprocessing does, imports the host's ``__main__`` module again (the CLI, a
    benchmark script). A pool started per call pays that on every call, which is why two
    processes used to decode fewer spans per second than one. Hold a pool for as long as there
    are files to decode::

        with DecodePool(processes=2) as pool:
            for batch, tables in decode_files(paths, pool=pool):
                ...

    Workers start lazily, on the first call that needs them; :meth:`close` (or leaving the
    ``with`` block) stops them.
    """

    def __init__(self, processes: int = 2):
        if processes < 1:
            raise ValueError(f"DecodePool: processes must be at least 1; got {processes}")
        self.processes = processes
        self._executor: cf.ProcessPoolExecutor | None = None

    @property
    def executor(self) -> cf.ProcessPoolExecutor:
        if self._executor is None:
            # spawn, not fork (pyarrow's threads may hold locks) nor forkserver (a fork server
            # outlives a host killed with SIGKILL); workers are started once per pool
            ctx = multiprocessing.get_context("spawn")
            self._executor = cf.ProcessPoolExecutor(max_workers=self.processes, mp_context=ctx,
                                                    initializer=_exit_with_host, initargs=(os.getpid(),))
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> "DecodePool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def decode_files(paths: Iterable, processes: int = 1, max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, pool: DecodePool | None = None) -> Iterator[Chunk]:
    """Decode many files, in input order; across worker processes when ``processes`` > 1 or a
    ``pool`` is given (the pool's workers are reused; otherwise a pool lives for this call only).

    Workers return tables as Arrow IPC bytes; at most ``2 * processes`` files are in flight, so
    memory stays bounded however many paths there are.
    """
    if pool is None and processes <= 1:
        for p in paths:
            yield from iter_file(p, max_decompressed_bytes, chunk_bytes)
        return
    if pool is None:
        with DecodePool(processes) as own:
            yield from _decode_in(own, paths, max_decompressed_bytes, chunk_bytes)
        return
    yield from _decode_in(pool, paths, max_decompressed_bytes, chunk_bytes)


def _decode_in(pool: DecodePool, paths: Iterable, max_decompressed_bytes: int, chunk_bytes: int) -> Iterator[Chunk]:
    yield from _run_in(pool, _decode_file_ipc, (str(p) for p in paths), max_decompressed_bytes, chunk_bytes)


def _run_in(pool: DecodePool, work, items: Iterable, max_decompressed_bytes: int, chunk_bytes: int) -> Iterator[Chunk]:
    """``work(item, ...)`` for each item on the pool's workers, results in item order."""
    executor = pool.executor
    pending: list[cf.Future] = []
    try:
        it = iter(items)
        for p in it:
            pending.append(executor.submit(work, p, max_decompressed_bytes, chunk_bytes))
            if len(pending) >= 2 * pool.processes:
                break
        while pending:
            result = pending.pop(0).result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(executor.submit(work, nxt, max_decompressed_bytes, chunk_bytes))
            for batch, ipc in result:
                tables = empty_tables()
                tables.update({k: _from_ipc(v) for k, v in ipc.items()})
                yield batch, tables
    finally:
        for f in pending:  # the caller stopped early or a file raised: drop queued work
            f.cancel()


__all__ = ["DEFAULT_CHUNK_BYTES", "DEFAULT_MAX_DECOMPRESSED_BYTES", "DecodePool", "decode_files", "decode_group",
           "decode_groups", "iter_file"]
