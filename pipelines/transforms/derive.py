"""Everything a run derives from decoded chunks, as one composite shared by batch and streaming.

::

    chunks ─ ApplyProcessors ─┬─ DeriveUsage ─────────── derived usage
                              ├─ SpanPartials ────────── SRE + security partials
                              ├─ Coverage ───────────── coverage partials
                              └─ SampleForStorage ────── rows to store (+ its quarantine)
                 quarantine ──┘                stats ─── processor counters (merged by the host)

The batch pipeline (:func:`pipelines.batch.build_pipeline`) and the unbounded stream
(:func:`pipelines.unbounded.build_unbounded_pipeline`) both apply :class:`Derive` and only differ in
how they read, which run id they write under, and when they commit.
"""

from __future__ import annotations

import apache_beam as beam

from collector_processors.base import Processor
from pipelines.transforms.coverage import CoveragePartials
from pipelines.transforms.process import QUARANTINE, STATS, ApplyProcessors, split_chain
from pipelines.transforms.span_partials import SpanPartials
from pipelines.transforms.usage import DeriveUsage

#: the outputs written to the lake as they are, each ``(table, part, rows)`` chunks
CHUNK_OUTPUTS = ("Rows", "Quarantine", "SampleQuarantine", "DerivedUsage", "SpanPartials", "Coverage")


class Derive(beam.PTransform):
    """Decoded ``(table, part, rows)`` chunks → ``{name: PCollection}`` for every name in
    :data:`CHUNK_OUTPUTS` (chunks ready to write), plus ``"Stats"``: the processors' counter tables,
    unmerged (the host merges them per run)."""

    def __init__(self, chain: Processor, security_settings=None, meters=()):
        super().__init__()
        self.chain = chain
        self.security_settings = security_settings
        self.meters = meters

    def expand(self, chunks):
        from tenantry.landing import chain_digest

        main_chain, storage_chain = split_chain(self.chain)
        processed = chunks | "ApplyProcessors" >> ApplyProcessors(main_chain, "process",
                                                                   digest=chain_digest(self.chain))
        kept = processed["kept"]
        # usage is derived before sampling, so sampling never changes a billed figure
        stored = kept | "SampleForStorage" >> ApplyProcessors(storage_chain, "sample", count_input=False)
        return {
            "Rows": stored["kept"],
            "Quarantine": processed[QUARANTINE],
            "SampleQuarantine": stored[QUARANTINE],
            "DerivedUsage": kept | "DeriveUsage" >> DeriveUsage(self.meters),
            # per-batch partials, written in the stage that computes them: the views sum them,
            # memory stays flat, and nothing big crosses a stage boundary
            "SpanPartials": kept | "SpanPartials" >> SpanPartials(self.security_settings),
            "Coverage": kept | "Coverage" >> CoveragePartials(),
            "Stats": (processed[STATS], stored[STATS]) | "FlattenStats" >> beam.Flatten(),
        }
