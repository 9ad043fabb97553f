"""Coverage partials: how much telemetry per (day, signal) arrived with tenant context."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.io import Chunk
from pipelines.transforms.partials import Family, as_part, distinct, summing
from tenantry import schemas

COVERAGE = Family("coverage_partials", ("day", "signal"), ("total", "unattributed"))
_DAY_NS = 86_400 * 10**9
_TIME_COLUMN = {"spans": "start_time", "logs": "time", "metric_points": "time", "usage_events": "time"}


def coverage_partial(table: str, data: pa.Table) -> pa.Table | None:
    """(day, signal, total, unattributed) of one batch, days ascending (rows without a time count
    on 1970-01-01). Counted with numpy over day numbers: a batch spans few days."""
    if table not in _TIME_COLUMN or data.num_rows == 0:
        return None
    # UTC days by integer division (a cast to date32 goes through the time zone: 7x slower)
    time = data.column(_TIME_COLUMN[table])
    time = time if time.type == schemas.TS else time.cast(schemas.TS)
    day = pc.fill_null(time, pa.scalar(0, schemas.TS)).cast(pa.int64()).to_numpy() // _DAY_NS
    unattributed = pc.fill_null(pc.equal(data.column("tenant_id"), schemas.UNATTRIBUTED), False)
    unattributed = np.asarray(unattributed.to_numpy(zero_copy_only=False), dtype=bool)
    lo = day.min()
    days, inverse = distinct(day - lo, int(day.max() - lo) + 1)
    total = np.bincount(inverse, minlength=len(days))
    missing = np.bincount(inverse[unattributed], minlength=len(days))
    return pa.table(
        {
            "day": pa.array((days + lo).astype(np.int32), pa.int32()).cast(pa.date32()),
            "signal": pa.repeat(pa.scalar(table), len(days)),
            "total": pa.array(total, pa.int64()),
            "unattributed": pa.array(missing, pa.int64()),
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
