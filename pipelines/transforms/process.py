"""Hosting the collector_processors chain in Beam: one chunk in, kept rows and quarantine out.

The chain is split in two around the point where figures are taken: ``ApplyProcessors`` runs every
processor except samplers (attribution, validation, redaction, limits), then aggregates and usage
are computed from 100% of the data, then ``SampleForStorage`` runs the samplers on what is stored.
So sampling can never change a billed or SRE figure, only what raw spans are kept.
"""

from __future__ import annotations

from collections import Counter

import apache_beam as beam
from apache_beam.metrics import Metrics

from collector_processors.base import Chain, Processor, stats_table

QUARANTINE = "quarantine"
STATS = "processor_stats"


def split_chain(chain: Processor) -> tuple[Processor, Processor]:
    """(everything but samplers, samplers) of a chain, order kept."""
    procs = list(chain) if isinstance(chain, Chain) else [chain]
    is_sampler = [getattr(p, "type_name", "") == "sample" for p in procs]
    return (
        Chain([p for p, s in zip(procs, is_sampler) if not s], name="main"),
        Chain([p for p, s in zip(procs, is_sampler) if s], name="storage"),
    )


class _ProcessFn(beam.DoFn):
    def __init__(self, chain: Processor, step: str):
        self.chain = chain
        self.step = step

    def setup(self):
        self.rows_in = Metrics.counter("tenantry", f"{self.step}.rows_in")
        self.rows_quarantined = Metrics.counter("tenantry", f"{self.step}.rows_quarantined")

    def process(self, chunk):
        table, part, data = chunk
        if table == QUARANTINE:  # rejected upstream (decoding): straight to the lake
            yield beam.pvalue.TaggedOutput(QUARANTINE, (QUARANTINE, part, data))
            return
        self.rows_in.inc(data.num_rows)
        res = self.chain.process(table, data)
        if res.quarantined.num_rows:
            self.rows_quarantined.inc(res.quarantined.num_rows)
            yield beam.pvalue.TaggedOutput(QUARANTINE, (QUARANTINE, f"{part}-{self.step}-q", res.quarantined))
        if res.stats:
            yield beam.pvalue.TaggedOutput(STATS, stats_table(Counter(res.stats), table, part))
        if res.kept.num_rows:
            yield (table, part, res.kept)


class ApplyProcessors(beam.PTransform):
    """Chunks in → {"kept": chunks, "quarantine": chunks, "processor_stats": tables}."""

    def __init__(self, chain: Processor, step: str = "process"):
        super().__init__()
        self.chain = chain
        self.step = step

    def expand(self, chunks):
        out = chunks | "Process" >> beam.ParDo(_ProcessFn(self.chain, self.step)).with_outputs(
            QUARANTINE, STATS, main="kept"
        )
        return {"kept": out.kept, QUARANTINE: out[QUARANTINE], STATS: out[STATS]}
