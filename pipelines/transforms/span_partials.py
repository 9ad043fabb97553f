"""SRE and security partials of each batch of spans in one step.

Both families count per (hour, tenant, service) and weigh by ``sample_weight``; computing them
together groups each batch once (:func:`~pipelines.transforms.sre.span_keys`) instead of twice.
The outputs are exactly those of :class:`~pipelines.transforms.sre.SrePartials` followed by
:class:`~pipelines.transforms.security.SecurityPartials`.
"""

from __future__ import annotations

import apache_beam as beam

from pipelines.io import Chunk
from pipelines.transforms.partials import as_part
from pipelines.transforms.security import EVENTS, SECURITY_HOURLY, security_partials
from pipelines.transforms.sre import _COLUMNS, span_keys, sre_partials
from tenantry.security import SecuritySettings


class _SpanPartialsFn(beam.DoFn):
    def __init__(self, settings: SecuritySettings):
        self.settings = settings

    def process(self, chunk):
        table, part, data = chunk
        if table != "spans" or data.num_rows == 0:
            return
        keys = span_keys(data.select(_COLUMNS))
        for name, partial in sre_partials(data, keys).items():
            yield as_part(name, part, partial)
        counts, events = security_partials(data, self.settings, keys)
        if counts is not None:
            yield as_part(SECURITY_HOURLY.table, part, counts)
        if events is not None:
            yield as_part(EVENTS, part, events)


class SpanPartials(beam.PTransform):
    """Chunks in → ``(family table, part, partial)`` chunks of the three SRE families,
    ``security_hourly_partials`` and ``security_events``, one each per batch of spans."""

    def __init__(self, settings: SecuritySettings | None = None):
        super().__init__()
        self.settings = settings or SecuritySettings()

    def expand(self, chunks):
        return chunks | "PartialsPerBatch" >> beam.ParDo(_SpanPartialsFn(self.settings)).with_output_types(Chunk)
