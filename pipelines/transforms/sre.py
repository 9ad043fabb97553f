"""SRE partials: requests, errors and latency sketches per (hour, tenant, service).

A request is a server or consumer span (an entry point). Counts are re-weighted by
``sample_weight``, so spans that were sampled upstream still count for what they stand for.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.transforms.partials import Family, MergePartials
from tenantry import sketch

SRE_HOURLY = Family("sre_hourly_partials", ("hour", "tenant_id", "service_name"), ("requests", "errors", "duration_sum_ms"))
LATENCY_HOURLY = Family("latency_sketch_hourly", ("hour", "tenant_id", "service_name", "key"), ("count",))

REQUEST_KINDS = pa.array(["server", "consumer"])


def sre_partials(spans: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(RED partial, latency sketch partial) for one batch of spans."""
    req = spans.filter(pc.is_in(spans.column("kind"), value_set=REQUEST_KINDS))
    if req.num_rows == 0:
        return None, None
    hour = pc.floor_temporal(req.column("start_time"), unit="hour")
    weight = pc.fill_null(req.column("sample_weight"), 1.0)
    is_error = pc.fill_null(pc.equal(req.column("status_code"), "error"), False)
    duration = pc.fill_null(req.column("duration_ms"), 0.0)
    rows = pa.table(
        {
            "hour": hour,
            "tenant_id": req.column("tenant_id"),
            "service_name": req.column("service_name"),
            "requests": weight,
            "errors": pc.if_else(is_error, weight, 0.0),
            "duration_sum_ms": pc.multiply(duration, weight),
            "key": pa.array(sketch.keys(duration), pa.int32()),
            "count": weight,
        }
    )
    red = rows.group_by(list(SRE_HOURLY.keys), use_threads=False).aggregate(
        [(c, "sum") for c in SRE_HOURLY.sums]
    ).rename_columns(list(SRE_HOURLY.keys) + list(SRE_HOURLY.sums))
    lat = rows.group_by(list(LATENCY_HOURLY.keys), use_threads=False).aggregate(
        [("count", "sum")]
    ).rename_columns(list(LATENCY_HOURLY.keys) + ["count"])
    return red, lat


class _SrePartialsFn(beam.DoFn):
    def process(self, chunk):
        table, _part, data = chunk
        if table != "spans":
            return
        red, lat = sre_partials(data)
        if red is not None:
            yield beam.pvalue.TaggedOutput(SRE_HOURLY.table, red)
            yield beam.pvalue.TaggedOutput(LATENCY_HOURLY.table, lat)


class SreHourlyPartials(beam.PTransform):
    """Chunks in → {family table name: one merged partial table} (globally combined per run)."""

    def expand(self, chunks):
        parts = chunks | "PartialPerBatch" >> beam.ParDo(_SrePartialsFn()).with_outputs(
            SRE_HOURLY.table, LATENCY_HOURLY.table
        )
        return {
            SRE_HOURLY.table: parts[SRE_HOURLY.table]
            | "MergeRed" >> beam.CombineGlobally(MergePartials(SRE_HOURLY)).without_defaults(),
            LATENCY_HOURLY.table: parts[LATENCY_HOURLY.table]
            | "MergeLatency" >> beam.CombineGlobally(MergePartials(LATENCY_HOURLY)).without_defaults(),
        }
