"""SRE partials: RED counts per minute and latency sketches per hour, per tenant, service and operation.

A request is a server or consumer span (an entry point); its operation is the span name (OpenTelemetry
names HTTP server spans ``"{method} {http.route}"``, so the name already has the route's low
cardinality). Counts are re-weighted by ``sample_weight``, so spans sampled upstream still count
for what they stand for.

One pass over a batch of spans yields three mergeable partial families:

- ``red_minutely_partials`` (minute, tenant, service, operation): requests, errors, duration sum and,
  per step of :data:`tenantry.schemas.LATENCY_LADDER_MS`, the requests slower than it (what latency
  SLOs count at minute grain, for 5-minute burn-rate windows). No sketch at minute grain: that would
  multiply the rows by the number of buckets.
- ``latency_sketch_op_hourly`` (hour, tenant, service, operation, key): DDSketch bucket counts; days
  are sums of hours, so a day's quantile is exactly the quantile of a day-long sketch.
- ``sre_hourly_partials`` (hour, tenant, service): the service-level RED counts that existing views
  and billing reconciliation read.

The service-level sketch (``latency_sketch_hourly``) is no longer written: the view
``stg_latency_sketch_hourly`` sums the operation-level buckets over operations, which gives the
same counts (the operation refines the service's group). It was ~0.57 rows per span on sparse
data (most (tenant, service, bucket) groups of an hour hold one span), about 8% of a batch run's
CPU to compute and encode. Rows that earlier versions wrote to that table still count, and
their batches' operation-level rows are then not counted twice (see the view).

Grouping is numpy over integer key codes (:class:`~pipelines.transforms.partials.Groups`), one
key at a time: (hour, tenant, service) is grouped once per batch (:func:`span_keys`), the
operation families refine it, and the security partials share it
(:mod:`pipelines.transforms.span_partials` runs both on one batch).
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.io import Chunk
from pipelines.transforms.partials import (
    Family,
    Groups,
    Key,
    as_part,
    string_key,
    summing,
    time_key,
)
from tenantry import schemas, sketch

LADDER_COLUMNS = tuple(f"slow_over_{t}ms" for t in schemas.LATENCY_LADDER_MS)

SRE_HOURLY = Family("sre_hourly_partials", ("hour", "tenant_id", "service_name"), ("requests", "errors", "duration_sum_ms"))
RED_MINUTELY = Family(
    "red_minutely_partials",
    ("minute", "tenant_id", "service_name", "operation"),
    ("requests", "errors", "duration_sum_ms", *LADDER_COLUMNS),
)
LATENCY_OP_HOURLY = Family(
    "latency_sketch_op_hourly", ("hour", "tenant_id", "service_name", "operation", "key"), ("count",)
)
FAMILIES = (RED_MINUTELY, LATENCY_OP_HOURLY, SRE_HOURLY)

_MINUTE_NS = 60 * 10**9
_HOUR_NS = 3600 * 10**9
_NO_OPERATION = "(unnamed)"


def _bools(mask) -> np.ndarray:
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


@dataclasses.dataclass
class SpanKeys:
    """What the SRE and security partials of one batch of spans group and weigh by, computed
    once for both (numpy, one entry per span; see :func:`span_keys`)."""

    has_start: np.ndarray  # start_time is set: the span belongs to an hour
    start_ns: np.ndarray  # epoch ns, 0 where unset
    is_request: np.ndarray  # server or consumer span with a start time
    is_error: np.ndarray  # status_code == "error"
    weight: np.ndarray  # sample_weight, 1 where unset
    hourly: Groups  # spans with a start time, by (hour, tenant_id, service_name)
    timed: np.ndarray  # the row of each span of ``hourly`` (the spans with a start time)


def span_keys(spans: pa.Table) -> SpanKeys:
    start = spans.column("start_time")
    has_start = _bools(pc.is_valid(start))
    start_ns = pc.fill_null(start, pa.scalar(0, schemas.TS)).cast(pa.int64()).to_numpy()
    kind = spans.column("kind")
    is_request = _bools(pc.fill_null(pc.or_(pc.equal(kind, "server"), pc.equal(kind, "consumer")), False)) & has_start
    is_error = _bools(pc.fill_null(pc.equal(spans.column("status_code"), "error"), False))
    weight = pc.fill_null(spans.column("sample_weight"), 1.0).to_numpy()
    timed = np.flatnonzero(has_start)
    hourly = (Groups.rows(len(timed)).by("hour", time_key(start_ns[timed], _HOUR_NS))
              .by("tenant_id", string_key(spans.column("tenant_id")).take(timed))
              .by("service_name", string_key(spans.column("service_name")).take(timed)))
    return SpanKeys(has_start, start_ns, is_request, is_error, weight, hourly, timed)


_COLUMNS = ["kind", "start_time", "tenant_id", "service_name", "name", "status_code", "duration_ms", "sample_weight"]


def sre_partials(spans: pa.Table, keys: SpanKeys | None = None) -> dict[str, pa.Table]:
    """The three SRE partial families (module docstring) of one batch of spans; ``{}`` without
    requests. ``keys``: the batch's :func:`span_keys`, when the caller has them already."""
    if spans.num_rows == 0:
        return {}
    keys = keys or span_keys(spans.select(_COLUMNS))
    at = np.flatnonzero(keys.is_request[keys.timed])  # requests, as positions among the timed spans
    if len(at) == 0:
        return {}
    rows = keys.timed[at]
    hourly = keys.hourly.take(at)
    weight = keys.weight[rows]
    duration = pc.fill_null(spans.column("duration_ms"), 0.0).to_numpy()[rows]
    is_error = keys.is_error[rows]
    # (sums, rows counted): errors and slow requests are a few rows; summing only those adds the
    # same values in the same order as summing zeros for the others, and is several times cheaper
    red_sums = {
        "requests": (weight, None),
        "errors": (weight, is_error),
        "duration_sum_ms": (duration * weight, None),
        **{c: (weight, duration > t) for c, t in zip(LADDER_COLUMNS, schemas.LATENCY_LADDER_MS)},
    }
    name = string_key(pc.fill_null(spans.column("name"), _NO_OPERATION)).take(rows)
    operation = hourly.by("operation", name)
    red = operation.by("minute", time_key(keys.start_ns[rows], _MINUTE_NS))
    bucket = _bucket_key(duration)
    lat_op = operation.by("key", bucket)
    # every hourly group with a request (some hourly groups hold only non-request spans)
    has_request = np.bincount(hourly.inverse, minlength=hourly.n) > 0
    return {
        RED_MINUTELY.table: red.table(RED_MINUTELY, {c: red.sums(*v) for c, v in red_sums.items()}),
        LATENCY_OP_HOURLY.table: lat_op.table(LATENCY_OP_HOURLY, {"count": lat_op.sums(weight)}),
        SRE_HOURLY.table: hourly.table(SRE_HOURLY, {c: hourly.sums(*red_sums[c]) for c in SRE_HOURLY.sums},
                                       keep=has_request),
    }


def _bucket_key(duration: np.ndarray) -> Key:
    """Sketch bucket keys as a :class:`Key`; ZERO_KEY (-2**31) gets the code just below the
    smallest real key, so the codes stay a small range."""
    bucket = sketch.keys(duration).astype(np.int64)
    real = bucket != sketch.ZERO_KEY
    lo = int(bucket[real].min()) - 1 if real.any() else 0
    codes = np.where(real, bucket - lo, 0)
    return Key(codes, lambda c: pa.array(np.where(c == 0, sketch.ZERO_KEY, c + lo), pa.int32()), int(codes.max()) + 1)


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
    """Chunks in → ``(family table, part, partial)`` chunks for the three SRE families, one per
    batch, ready to write to the lake (the views sum them)."""

    def expand(self, chunks):
        return chunks | "PartialPerBatch" >> beam.ParDo(_SrePartialsFn()).with_output_types(Chunk)
