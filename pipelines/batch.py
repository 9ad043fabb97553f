"""The batch pipeline: inputs → normalized tables → processors → lake + partial aggregates.

``run_batch`` is what ``tenantry run batch`` calls::

    discover inputs → skip those already committed → Beam pipeline → commit manifest → views

The pipeline (every step a named composite, I/O only at the edges)::

    ReadTasks → Decode → ApplyProcessors ─┬─ SreHourly ──────────┐
                                          ├─ Coverage ───────────┤
                                          └─ SampleForStorage ───┴─ WriteLake
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import time
from pathlib import Path

import apache_beam as beam
import pyarrow as pa

from collector_processors.base import Chain, Processor
from pipelines import io
from pipelines.options import make_options
from pipelines.transforms.coverage import CoveragePartials
from pipelines.transforms.partials import Family, MergePartials
from pipelines.transforms.process import QUARANTINE, STATS, ApplyProcessors, split_chain
from pipelines.transforms.security import SecurityPartials
from pipelines.transforms.sre import SrePartials
from tenantry import config as tconfig
from tenantry import security, slo
from tenantry.warehouse import Warehouse

log = logging.getLogger(__name__)

PIPELINE_VERSION = "0.1.0"
STATS_FAMILY = Family("processor_stats", ("table", "tenant_id", "processor", "outcome"), ("count",))


@dataclasses.dataclass
class RunReport:
    run_id: str | None
    inputs_total: int
    inputs_new: int
    rows: dict[str, int]  # rows written per lake table
    seconds: float
    committed: bool
    #: (table, in, kept, quarantined, sampled_out) per signal table, from the run's counters
    accounting: list[tuple] = dataclasses.field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return all(r[1] == r[2] + r[3] + r[4] for r in self.accounting)

    @property
    def skipped(self) -> int:
        return self.inputs_total - self.inputs_new


def build_chain(cfg: tconfig.Config) -> Processor:
    """The processor chain of a config (collector_processors.registry when available)."""
    try:
        from collector_processors.registry import build_chain as _build
    except ImportError:  # processors not installed in this build: identity chain
        return Chain([])
    return _build(cfg)


class _AsRunPart:
    """Tag a run-level merged aggregate as a lake part; its lineage (ingest_batch) is the run."""

    def __init__(self, table: str, run_id: str):
        self.table, self.run_id = table, run_id

    def __call__(self, data: pa.Table):
        if "ingest_batch" not in data.column_names:
            data = data.append_column("ingest_batch", pa.repeat(pa.scalar(self.run_id), data.num_rows))
        return self.table, f"{self.run_id}-agg", data


def build_pipeline(p: beam.Pipeline, tasks: list[io.ReadTask], chain: Processor, warehouse_root: str,
                   run_id: str, batch_rows: int, security_settings=None) -> None:
    """Add the batch steps to ``p`` (separate from running it, so tests can inspect the graph)."""
    main_chain, storage_chain = split_chain(chain)
    chunks = (
        p
        | "ReadTasks" >> beam.Create(tasks)
        | "Reshuffle" >> beam.Reshuffle()
        | "Decode" >> beam.FlatMap(io.read_task, batch_rows)
    )
    processed = chunks | "ApplyProcessors" >> ApplyProcessors(main_chain, "process")
    kept = processed["kept"]
    sre = kept | "Sre" >> SrePartials()
    security = kept | "Security" >> SecurityPartials(security_settings)
    coverage = kept | "Coverage" >> CoveragePartials()
    stored = kept | "SampleForStorage" >> ApplyProcessors(storage_chain, "sample", count_input=False)
    stats = (
        (processed[STATS], stored[STATS])
        | "FlattenStats" >> beam.Flatten()
        | "MergeStats" >> beam.CombineGlobally(MergePartials(STATS_FAMILY)).without_defaults()
    )
    aggregates = [
        *(pcoll | f"Key_{table}" >> beam.Map(_AsRunPart(table, run_id)) for table, pcoll in sre.items()),
        *(pcoll | f"Key_{table}" >> beam.Map(_AsRunPart(table, run_id)) for table, pcoll in security.items()),
        coverage | "KeyCoverage" >> beam.Map(_AsRunPart("coverage_partials", run_id)),
        stats | "KeyStats" >> beam.Map(_AsRunPart("processor_stats", run_id)),
    ]
    # each output is written by its own step (no Flatten): the runner fuses these writes with
    # the steps that produce them, so big batches are never encoded between stages
    write = io.WriteLakeParts(warehouse_root, run_id)
    outputs = {
        "WriteSpans": stored["kept"],
        "WriteQuarantine": processed[QUARANTINE],
        "WriteSampleQuarantine": stored[QUARANTINE],
        **{f"Write{i}": agg for i, agg in enumerate(aggregates)},
    }
    for label, pcoll in outputs.items():
        pcoll | label >> beam.Map(write)


def _run_id(ingest_ids: list[str], chain_desc: str) -> str:
    h = hashlib.sha256()
    for i in sorted(ingest_ids):
        h.update(i.encode() + b"\0")
    h.update(chain_desc.encode())
    return "r" + h.hexdigest()[:24]


def run_batch(inputs: list[str | Path], warehouse: str | Path, cfg: tconfig.Config | None = None,
              beam_args: list[str] | None = None) -> RunReport:
    """Run the batch pipeline over ``inputs`` into ``warehouse``; idempotent per input."""
    cfg = cfg or tconfig.Config()
    started = time.monotonic()
    wh = Warehouse.open(warehouse)
    with wh.writer_lock():
        wh.discard_uncommitted()
        found = io.discover(inputs)
        done = wh.committed_inputs()
        new = [i for i in found if i.ingest_id not in done]
        if not new:
            wh.build_views()
            return RunReport(None, len(found), 0, {}, time.monotonic() - started, False)
        chain = build_chain(cfg)
        sec = security.settings(cfg)
        slo.parse_slos(cfg)  # fail at start-up on a bad slos: section
        slo.plan_slas(cfg)
        run_id = _run_id(
            [i.ingest_id for i in new],
            json.dumps(cfg.model_dump(mode="json"), sort_keys=True, default=str) + PIPELINE_VERSION,
        )
        runner, options = make_options(beam_args)
        p = beam.Pipeline(runner=runner, options=options)
        build_pipeline(p, io.read_tasks(new), chain, str(wh.root), run_id, cfg.pipeline.batch_rows, sec)
        result = p.run()
        result.wait_until_finish()
        now = dt.datetime.now(dt.timezone.utc)
        wh.write_part("slo_targets", run_id, "slo-targets", slo.targets_table(cfg, now, run_id))
        rows = _rows_written(wh, run_id)
        accounting = _accounting(result)
        wh.commit(run_id, [i.ingest_id for i in new], {"rows": rows, "pipeline_version": PIPELINE_VERSION})
        wh.build_views()
        return RunReport(run_id, len(found), len(new), rows, time.monotonic() - started, True, accounting)


def _rows_written(wh: Warehouse, run_id: str) -> dict[str, int]:
    import pyarrow.parquet as pq

    rows = {}
    for table_dir in sorted(wh.lake.iterdir()):
        d = table_dir / f"run={run_id}"
        if d.is_dir():
            rows[table_dir.name] = sum(pq.ParquetFile(f).metadata.num_rows for f in d.glob("*.parquet"))
    return rows


def _accounting(result) -> list[tuple]:
    from apache_beam.metrics.metric import MetricsFilter

    counts: dict[tuple[str, str], int] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace("tenantry"))["counters"]:
        kind, _, table = c.key.metric.name.partition(".")
        value = c.committed if c.committed is not None else c.attempted
        counts[(kind, table)] = counts.get((kind, table), 0) + (value or 0)
    tables = sorted({t for (_k, t) in counts})
    return [
        (t, counts.get(("in", t), 0), counts.get(("kept", t), 0), counts.get(("quarantined", t), 0),
         counts.get(("sampled_out", t), 0))
        for t in tables
    ]


def report_json(report: RunReport) -> str:
    return json.dumps(dataclasses.asdict(report), indent=1)
