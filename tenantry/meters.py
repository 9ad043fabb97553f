"""Meters: what is billed, and usage derived from telemetry by a meter definition.

A meter either names usage the app reports with ``tenantry.record_usage`` (``source:
usage_events``) or derives usage from telemetry (``spans``, ``logs``, ``metric_points``)::

    meters:
      - name: api.calls                # reported by the app; defaults: sum, per day
        unit: "{call}"
        group_by: [region]             # dimension names the ledger keeps apart
      - name: api.requests             # derived: one per matching server span
        source: spans
        filter: 'span.kind == "server" and attributes["http.route"] startswith "/api/"'
        aggregation: count
        group_by: ['attributes["http.route"]']
        period: hour
      - name: storage.peak_gb
        source: metric_points
        filter: 'metric.metric_name == "storage.used_gb"'
        aggregation: max
        value: value

``filter`` is a small, safe expression language, parsed here (tokenizer and recursive descent,
never ``eval``) and evaluated on whole Arrow columns: ``== != < <= > >=``, ``and or not``,
parentheses, ``startswith endswith contains``, ``in [..]``, string/number literals, ``true
false``, columns of the source table (optionally prefixed ``span.`` / ``log.`` / ``metric.`` /
``event.``) and map lookups ``attributes["k"]``, ``resource["k"]``, ``dimensions["k"]``. A string
compared with a number is read as a number (text that is not a number never matches). A null
never matches. Errors name the meter and the character position.

``value`` (sum, max, latest, unique_count) is one operand of that language; ``group_by`` items
are operands too, and a bare name that is not a column means ``attributes["name"]``
(``dimensions["name"]`` for usage_events meters). Derived usage has a deterministic ``event_id``
(from trace id, span id and meter; for logs and metric points from the record's content;
for unique_count from the value and period), so deriving twice is idempotent.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tenantry import schemas
from tenantry.config import Meter

from tenantry.meter_expr import (  # noqa: F401 - re-exported: meters.parse_filter etc. are public
    _EXACT_TEXT,
    _IDENTITY,
    _NUMERIC_TEXT,
    _TIME,
    TELEMETRY,
    MeterError,
    Node,
    _as_number,
    _is_num,
    evaluate,
    mask,
    parse_filter,
    parse_operand,
)


class Derived(NamedTuple):
    usage: pa.Table  # USAGE_EVENTS rows, source "derived"
    quarantined: pa.Table  # QUARANTINE rows: a value that is negative, not finite or too large



@dataclasses.dataclass(frozen=True)
class CompiledMeter:
    """A validated meter: its filter, value and group_by parsed against its source table."""

    meter: Meter
    filter: Node | None
    value: Node | None
    #: (dimension name, operand), sorted by name so dimension maps come out in canonical order
    group_by: tuple[tuple[str, Node], ...]


def compile_meter(m: Meter, index: int = 0) -> CompiledMeter:
    """Validate one meter; :class:`MeterError` names ``meters[i] (name).key`` and the position."""
    from tenantry.context import validation_error

    where = f"meters[{index}] ({str(m.name)[:64]!r})"
    problem = validation_error(m.name, "meter name")
    if problem:
        raise MeterError(f"{where}.name: {problem}")
    src = m.source
    if src == "usage_events":
        for key, bad in (("filter", m.filter), ("value", m.value)):
            if bad is not None:
                raise MeterError(f"{where}.{key}: a usage_events meter counts every event recorded under its "
                                 f"name; {key} applies to spans, logs and metric_points meters")
        if m.aggregation == "unique_count":
            raise MeterError(f"{where}.aggregation: unique_count needs a telemetry source (spans, logs, "
                             "metric_points) and a value; use count or sum for reported usage")
    elif m.aggregation == "count" and m.value is not None:
        raise MeterError(f"{where}.value: aggregation count counts matching records; remove value")
    elif m.aggregation != "count" and m.value is None:
        raise MeterError(f"{where}.value: aggregation {m.aggregation} needs a value, e.g. value: duration_ms "
                         "or value: 'attributes[\"bytes\"]'")
    flt = parse_filter(m.filter, src, f"{where}.filter") if m.filter is not None else None
    value = parse_operand(m.value, src, f"{where}.value") if m.value is not None else None
    bare = "dimensions" if src == "usage_events" else "attributes"
    dims: dict[str, Node] = {}
    for j, item in enumerate(m.group_by):
        if src == "usage_events" and isinstance(item, str) and not item.startswith("dimensions["):
            node = Node("map", 0, ("dimensions", item))  # a dimension name, verbatim
        else:
            node = parse_operand(item, src, f"{where}.group_by[{j}]", bare_map=bare)
        name = node.args[0] if node.kind == "col" else node.args[1]
        if name in dims:
            raise MeterError(f"{where}.group_by[{j}]: dimension {name!r} is listed twice")
        dims[name] = node
    return CompiledMeter(m, flt, value, tuple(sorted(dims.items())))


def compile_meters(meters: list[Meter]) -> list[CompiledMeter]:
    """Validate every meter (call at start-up so a bad filter fails before any data moves)."""
    return [compile_meter(m, i) for i, m in enumerate(meters)]


# -- derived usage ------------------------------------------------------------------------------

def _text(arr: pa.Array) -> pa.Array:
    """Any column as text for hashing: timestamps as epoch ns, maps as k\\x1ev pairs, null as \\x00."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_map(arr.type):
        pairs = pc.binary_join_element_wise(arr.keys, arr.items.fill_null("\x00"), "\x1e")
        lists = pa.ListArray.from_arrays(arr.offsets, pairs)
        arr = pc.if_else(arr.is_null(), pa.scalar(None, pa.string()), pc.binary_join(lists, "\x1d"))
    elif pa.types.is_timestamp(arr.type):
        arr = arr.cast(pa.int64())
    return arr.cast(pa.string()).fill_null("\x00")


def hash_ids(parts: list[pa.Array]) -> pa.Array:
    """Deterministic 32-hex ids: sha256 of the parts joined by \\x1f (vectorized in DuckDB)."""
    joined = pc.binary_join_element_wise(*[_text(p) for p in parts], "\x1f")
    con = duckdb.connect()
    try:
        con.register("k", pa.table({"k": joined}))
        return con.sql("select substr(sha256(k), 1, 32) as id from k").to_arrow_table().column("id").combine_chunks()
    finally:
        con.close()


def _dimensions(cm: CompiledMeter, data: pa.Table) -> pa.Array:
    n = data.num_rows
    if not cm.group_by:
        return pa.MapArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], pa.string()),
                                       pa.array([], pa.string()))
    vals = [_text_or_null(evaluate(node, data)) for _, node in cm.group_by]
    valid = np.stack([v.is_valid().to_numpy(zero_copy_only=False) for v in vals], axis=1)  # (n, k)
    rows, which = np.nonzero(valid)  # row-major: by row, then by dimension name (sorted)
    flat = pa.concat_arrays(vals).take(pa.array(which * n + rows))
    names = pa.array([name for name, _ in cm.group_by], pa.string()).take(pa.array(which))
    offsets = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int32)
    return pa.MapArray.from_arrays(pa.array(offsets), names, flat)


def _text_or_null(arr) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa.int64()).cast(pa.string()) if pa.types.is_timestamp(arr.type) else arr.cast(pa.string())


def _quantities(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(decimal128(38,9) quantities, reason text or null per row) for a value column."""
    if pa.types.is_string(values.type):
        # plain decimals that fit are cast exactly ("0.1" stays 0.1); other numbers (exponents,
        # more than 9 decimals) go through float and are rounded; other text is unbillable
        numeric = pc.match_substring_regex(values, _NUMERIC_TEXT).fill_null(False)
        fits = pc.match_substring_regex(values, _EXACT_TEXT).fill_null(False)
        exact = pc.if_else(fits, values, pa.scalar(None, pa.string())).cast(schemas.QUANTITY)
        approx, approx_bad = _from_float(_as_number(pc.if_else(pc.and_(numeric, pc.invert(fits)), values,
                                                                pa.scalar(None, pa.string()))))
        bad = pc.or_(pc.and_(pc.is_valid(values), pc.invert(numeric)), approx_bad)
        return _checked(pc.if_else(fits, exact, approx), bad)
    if pa.types.is_decimal(values.type) or pa.types.is_integer(values.type):
        try:
            return _checked(values.cast(schemas.QUANTITY), pa.array(np.zeros(len(values), bool)))
        except pa.ArrowInvalid:
            values = values.cast(pa.float64())
    return _checked(*_from_float(values))


def _from_float(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(quantities rounded to 9 places, unbillable flag): NaN, infinities and >= 1e28 are unbillable."""
    f = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    bad = valid & ~(np.isfinite(f) & (np.abs(np.where(np.isfinite(f), f, 0.0)) < 1e28))
    safe = np.where(bad | ~valid, 0.0, f)
    q = pc.round(pa.array(safe, mask=~valid), 9).cast(schemas.QUANTITY)
    return q, pa.array(bad)


def _checked(q: pa.Array, unparsable: pa.Array) -> tuple[pa.Array, pa.Array]:
    negative = pc.less(q, pa.scalar(0, schemas.QUANTITY)).fill_null(False)
    reason = pc.if_else(unparsable, pa.scalar("not a finite number in range"),
                        pc.if_else(negative, pa.scalar("negative"), pa.scalar(None, pa.string())))
    return pc.if_else(pc.is_valid(reason), pa.scalar(None, schemas.QUANTITY), q), reason


def derive(table: str, batch: pa.Table | pa.RecordBatch, meters: list[Meter] | list[CompiledMeter]) -> Derived:
    """Usage events for every meter reading ``table``, plus quarantine rows for unbillable values.

    Rows where the filter does not match, or the value (or unique_count value) is null, yield no
    usage; a negative, non-finite or out-of-range value is quarantined (``invalid_quantity``).
    """
    if isinstance(batch, pa.RecordBatch):
        batch = pa.Table.from_batches([batch])
    compiled = [m if isinstance(m, CompiledMeter) else compile_meter(m, i) for i, m in enumerate(meters)]
    usage, bad = [schemas.empty("usage_events")], [schemas.empty("quarantine")]
    for cm in compiled:
        if cm.meter.source != table or table not in TELEMETRY or batch.num_rows == 0:
            continue
        sub = batch.filter(mask(cm.filter, batch))
        sub = sub.filter(pc.is_valid(sub.column(_TIME[table])))
        if sub.num_rows == 0:
            continue
        u, q = _derive_meter(cm, table, sub)
        usage.append(u)
        bad.append(q)
    return Derived(pa.concat_tables(usage), pa.concat_tables(bad))


def derive_usage(table: str, batch: pa.Table | pa.RecordBatch, meters: list[Meter]) -> pa.Table:
    """``derive(...).usage``: USAGE_EVENTS rows (source "derived"). Prefer :func:`derive` to also
    write the quarantine rows of unbillable values."""
    return derive(table, batch, meters).usage


def _derive_meter(cm: CompiledMeter, table: str, sub: pa.Table) -> tuple[pa.Table, pa.Table]:
    m = cm.meter
    n = sub.num_rows
    time = sub.column(_TIME[table]).combine_chunks()
    meter_col = pa.array([m.name] * n, pa.string())
    if m.aggregation in ("count", "unique_count"):
        qty = pa.array(np.ones(n, np.int64)).cast(schemas.QUANTITY)
        reason = pa.nulls(n, pa.string())
    else:
        qty, reason = _quantities(_as_number_keep_text(evaluate(cm.value, sub)))
    keep = pc.is_valid(qty)
    if m.aggregation == "unique_count":
        distinct = _text_or_null(evaluate(cm.value, sub))
        keep = pc.and_(keep, pc.is_valid(distinct))
    dims = _dimensions(cm, sub)
    if m.aggregation == "unique_count":
        unit = {"hour": "h", "day": "D", "month": "M"}[m.period]
        period = pa.array(time.cast(pa.int64()).to_numpy(zero_copy_only=False).astype("datetime64[ns]")
                          .astype(f"datetime64[{unit}]").astype("datetime64[ns]").astype(np.int64))
        ids = hash_ids([meter_col, sub.column("tenant_id"), period, dims, distinct])
    elif table == "spans":
        by_span = hash_ids([meter_col, sub.column("trace_id"), sub.column("span_id")])
        by_content = hash_ids([meter_col, *(sub.column(c) for c in ("tenant_id", "service_name", "name",
                                                                       "start_time", "end_time"))])
        has_ids = pc.and_(pc.is_valid(sub.column("trace_id")), pc.is_valid(sub.column("span_id")))
        ids = pc.if_else(has_ids, by_span, by_content)
    else:
        ids = hash_ids([meter_col, *(sub.column(c) for c in _IDENTITY[table])])
    has_trace = table != "metric_points"
    usage = pa.table({
        "event_id": ids, "tenant_id": sub.column("tenant_id"), "meter": meter_col, "quantity": qty,
        "unit": pa.array([m.unit] * n, pa.string()), "time": time, "dimensions": dims,
        "source": pa.array(["derived"] * n, pa.string()), "service_name": sub.column("service_name"),
        "trace_id": sub.column("trace_id") if has_trace else pa.nulls(n, pa.string()),
        "span_id": sub.column("span_id") if has_trace else pa.nulls(n, pa.string()),
        "ingest_batch": sub.column("ingest_batch"),
    }).filter(keep)
    rejected = pc.is_valid(reason)
    bad = sub.filter(rejected)
    detail = pc.binary_join_element_wise(pa.scalar(f"meter {m.name}: value "), reason.filter(rejected), "")
    quarantine = schemas.conform("quarantine", pa.table({
        "table": pa.array([table] * bad.num_rows, pa.string()), "tenant_id": bad.column("tenant_id"),
        "service_name": bad.column("service_name"),
        "reason": pa.array([str(schemas.Reason.INVALID_QUANTITY)] * bad.num_rows, pa.string()),
        "processor": pa.array(["meters"] * bad.num_rows, pa.string()), "detail": detail,
        "time": time.filter(rejected), "ingest_batch": bad.column("ingest_batch"),
    }))
    return schemas.conform("usage_events", usage), quarantine


def _as_number_keep_text(arr) -> pa.Array:
    # text stays text so _quantities can read it exactly; other types become numbers
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr if pa.types.is_string(arr.type) or _is_num(arr.type) else arr.cast(pa.float64())
