"""Column builders shared by the span, log and metric decoders: vectorized, one call per batch."""

from __future__ import annotations

import functools
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tenantry import schemas
from tenantry.otlp.attrs import AttrColumns, decode_attribute_lists

PROCESSOR = "otlp_decode"
_INT64_MAX = np.uint64(2**63 - 1)
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
#: byte -> its two lower-case hex digits, as one little-endian uint16 (1-D lookups are fast)
_HEX_PAIRS = (_HEX[np.arange(256) >> 4].astype(np.uint16) | (_HEX[np.arange(256) & 15].astype(np.uint16) << 8))

SPAN_KINDS = pa.array(["unspecified", "internal", "server", "client", "producer", "consumer"])
STATUS_CODES = pa.array(["unset", "ok", "error"])
TEMPORALITIES = pa.array(["unspecified", "delta", "cumulative"])


@functools.lru_cache(maxsize=None)
def empty(name: str) -> pa.Table:
    """The empty table of ``name`` (cached: building one costs more than decoding a small request)."""
    return schemas.empty(name)


def hex_ids(ids: list) -> pa.Array:
    """Lower-case hex strings of a list of id bytes; empty ids become null."""
    arr = pa.array(ids, pa.large_binary())
    offs = np.frombuffer(arr.buffers()[1], np.int64, count=len(ids) + 1)
    total = int(offs[-1])
    body = np.frombuffer(arr.buffers()[2], np.uint8, count=total) if total else np.zeros(0, np.uint8)
    return hex_from_buffer(body, offs)


def hex_from_buffer(body: np.ndarray, offs: np.ndarray) -> pa.Array:
    """Hex strings of the byte slices ``body[offs[i]:offs[i+1]]`` (offsets from 0); empty -> null."""
    n = len(offs) - 1
    text = _HEX_PAIRS[body[: int(offs[-1])]].view(np.uint8)
    valid = np.diff(offs) > 0
    nulls = int(n - valid.sum())
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    out = pa.Array.from_buffers(pa.large_string(), n, [bitmap, pa.py_buffer(offs * 2), pa.py_buffer(text)], nulls)
    return out.cast(pa.string())


def timestamps(values: list) -> tuple[pa.Array, np.ndarray]:
    """(timestamp[ns, UTC] array, mask of values too large for int64 nanoseconds, set null)."""
    arr = np.asarray(values, np.uint64) if len(values) else np.zeros(0, np.uint64)
    too_big = arr > _INT64_MAX
    ints = arr.view(np.int64)
    if too_big.any():
        return pa.array(np.where(too_big, 0, ints), mask=too_big).cast(schemas.TS), too_big
    return pa.Array.from_buffers(schemas.TS, len(ints), [None, pa.py_buffer(ints)]), too_big


def enum_names(values: list, names: pa.Array) -> pa.Array:
    """Map enum integers to their names; values outside the enum become null."""
    idx = np.asarray(values, np.int64) if len(values) else np.zeros(0, np.int64)
    bad = (idx < 0) | (idx >= len(names))
    return names.take(pa.array(np.where(bad, 0, idx), mask=bad if bad.any() else None))


def constant(value, n: int, typ=pa.string()) -> pa.Array:
    """``value`` repeated ``n`` times, without a Python list per row."""
    return pa.array([value], typ).take(pa.array(np.zeros(n, np.int64)))


def group_index(sizes: list[int]) -> pa.Array:
    """For groups of ``sizes`` records, the group index of each record (for ``take``)."""
    return pa.array(np.repeat(np.arange(len(sizes), dtype=np.int64), np.asarray(sizes, np.int64)))


class Resources:
    """Resource-level values decoded once per resource and repeated per record with ``take``."""

    def __init__(self, attribute_lists: list):
        self.attrs: AttrColumns = decode_attribute_lists(attribute_lists)
        n = len(attribute_lists)
        service = self.attrs.lookup("service.name", empty_is_null=True)
        self.service_name = pc.fill_null(service, "unknown_service") if n else pa.array([], pa.string())
        self.tenant_id = self.attrs.lookup(schemas.TENANT_ID_KEY, empty_is_null=True)
        self.tenant_tier = self.attrs.lookup(schemas.TENANT_TIER_KEY, empty_is_null=True)
        self.user_id = self.attrs.lookup(schemas.USER_ID_KEY, empty_is_null=True)


def attribution(record: AttrColumns, res: Resources, res_idx: pa.Array) -> dict[str, pa.Array]:
    """tenant_id / tenant_tier / user_id: the record attribute, else the resource's, else default."""
    out = {}
    for col, key, res_col in (
        ("tenant_id", schemas.TENANT_ID_KEY, res.tenant_id),
        ("tenant_tier", schemas.TENANT_TIER_KEY, res.tenant_tier),
        ("user_id", schemas.USER_ID_KEY, res.user_id),
    ):
        out[col] = pc.coalesce(record.lookup(key, empty_is_null=True), res_col.take(res_idx))
    out["tenant_id"] = pc.fill_null(out["tenant_id"], schemas.UNATTRIBUTED)
    return out


def split_bad(table_name: str, table: pa.Table, bad: dict[int, str], reason=schemas.Reason.MALFORMED_RECORD):
    """(good rows, quarantine rows) where ``bad`` maps row index -> detail."""
    if not bad:
        return table, empty("quarantine")
    idx = sorted(bad)
    mask = np.zeros(table.num_rows, bool)
    mask[idx] = True
    rejected = table.take(pa.array(idx, pa.int64()))
    return table.filter(pa.array(~mask)), quarantine_rows(table_name, rejected, reason, [bad[i] for i in idx])


def quarantine_rows(table_name: str, rows: pa.Table, reason, details) -> pa.Table:
    """Quarantine rows keeping each rejected record whole as JSON in ``raw``.

    Like ``collector_processors.base.quarantine_rows``, but safe for nanosecond timestamps
    (``to_pylist`` refuses them without pandas), which are rendered as ISO-8601 text.
    """
    n = rows.num_rows
    if n == 0:
        return empty("quarantine")
    plain = rows
    for i, field in enumerate(rows.schema):
        if pa.types.is_timestamp(field.type):
            plain = plain.set_column(i, field.name, rows.column(i).cast(pa.string()))
    raw = [compact_json(r) for r in plain.to_pylist()]
    time_col = rows.column("time") if "time" in rows.column_names else (
        rows.column("start_time") if "start_time" in rows.column_names else pa.nulls(n, schemas.TS))

    def col(name):
        return rows.column(name) if name in rows.column_names else pa.nulls(n, pa.string())

    return pa.Table.from_arrays(
        [constant(table_name, n), col("tenant_id"), col("service_name"), constant(str(reason), n),
         constant(PROCESSOR, n), pa.array(list(details), pa.string()), pa.array(raw, pa.string()),
         time_col, col("ingest_batch")],
        schema=schemas.QUARANTINE,
    )


def note_bad(bad: dict[int, str], mask: np.ndarray, detail: str) -> None:
    """Record ``detail`` for every row set in ``mask`` (keeping the first problem found per row)."""
    for i in np.flatnonzero(mask).tolist():
        bad.setdefault(i, detail)


def request_quarantine(ingest_batch: str, raw: str | None, detail: str, table: str = "request",
                       reason=schemas.Reason.MALFORMED_REQUEST) -> pa.Table:
    """One quarantine row for a whole input that could not be decoded."""
    return pa.Table.from_pylist(
        [{"table": table, "tenant_id": None, "service_name": None, "reason": str(reason),
          "processor": PROCESSOR, "detail": detail, "raw": raw, "time": None, "ingest_batch": ingest_batch}],
        schema=schemas.QUARANTINE,
    )


def compact_json(value) -> str:
    """Compact JSON, as stored in attribute maps and quarantine ``raw``."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)

