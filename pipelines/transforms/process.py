"""Hosting the collector_processors chain in Beam: one chunk in, kept rows and quarantine out.

The chain is split in two around the point where figures are taken: ``ApplyProcessors`` runs every
processor except samplers (attribution, validation, redaction, limits), then aggregates and usage
are computed from 100% of the data, then ``SampleForStorage`` runs the samplers on what is stored.
So sampling can never change a billed or SRE figure, only what raw spans are kept.
"""

from __future__ import annotations

from collections import Counter

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from collector_processors.base import Chain, Processor, split_samplers, stats_table
from pipelines import runtime
from pipelines.io import PROCESSED_BY, Chunk

QUARANTINE = "quarantine"
STATS = "processor_stats"


def split_chain(chain: Processor) -> tuple[Processor, Processor]:
    """(everything but samplers, samplers) of a chain as two chains, order kept."""
    main, samplers = split_samplers(chain)
    return Chain(main, name="main"), Chain(samplers, name="storage")


def _counter(kind: str, table: str):
    return Metrics.counter("tenantry", f"{kind}.{table}")


class _ProcessFn(beam.DoFn):
    """Counters (namespace ``tenantry``): ``in.<table>``, ``quarantined.<table>``,
    ``sampled_out.<table>``; the lake writer counts ``kept.<table>``. The run report checks
    ``in = kept + quarantined + sampled_out`` per table from them."""

    def __init__(self, chain: Processor, step: str, count_input: bool, digest: str | None = None):
        self.chain = chain
        self.step = step
        self.count_input = count_input
        self.digest = digest.encode() if digest else None

    def setup(self):
        runtime.tune_allocator()  # every worker process that runs the chain, on any runner

    def process(self, chunk):
        table, part, data = chunk
        if table == STATS:  # counters a receiver computed while processing
            yield beam.pvalue.TaggedOutput(STATS, data)
            return
        meta = data.schema.metadata or {}
        if self.digest is not None and meta.get(PROCESSED_BY) == self.digest and table != QUARANTINE:
            # the receiver ran this very chain (samplers aside) before landing: don't run it twice
            if self.count_input:
                _counter("in", table).inc(data.num_rows)
            yield (table, part, data)
            return
        if table == QUARANTINE:  # rejected while decoding: straight to the lake
            if self.count_input:
                for t, n in _per_table(data).items():
                    _counter("in", t).inc(n)
                    _counter("quarantined", t).inc(n)
            scrub = getattr(self.chain, "scrub_quarantine", None)
            yield beam.pvalue.TaggedOutput(QUARANTINE, (QUARANTINE, part, scrub(data) if scrub else data))
            return
        if self.count_input:
            _counter("in", table).inc(data.num_rows)
        res = self.chain.process(table, data)
        if res.quarantined.num_rows:
            _counter("quarantined", table).inc(res.quarantined.num_rows)
            yield beam.pvalue.TaggedOutput(QUARANTINE, (QUARANTINE, f"{part}-{self.step}-q", res.quarantined))
        sampled_out = getattr(res, "sampled_out", 0)
        if sampled_out:
            _counter("sampled_out", table).inc(sampled_out)
        if res.stats:
            yield beam.pvalue.TaggedOutput(STATS, stats_table(Counter(res.stats), table, part))
        if res.kept.num_rows:
            yield (table, part, res.kept)


def _per_table(quarantined) -> dict:
    counts = quarantined.group_by("table", use_threads=False).aggregate([([], "count_all")])
    return dict(zip(counts.column("table").to_pylist(), counts.column("count_all").to_pylist()))


class ApplyProcessors(beam.PTransform):
    """Chunks in → {"kept": chunks, "quarantine": chunks, "processor_stats": tables}."""

    def __init__(self, chain: Processor, step: str = "process", count_input: bool = True,
                 digest: str | None = None):
        super().__init__()
        self.chain = chain
        self.step = step
        self.count_input = count_input
        self.digest = digest

    def expand(self, chunks):
        fn = _ProcessFn(self.chain, self.step, self.count_input, self.digest)
        typed = beam.ParDo(fn).with_output_types(Chunk, **{QUARANTINE: Chunk, STATS: pa.Table})
        out = chunks | "Process" >> typed.with_outputs(QUARANTINE, STATS, main="kept")
        return {"kept": out.kept, QUARANTINE: out[QUARANTINE], STATS: out[STATS]}
