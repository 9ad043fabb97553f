"""Coverage partials: how much telemetry per (day, signal) arrived with tenant context."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.io import Chunk
from pipelines.transforms.partials import Family, as_part, summing
from tenantry import schemas

COVERAGE = Family("coverage_partials", ("day", "signal"), ("total", "unattributed"))
_TIME_COLUMN = {"spans": "start_time", "logs": "time", "metric_points": "time", "usage_events": "time"}


def coverage_partial(table: str, data: pa.Table) -> pa.Table | None:
    if table not in _TIME_COLUMN or data.num_rows == 0:
        return None
    day = pc.fill_null(pc.cast(data.column(_TIME_COLUMN[table]), pa.date32()), pa.scalar(0, pa.date32()))
    unattributed = pc.cast(pc.equal(data.column("tenant_id"), schemas.UNATTRIBUTED), pa.int64())
    per_day = (
        pa.table({"day": day, "unattributed": pc.fill_null(unattributed, 0)})
        .group_by("day", use_threads=False)
        .aggregate([([], "count_all"), ("unattributed", "sum")])
    )
    n = per_day.num_rows
    return pa.table(
        {
            "day": per_day.column("day"),
            "signal": pa.repeat(pa.scalar(table), n),
            "total": per_day.column("count_all"),
            "unattributed": per_day.column("unattributed_sum"),
        }
    )


MERGERS = {COVERAGE.table: summing(COVERAGE)}


class _CoverageFn:
    def __call__(self, chunk):
        partial = coverage_partial(chunk[0], chunk[2])
        if partial is not None:
            yield as_part(COVERAGE.table, chunk[1], partial)


class CoveragePartials(beam.PTransform):
    """Chunks in → ``(coverage_partials, part, partial)`` chunks, one per batch."""

    def expand(self, chunks):
        return chunks | "PartialPerBatch" >> beam.FlatMap(_CoverageFn()).with_output_types(Chunk)
