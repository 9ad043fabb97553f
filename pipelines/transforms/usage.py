"""Usage derived from telemetry by the configured meters (tenantry.meters), before any sampling.

Billing must see 100% of the data, so this runs on what the main processors kept and before the
storage sampler. Derived rows are usage_events with ``source = "derived"`` and deterministic
event ids (trace id, span id, meter), so re-deriving the same telemetry is idempotent; values a
meter cannot bill (negative, non-finite, too large) become quarantine rows, never silence.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.io import Chunk
from tenantry import meters as meters_lib

DERIVED_FROM = ("spans", "logs", "metric_points")


class _DeriveFn:
    def __init__(self, meters):
        self.meters = meters_lib.compile_meters(meters)

    def __call__(self, chunk):
        table, part, data = chunk
        if table not in DERIVED_FROM or not self.meters:
            return
        out = meters_lib.derive(table, data, self.meters)
        # derived rows enter the usage_events accounting here: in = kept + quarantined
        Metrics.counter("tenantry", "in.usage_events").inc(out.usage.num_rows + out.quarantined.num_rows)
        if out.quarantined.num_rows:
            Metrics.counter("tenantry", "quarantined.usage_events").inc(out.quarantined.num_rows)
        if out.usage.num_rows:
            yield "usage_events", f"{part}-derived", out.usage
        if out.quarantined.num_rows:
            yield "quarantine", f"{part}-derived-q", out.quarantined


class DeriveUsage(beam.PTransform):
    """Chunks in → (table, part, rows) chunks of derived usage_events and their quarantine."""

    def __init__(self, meters):
        super().__init__()
        self.meters = list(meters)

    def expand(self, chunks):
        return chunks | "Derive" >> beam.FlatMap(_DeriveFn(self.meters)).with_output_types(Chunk)
