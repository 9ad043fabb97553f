"""SRE partials: RED counts per minute and latency sketches per hour, per tenant, service and operation.

A request is a server or consumer span (an entry point); its operation is the span name (OpenTelemetry
names HTTP server spans ``"{method} {http.route}"``, so the name already has the route's low
cardinality). Counts are re-weighted by ``sample_weight``, so spans sampled upstream still count
for what they stand for.

One pass over a batch of spans yields four mergeable partial families:

- ``red_minutely_partials`` (minute, tenant, service, operation): requests, errors, duration sum and,
  per step of :data:`tenantry.schemas.LATENCY_LADDER_MS`, the requests slower than it (what latency
  SLOs count at minute grain, for 5-minute burn-rate windows). No sketch at minute grain: that would
  multiply the rows by the number of buckets.
- ``latency_sketch_op_hourly`` (hour, tenant, service, operation, key): DDSketch bucket counts; days
  are sums of hours, so a day's quantile is exactly the quantile of a day-long sketch.
- ``sre_hourly_partials`` and ``latency_sketch_hourly`` (hour, tenant, service): the original
  service-level families, re-grouped from the two above (small tables), so existing views keep working.

Grouping packs the keys into one integer per row and uses numpy (see :func:`_group`).
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.transforms.partials import Family, as_part, summing
from tenantry import schemas, sketch

LADDER_COLUMNS = tuple(f"slow_over_{t}ms" for t in schemas.LATENCY_LADDER_MS)

SRE_HOURLY = Family("sre_hourly_partials", ("hour", "tenant_id", "service_name"), ("requests", "errors", "duration_sum_ms"))
LATENCY_HOURLY = Family("latency_sketch_hourly", ("hour", "tenant_id", "service_name", "key"), ("count",))
RED_MINUTELY = Family(
    "red_minutely_partials",
    ("minute", "tenant_id", "service_name", "operation"),
    ("requests", "errors", "duration_sum_ms", *LADDER_COLUMNS),
)
LATENCY_OP_HOURLY = Family(
    "latency_sketch_op_hourly", ("hour", "tenant_id", "service_name", "operation", "key"), ("count",)
)
FAMILIES = (RED_MINUTELY, LATENCY_OP_HOURLY, SRE_HOURLY, LATENCY_HOURLY)

_MINUTE_NS = 60 * 10**9
_HOUR_NS = 3600 * 10**9
_NO_OPERATION = "(unnamed)"


def request_mask(spans: pa.Table) -> pa.Array:
    """True for entry-point spans (server, consumer) with a start time: the requests of RED."""
    kind = spans.column("kind")
    is_req = pc.or_(pc.equal(kind, "server"), pc.equal(kind, "consumer"))
    return pc.and_(pc.fill_null(is_req, False), pc.is_valid(spans.column("start_time")))


def floor_ns(times: pa.ChunkedArray | pa.Array, unit_ns: int) -> np.ndarray:
    """Epoch nanoseconds floored to ``unit_ns`` (integer math; pc.floor_temporal is ~5x slower)."""
    ns = times.cast(pa.int64()).to_numpy()
    return ns - ns % unit_ns


def _codes(col) -> tuple[np.ndarray, pa.Array, int]:
    """(integer code per row, dictionary of values, cardinality) of a string column."""
    enc = pc.dictionary_encode(col)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks() if enc.num_chunks != 1 else enc.chunk(0)
    return enc.indices.to_numpy().astype(np.int64), enc.dictionary, len(enc.dictionary)


def _group(family: Family, keys: dict[str, tuple[np.ndarray, object, int]], sums: dict[str, np.ndarray]) -> pa.Table:
    """Sum ``sums`` per distinct combination of ``keys`` (each key: (codes, decode, cardinality)).

    The keys are packed into one int64 per row (mixed radix), grouped with one ``np.unique``
    (a quicksort) and summed with a ``np.bincount`` per column: ~4x faster than Arrow's
    group-by over several string keys. ``decode`` is a dictionary (pa.Array) or a callable from
    codes to an Arrow array.
    """
    combined = np.zeros(len(next(iter(sums.values()))), dtype=np.int64)
    radix = 1
    for codes, _decode, card in keys.values():
        radix *= max(card, 1)
        if radix >= 2**62:  # cannot happen for sane batches; the message says what was too big
            raise OverflowError(f"{family.table}: too many distinct group keys in one batch to pack")
        combined = combined * max(card, 1) + codes
    rest, inverse = np.unique(combined, return_inverse=True)
    cols = {}
    for name, (_codes_, decode, card) in reversed(keys.items()):  # unpack the radix, last key first
        rest, picked = np.divmod(rest, max(card, 1))
        cols[name] = decode(picked) if callable(decode) else decode.take(pa.array(picked)).cast(pa.string())
    n = len(rest)
    for name, values in sums.items():
        cols[name] = pa.array(np.bincount(inverse, weights=values, minlength=n), pa.float64())
    return pa.table(cols).select(list(family.keys + family.sums))


def _time_codes(ns: np.ndarray, unit_ns: int):
    """Codes for floored times: (offset in units from the batch's earliest, decoder, span)."""
    units = ns // unit_ns
    lo = int(units.min())
    return (units - lo, lambda c: pa.array((c + lo) * unit_ns, schemas.TS), int(units.max()) - lo + 1)


_COLUMNS = ["kind", "start_time", "tenant_id", "service_name", "name", "status_code", "duration_ms", "sample_weight"]


def sre_partials(spans: pa.Table) -> dict[str, pa.Table]:
    """The four SRE partial families (module docstring) of one batch of spans; ``{}`` without requests."""
    spans = spans.select(_COLUMNS)  # filtering only what is needed is 4x cheaper than the whole row
    req = spans.filter(request_mask(spans))
    if req.num_rows == 0:
        return {}
    start_ns = req.column("start_time").cast(pa.int64()).to_numpy()
    weight = pc.fill_null(req.column("sample_weight"), 1.0).to_numpy()
    is_error = pc.fill_null(pc.equal(req.column("status_code"), "error"), False).to_numpy(zero_copy_only=False)
    duration = pc.fill_null(req.column("duration_ms"), 0.0).to_numpy()
    names = {
        "tenant_id": _codes(req.column("tenant_id")),
        "service_name": _codes(req.column("service_name")),
        "operation": _codes(pc.fill_null(req.column("name"), _NO_OPERATION)),
    }
    red_sums = {
        "requests": weight,
        "errors": np.where(is_error, weight, 0.0),
        "duration_sum_ms": duration * weight,
        **{c: np.where(duration > t, weight, 0.0) for c, t in zip(LADDER_COLUMNS, schemas.LATENCY_LADDER_MS)},
    }
    red = _group(RED_MINUTELY, {"minute": _time_codes(start_ns, _MINUTE_NS), **names}, red_sums)
    bucket = sketch.keys(duration).astype(np.int64)
    # ZERO_KEY (-2**31) would blow the radix up: give it the code just below the smallest real key
    real = bucket != sketch.ZERO_KEY
    lo = int(bucket[real].min()) - 1 if real.any() else 0
    bucket_codes = np.where(real, bucket - lo, 0)
    key_decode = lambda c: pa.array(np.where(c == 0, sketch.ZERO_KEY, c + lo), pa.int32())  # noqa: E731
    hour = _time_codes(start_ns, _HOUR_NS)
    key = (bucket_codes, key_decode, int(bucket_codes.max()) + 1)
    lat_op = _group(LATENCY_OP_HOURLY, {"hour": hour, **names, "key": key}, {"count": weight})
    service = {"hour": hour, "tenant_id": names["tenant_id"], "service_name": names["service_name"]}
    sre_hour = _group(SRE_HOURLY, service, {c: red_sums[c] for c in SRE_HOURLY.sums})
    lat_hour = _group(LATENCY_HOURLY, {**service, "key": key}, {"count": weight})
    return {RED_MINUTELY.table: red, LATENCY_OP_HOURLY.table: lat_op, SRE_HOURLY.table: sre_hour,
            LATENCY_HOURLY.table: lat_hour}


class _SrePartialsFn(beam.DoFn):
    def process(self, chunk):
        table, part, data = chunk
        if table != "spans":
            return
        for name, partial in sre_partials(data).items():
            yield as_part(name, part, partial)


#: how each SRE family's partials merge (all are sums per key)
MERGERS = {f.table: summing(f) for f in FAMILIES}


class SrePartials(beam.PTransform):
    """Chunks in → ``(family table, part, partial)`` chunks for the four SRE families, one per
    batch, ready to write to the lake (the views sum them)."""

    def expand(self, chunks):
        return chunks | "PartialPerBatch" >> beam.ParDo(_SrePartialsFn())


#: the name pipelines/batch.py wires today; same outputs plus the two new families
SreHourlyPartials = SrePartials
