"""Usage events (log records named ``tenantry.usage``) -> the ``usage_events`` table.

Quantities are billed, so they are converted exactly: the attribute text of a string, int or
double quantity (doubles arrive as ``repr`` text, so ``0.1`` stays ``0.1``) is parsed as a
``Decimal`` and must fit ``decimal128(38, 9)`` without rounding; anything else is quarantined with
``invalid_quantity`` rather than rounded, clamped or guessed.
"""

from __future__ import annotations

import decimal
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tenantry import schemas
from tenantry.otlp import columns as C

_DECIMAL_TEXT = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*\Z")
_SCALE = decimal.Decimal(1).scaleb(-schemas.QUANTITY.scale)
_CTX = decimal.Context(prec=200, Emax=10**6, Emin=-(10**6))
_MAX_INT_DIGITS = schemas.QUANTITY.precision - schemas.QUANTITY.scale


class QuantityError(ValueError):
    """A usage quantity that cannot be billed exactly. The message says why."""


def parse_quantity(text: str | None) -> decimal.Decimal:
    """The exact decimal of a quantity's attribute text; QuantityError when not billable."""
    if text is not None and len(text) > 200:
        raise QuantityError(f"quantity {_clip(text)!r} has too many characters (at most 200)")
    if text is None or not _DECIMAL_TEXT.match(text):
        raise QuantityError(f"quantity {_clip(text)!r} is not a decimal number")
    q = decimal.Decimal(text.strip())
    if q == 0:  # also turns -0 into 0
        return decimal.Decimal(0).quantize(_SCALE)
    if q < 0:
        raise QuantityError(f"quantity {_clip(text)} is negative; usage quantities must be >= 0")
    exact = q.quantize(_SCALE, context=_CTX) if q.adjusted() < _MAX_INT_DIGITS + 2 else None
    if exact is None or exact.adjusted() >= _MAX_INT_DIGITS:
        raise QuantityError(f"quantity {_clip(text)} is out of range (at most {_MAX_INT_DIGITS} integer digits)")
    if exact != q:
        raise QuantityError(f"quantity {_clip(text)} has more than {schemas.QUANTITY.scale} decimal places")
    return exact


def _clip(text, limit: int = 80):
    return text if text is None or len(text) <= limit else text[:limit] + "..."


#: quantities in this plain form (no sign, exponent or spaces; at most 29 integer digits and 9
#: decimals) convert exactly with Arrow's decimal cast; everything else goes through parse_quantity
_PLAIN_QUANTITY = r"^[0-9]{1,29}(\.[0-9]{1,9})?$"


def extract_usage(logs: pa.Table, attrs, rows: np.ndarray, times: np.ndarray) -> tuple[pa.Table, pa.Table]:
    """(usage_events, quarantine) for the log ``rows`` that are usage events.

    ``logs`` is the decoded logs table, ``attrs`` its AttrColumns, ``times`` the event time in ns
    per log row (record time, or observed time when 0). Vectorized: only quantities outside the
    plain decimal form and the rejected rows' details take Python per row.
    """
    if len(rows) == 0:
        return C.empty("usage_events"), C.empty("quarantine")
    take = pa.array(rows, pa.int64())
    sub = logs.take(take)
    field = {k: attrs.lookup(k, empty_is_null=True).take(take)
             for k in (schemas.USAGE_EVENT_ID_KEY, schemas.USAGE_METER_KEY, schemas.USAGE_QUANTITY_KEY)}
    unit = attrs.lookup(schemas.USAGE_UNIT_KEY).take(take)
    no_time = times[rows] == 0
    absent = {k: ~np.asarray(v.is_valid().to_numpy(zero_copy_only=False), bool) for k, v in field.items()}
    missing = no_time.copy()
    for m in absent.values():
        missing |= m

    # quantities: the plain form is cast in one go; the rest (and only it) is parsed per row
    qtext = field[schemas.USAGE_QUANTITY_KEY]
    plain = np.asarray(pc.fill_null(pc.match_substring_regex(qtext, _PLAIN_QUANTITY), False)
                       .to_numpy(zero_copy_only=False), bool) & ~missing
    quantity = pc.if_else(pa.array(plain), qtext, pa.scalar(None, pa.string())).cast(schemas.QUANTITY)
    bad_quantity: dict[int, str] = {}
    other = np.flatnonzero(~plain & ~missing)
    if len(other):
        texts, exact = qtext.to_pylist(), quantity.to_pylist()
        event_ids = field[schemas.USAGE_EVENT_ID_KEY]
        for j in other.tolist():
            try:
                exact[j] = parse_quantity(texts[j])
            except QuantityError as e:
                bad_quantity[j] = f"usage event {_clip(event_ids[j].as_py())!r}: {e}"
        quantity = pa.array(exact, schemas.QUANTITY)
    invalid = np.zeros(len(rows), bool)
    invalid[list(bad_quantity)] = True
    good = np.flatnonzero(~missing & ~invalid)

    events = _events_table(sub, good, field, unit, quantity, times[rows], attrs, rows)
    quarantine = [C.empty("quarantine")]
    miss = np.flatnonzero(missing)
    if len(miss):
        details = []
        for j in miss.tolist():
            gone = [k for k in field if absent[k][j]]
            if no_time[j]:
                gone.append("time (time_unix_nano and observed_time_unix_nano are both 0)")
            details.append(f"usage event without {', '.join(gone)}")
        quarantine.append(C.quarantine_rows("usage_events", sub.take(pa.array(miss)), schemas.Reason.MISSING_FIELD,
                                            details))
    if bad_quantity:
        pick = sorted(bad_quantity)
        quarantine.append(C.quarantine_rows("usage_events", sub.take(pa.array(pick, pa.int64())),
                                            schemas.Reason.INVALID_QUANTITY, [bad_quantity[j] for j in pick]))
    return events, pa.concat_tables(quarantine)


def _dimensions(attrs, rows: np.ndarray) -> pa.Array:
    """Per usage row, its ``tenantry.usage.dim.*`` attributes as a map without the prefix (in
    attribute order)."""
    offsets = attrs.attributes.offsets.to_numpy()
    lo, hi = offsets[rows], offsets[rows + 1]
    counts = hi - lo
    entry = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(int(counts.sum()))
    keys = attrs.keys.take(pa.array(entry, pa.int64()))
    values = attrs.values.take(pa.array(entry, pa.int64()))
    is_dim = np.asarray(pc.fill_null(pc.starts_with(keys, schemas.USAGE_DIMENSION_PREFIX), False)
                        .to_numpy(zero_copy_only=False), bool)
    owner = np.repeat(np.arange(len(rows)), counts)[is_dim]
    mask = pa.array(is_dim)
    names = pc.utf8_slice_codeunits(keys.filter(mask), len(schemas.USAGE_DIMENSION_PREFIX))
    out_offsets = np.zeros(len(rows) + 1, np.int32)
    np.cumsum(np.bincount(owner, minlength=len(rows)), out=out_offsets[1:])
    return pa.MapArray.from_arrays(pa.array(out_offsets), names, values.filter(mask), type=schemas.ATTRS)


def _events_table(sub: pa.Table, good: np.ndarray, field: dict, unit, quantity: pa.Array, times: np.ndarray,
                  attrs, rows: np.ndarray) -> pa.Table:
    n = len(good)
    if n == 0:
        return C.empty("usage_events")
    pick = pa.array(good, pa.int64())
    ns = np.ascontiguousarray(times[good], np.int64)
    keep = sub.take(pick)
    return pa.Table.from_arrays(
        [
            field[schemas.USAGE_EVENT_ID_KEY].take(pick),
            keep.column("tenant_id"),
            field[schemas.USAGE_METER_KEY].take(pick),
            quantity.take(pick),
            unit.take(pick),
            pa.Array.from_buffers(schemas.TS, n, [None, pa.py_buffer(ns)]),
            _dimensions(attrs, rows[good]),
            C.constant("app", n),
            keep.column("service_name"),
            keep.column("trace_id"),
            keep.column("span_id"),
            keep.column("ingest_batch"),
        ],
        schema=schemas.USAGE_EVENTS,
    )
