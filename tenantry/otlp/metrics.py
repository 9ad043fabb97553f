"""ExportMetricsServiceRequest (lite class) -> the ``metric_points`` table, one row per data point.

Gauge and sum points carry ``value``; histograms, exponential histograms and summaries carry
``count`` / ``sum`` (and ``min`` / ``max`` where the point has them); explicit-bucket histograms
also keep ``bucket_counts`` and ``explicit_bounds``. A histogram whose bucket counts do not match
its bounds (``len(bucket_counts) != len(explicit_bounds) + 1``, both non-empty) is quarantined as
``malformed_record``: downstream quantile sketches would otherwise misplace every count.
"""

from __future__ import annotations

import pyarrow as pa

from tenantry import schemas
from tenantry.otlp import columns as C
from tenantry.otlp.attrs import decode_attribute_lists

_AGGREGATED = ("sum", "histogram", "exponential_histogram")
_INT64_MAX = 2**63 - 1


class _Columns:
    """Per-point value columns, appended once per point."""

    def __init__(self):
        self.value, self.count, self.sum, self.min, self.max = [], [], [], [], []
        self.buckets, self.bounds = [], []

    def add(self, kind: str, p, i: int, bad: dict) -> None:
        if kind in ("gauge", "sum"):
            which = p.WhichOneof("value")
            self.value.append(p.as_double if which == "as_double" else float(p.as_int) if which == "as_int" else None)
            self.count.append(None), self.sum.append(None), self.min.append(None), self.max.append(None)
            self.buckets.append(None), self.bounds.append(None)
            return
        self.value.append(None)
        count = int(p.count)
        if count > _INT64_MAX:
            bad.setdefault(i, f"data point count {count} does not fit int64")
            count = None
        self.count.append(count)
        if kind == "summary":
            self.sum.append(p.sum)
            self.min.append(None), self.max.append(None), self.buckets.append(None), self.bounds.append(None)
            return
        self.sum.append(p.sum if p.HasField("sum") else None)
        self.min.append(p.min if p.HasField("min") else None)
        self.max.append(p.max if p.HasField("max") else None)
        if kind == "exponential_histogram":
            self.buckets.append(None), self.bounds.append(None)
            return
        buckets, bounds = list(p.bucket_counts), list(p.explicit_bounds)
        if buckets and max(buckets) > _INT64_MAX:
            bad.setdefault(i, "histogram bucket count does not fit int64")
            buckets = [min(b, _INT64_MAX) for b in buckets]
        if buckets and bounds and len(buckets) != len(bounds) + 1:
            bad.setdefault(i, f"histogram point has {len(buckets)} bucket_counts for {len(bounds)} explicit_bounds; "
                              f"expected {len(bounds) + 1} (one more count than bounds)")
        self.buckets.append(buckets), self.bounds.append(bounds)


def decode_metrics(req, ingest_batch: str) -> tuple[pa.Table, pa.Table]:
    """(metric_points, quarantine) for one request."""
    res_lists, scope_names = [], []
    m_name, m_desc, m_unit, m_type, m_temporality, m_monotonic = [], [], [], [], [], []
    p_res, p_scope, p_metric, points = [], [], [], []
    vals = _Columns()
    bad: dict[int, str] = {}
    for ri, rm in enumerate(req.resource_metrics):
        res_lists.append(rm.resource.attributes)
        for sm in rm.scope_metrics:
            si = len(scope_names)
            scope_names.append(sm.scope.name or None)
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is None:
                    continue  # a metric without data has no points: nothing to keep or lose
                data = getattr(m, kind)
                mi = len(m_name)
                m_name.append(m.name), m_desc.append(m.description or None), m_unit.append(m.unit or None)
                m_type.append(kind)
                m_temporality.append(int(data.aggregation_temporality) if kind in _AGGREGATED else None)
                m_monotonic.append(bool(data.is_monotonic) if kind == "sum" else None)
                for p in data.data_points:
                    vals.add(kind, p, len(points), bad)
                    points.append(p)
                    p_res.append(ri), p_scope.append(si), p_metric.append(mi)
    n = len(points)
    if n == 0:
        return C.empty("metric_points"), C.empty("quarantine")

    res = C.Resources(res_lists)
    res_idx = pa.array(p_res, pa.int64())
    metric_idx = pa.array(p_metric, pa.int64())
    attrs = decode_attribute_lists([p.attributes for p in points])
    bad.update({k: v for k, v in attrs.bad.items() if k not in bad})
    raw_time = [p.time_unix_nano for p in points]
    raw_start = [p.start_time_unix_nano for p in points]
    time, time_big = C.timestamps(raw_time)
    start, start_big = C.timestamps(raw_start)
    C.note_bad(bad, time_big, "time_unix_nano is beyond the int64 nanosecond range (year 2262)")
    C.note_bad(bad, start_big, "start_time_unix_nano is beyond the int64 nanosecond range (year 2262)")
    temporality = [t if t is not None else 0 for t in m_temporality]
    temporality = C.enum_names(temporality, C.TEMPORALITIES)
    temporality = pa.array(
        [None if t is None else s for t, s in zip(m_temporality, temporality.to_pylist())], pa.string())

    who = C.attribution(attrs, res, res_idx)
    table = pa.Table.from_arrays(
        [
            who["tenant_id"],
            who["tenant_tier"],
            res.service_name.take(res_idx),
            pa.array(m_name, pa.string()).take(metric_idx),
            pa.array(m_desc, pa.string()).take(metric_idx),
            pa.array(m_unit, pa.string()).take(metric_idx),
            pa.array(m_type, pa.string()).take(metric_idx),
            time,
            start,
            pa.array(vals.value, pa.float64()),
            pa.array(vals.count, pa.int64()),
            pa.array(vals.sum, pa.float64()),
            pa.array(vals.min, pa.float64()),
            pa.array(vals.max, pa.float64()),
            pa.array(vals.buckets, pa.list_(pa.int64())),
            pa.array(vals.bounds, pa.list_(pa.float64())),
            pa.array(m_monotonic, pa.bool_()).take(metric_idx),
            temporality.take(metric_idx),
            attrs.attributes,
            res.attrs.attributes.take(res_idx),
            pa.array(scope_names, pa.string()).take(pa.array(p_scope, pa.int64())),
            C.constant(ingest_batch, n),
        ],
        schema=schemas.METRIC_POINTS,
    )
    return C.split_bad("metric_points", table, bad)
