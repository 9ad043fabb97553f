"""The batch pipeline: inputs → normalized tables → processors → lake + partial aggregates.

``run_batch`` is what ``tenantry run batch`` calls::

    discover inputs → skip those already committed → Beam pipeline → commit manifest → views

The pipeline (every step a named composite, I/O only at the edges)::

    ReadTasks → Decode → Derive ─┬─ rows, quarantine, derived usage ─┬─ WriteLake (one step per output)
                                 ├─ SRE + security + coverage partials ┤
                                 └─ processor stats ── MergeStats ──────┘

``Derive`` (:mod:`pipelines.transforms.derive`: ApplyProcessors, DeriveUsage, SpanPartials,
Coverage, SampleForStorage) is the same composite the unbounded stream applies.

Decoding reads the next Parquet row group, and the lake writes run, on background threads
(:class:`pipelines.io.ReadAhead`, :class:`pipelines.io.WriteLake`), so Arrow's reading, encoding
and compression use the machine's other cores while Python works on the current batch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import threading
import time
from pathlib import Path

import apache_beam as beam
import duckdb
import pyarrow as pa

from collector_processors.base import Chain, Processor
from pipelines import io
from pipelines.options import make_options
from pipelines.transforms import coverage as coverage_t
from pipelines.transforms import security as security_t
from pipelines.transforms import sre as sre_t
from pipelines.transforms.partials import Family, MergeFamilies, summing
from pipelines.transforms.derive import CHUNK_OUTPUTS, Derive
from tenantry import config as tconfig
from tenantry import ledger, security, slo
from tenantry import meters as meters_lib
from tenantry.cost import rules as cost_rules
from tenantry.warehouse import Warehouse

log = logging.getLogger(__name__)

PIPELINE_VERSION = "0.2.0"
STATS_FAMILY = Family("processor_stats", ("table", "tenant_id", "processor", "outcome"), ("count",))
#: how every aggregate family written by a run merges
MERGERS = {**sre_t.MERGERS, **security_t.MERGERS, **coverage_t.MERGERS, STATS_FAMILY.table: summing(STATS_FAMILY)}


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
    ledger: object = None  # tenantry.ledger.LedgerReport

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

    def __init__(self, run_id: str):
        self.run_id = run_id

    def __call__(self, pair):
        table, data = pair
        if "ingest_batch" not in data.column_names:
            data = data.append_column("ingest_batch", pa.repeat(pa.scalar(self.run_id), data.num_rows))
        return table, f"{self.run_id}-agg", data


def build_pipeline(p: beam.Pipeline, tasks: list[io.ReadTask], chain: Processor, warehouse_root: str,
                   run_id: str, batch_rows: int, security_settings=None, meters=()) -> None:
    """Add the batch steps to ``p`` (separate from running it, so tests can inspect the graph)."""
    chunks = (
        p
        | "ReadTasks" >> beam.Create(tasks)
        | "Reshuffle" >> beam.Reshuffle()
        | "Decode" >> beam.ParDo(io.ReadAhead(batch_rows)).with_output_types(io.Chunk)
    )
    derived = chunks | "Derive" >> Derive(chain, security_settings, meters)
    # processor counters are tiny: merged per run into one part
    stats = (
        derived["Stats"]
        | "TagStats" >> beam.Map(lambda t: (STATS_FAMILY.table, t))
        | "MergeStats" >> MergeFamilies({STATS_FAMILY.table: summing(STATS_FAMILY)})
        | "StatsAsRunPart" >> beam.Map(_AsRunPart(run_id))
    )
    # each output is written by its own step (no Flatten): the runner fuses these writes with
    # the steps that produce them, so big batches are never encoded between stages
    write = io.WriteLake(warehouse_root, run_id)
    for name in CHUNK_OUTPUTS:
        derived[name] | f"Write{name}" >> beam.ParDo(write)
    stats | "WriteStats" >> beam.ParDo(write)


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
        # the commit's steps read committed state through the views (ledger, SLA credits): a new
        # warehouse's views are built on a thread meanwhile (DuckDB releases the GIL), ready by then
        with _Background(wh.build_views) as views:
            found = io.discover(inputs)
            report = process_inputs(wh, found, cfg, beam_args, started=started, before_commit=views.wait)
        wh.build_views()
        return report


class _Background:
    """``fn`` on a thread from entering the block; :meth:`wait` joins it and raises what it raised.
    Leaving the block always joins it (raising its error only when the block itself did not)."""

    def __init__(self, fn):
        self._fn = fn
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tenantry-views", daemon=True)

    def _run(self):
        try:
            self._fn()
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits
            self._error = e

    def __enter__(self):
        self._thread.start()
        return self

    def wait(self):
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __exit__(self, exc_type, exc, tb):
        self._thread.join()
        if exc_type is None:
            self.wait()
        return False


def check_config(cfg: tconfig.Config) -> tuple[Processor, object]:
    """Build what a run needs from the config, failing at start-up on any bad section."""
    chain = build_chain(cfg)
    sec = security.settings(cfg)
    slo.parse_slos(cfg)
    slo.plan_slas(cfg)
    meters_lib.compile_meters(cfg.meters)
    ledger.settings(cfg)
    cost_rules.from_config(cfg)
    return chain, sec


def process_inputs(wh: Warehouse, found: list[io.InputFile], cfg: tconfig.Config,
                   beam_args: list[str] | None = None, committed: set[str] | None = None,
                   started: float | None = None, before_commit=None) -> RunReport:
    """One run over the inputs not yet committed: Beam pipeline, then the atomic commit.

    The caller holds the warehouse writer lock. ``committed`` (the inputs already consumed) may be
    passed by a caller that tracks it, such as the stream loop; it is read from the manifests
    otherwise. Views are not rebuilt here (they glob the lake and see the new run at once);
    ``before_commit``, when given, is called once the pipeline has run, before anything is committed.
    """
    started = started if started is not None else time.monotonic()
    done = committed if committed is not None else wh.committed_inputs()
    new = [i for i in found if i.ingest_id not in done]
    if not new:
        return RunReport(None, len(found), 0, {}, time.monotonic() - started, False)
    chain, sec = check_config(cfg)
    run_id = _run_id(
        [i.ingest_id for i in new],
        json.dumps(cfg.model_dump(mode="json"), sort_keys=True, default=str) + PIPELINE_VERSION,
    )
    runner, options = make_options(beam_args)
    p = beam.Pipeline(runner=runner, options=options)
    now = dt.datetime.now(dt.timezone.utc)
    build_pipeline(p, io.read_tasks(new), chain, str(wh.root), run_id, cfg.pipeline.batch_rows, sec, cfg.meters)
    result = p.run()
    result.wait_until_finish()
    if before_commit is not None:
        before_commit()
    summary = commit_run(wh, run_id, [i.ingest_id for i in new], cfg, now)
    return RunReport(run_id, len(found), len(new), summary["rows"], time.monotonic() - started, True,
                     _accounting(result), summary["ledger_report"])


def commit_run(wh: Warehouse, run_id: str, inputs: list[str], cfg: tconfig.Config, now: dt.datetime,
               **extra) -> dict:
    """What every run does once its parts are written (batch, micro-batch or stream tick): SLO
    targets, the ledger update, SLA credits, then the manifest, which makes it all visible at once.
    Returns the manifest's summary (plus ``ledger_report``)."""
    wh.write_part("slo_targets", run_id, "slo-targets", slo.targets_table(cfg, now, run_id))
    ledger_report = ledger.update_for_run(wh, run_id, cfg, now=now, pipeline_version=PIPELINE_VERSION)
    credits = _sla_credits(wh, cfg, run_id, now)  # before counting rows: it writes ledger parts too
    summary = {
        "rows": _rows_written(wh, run_id), "pipeline_version": PIPELINE_VERSION,
        "ledger": dataclasses.asdict(ledger_report), "sla_credits": credits, **extra,
    }
    wh.commit(run_id, inputs, summary)
    return {**summary, "ledger_report": ledger_report}


def _sla_credits(wh: Warehouse, cfg: tconfig.Config, run_id: str, now: dt.datetime) -> int:
    """Credit entries for SLA breaches in the last closed month (once: ids already in the ledger
    are not written again), committed with this run."""
    if not slo.plan_slas(cfg):
        return 0
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (first - dt.timedelta(days=1)).replace(day=1)
    grace = ledger.settings(cfg).grace_period
    if now < first + grace:
        return 0  # the month is still open for late data; credit it once it closes
    credits = slo.sla_credits(wh, cfg, (start, first), computed_at=now, run_id=run_id,
                              pipeline_version=PIPELINE_VERSION)
    if credits.num_rows == 0:
        return 0
    con = duckdb.connect()
    try:
        con.execute(f"create view _committed_runs as {wh.committed_runs_sql()}")
        seen = {r[0] for r in con.execute(f"select entry_id from {wh.lake_source('usage_ledger')}").fetchall()}
    finally:
        con.close()
    keep = pa.array([e not in seen for e in credits.column("entry_id").to_pylist()])
    credits = credits.filter(keep)
    wh.write_part("usage_ledger", run_id, "sla-credits", credits)
    return credits.num_rows


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
