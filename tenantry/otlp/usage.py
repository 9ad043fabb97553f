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


def extract_usage(logs: pa.Table, attrs, rows: np.ndarray, times: np.ndarray) -> tuple[pa.Table, pa.Table]:
    """(usage_events, quarantine) for the log ``rows`` that are usage events.

    ``logs`` is the decoded logs table, ``attrs`` its AttrColumns, ``times`` the event time in ns
    per log row (record time, or observed time when 0).
    """
    if len(rows) == 0:
        return C.empty("usage_events"), C.empty("quarantine")
    offsets = attrs.attributes.offsets.to_numpy()
    keys = attrs.keys.to_pylist()
    values = attrs.values.to_pylist()
    sub = logs.take(pa.array(rows, pa.int64()))
    good, out, bad_rows, bad_reason, bad_detail = [], [], [], [], []
    for j, i in enumerate(rows.tolist()):
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        a = dict(zip(keys[lo:hi], values[lo:hi]))
        missing = [k for k in (schemas.USAGE_EVENT_ID_KEY, schemas.USAGE_METER_KEY, schemas.USAGE_QUANTITY_KEY)
                   if not a.get(k)]
        if times[i] == 0:
            missing.append("time (time_unix_nano and observed_time_unix_nano are both 0)")
        if missing:
            bad_rows.append(j)
            bad_reason.append(schemas.Reason.MISSING_FIELD)
            bad_detail.append(f"usage event without {', '.join(missing)}")
            continue
        try:
            quantity = parse_quantity(a[schemas.USAGE_QUANTITY_KEY])
        except QuantityError as e:
            bad_rows.append(j)
            bad_reason.append(schemas.Reason.INVALID_QUANTITY)
            bad_detail.append(f"usage event {_clip(a[schemas.USAGE_EVENT_ID_KEY])!r}: {e}")
            continue
        good.append(j)
        dims = [(k[len(schemas.USAGE_DIMENSION_PREFIX):], v) for k, v in a.items()
                if k.startswith(schemas.USAGE_DIMENSION_PREFIX)]
        out.append((a[schemas.USAGE_EVENT_ID_KEY], a[schemas.USAGE_METER_KEY], quantity,
                    a.get(schemas.USAGE_UNIT_KEY), int(times[i]), dims))
    events = _events_table(sub.take(pa.array(good, pa.int64())), out)
    quarantine = [C.empty("quarantine")]
    for reason in (schemas.Reason.MISSING_FIELD, schemas.Reason.INVALID_QUANTITY):
        pick = [k for k, r in enumerate(bad_reason) if r == reason]
        if pick:
            rejected = sub.take(pa.array([bad_rows[k] for k in pick], pa.int64()))
            quarantine.append(C.quarantine_rows("usage_events", rejected, reason, [bad_detail[k] for k in pick]))
    return events, pa.concat_tables(quarantine)


def _events_table(sub: pa.Table, out: list) -> pa.Table:
    n = len(out)
    if n == 0:
        return C.empty("usage_events")
    times = np.array([o[4] for o in out], np.int64)
    return pa.Table.from_arrays(
        [
            pa.array([o[0] for o in out], pa.string()),
            sub.column("tenant_id"),
            pa.array([o[1] for o in out], pa.string()),
            pa.array([o[2] for o in out], schemas.QUANTITY),
            pa.array([o[3] for o in out], pa.string()),
            pa.Array.from_buffers(schemas.TS, n, [None, pa.py_buffer(times)]),
            pa.array([o[5] for o in out], schemas.ATTRS),
            C.constant("app", n),
            sub.column("service_name"),
            sub.column("trace_id"),
            sub.column("span_id"),
            sub.column("ingest_batch"),
        ],
        schema=schemas.USAGE_EVENTS,
    )
