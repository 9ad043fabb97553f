"""The unbounded streaming pipeline: Beam's continuous file matching over the landing folder.

``tenantry run stream --unbounded`` runs one long-lived Beam pipeline in streaming mode instead of
a loop of bounded micro-batches (:mod:`pipelines.stream`). The steps are the batch composites::

    MatchContinuously ─ FirstSighting ─ TickWindows ─ Decode ─ Derive ─ WriteTickParts ─┐
                                                        └── segments of the tick ──────┴─ GroupTick ─ CommitTicks

``Derive`` (:mod:`pipelines.transforms.derive`) is the very composite the batch pipeline applies.

- **Watching.** ``fileio.MatchContinuously`` polls a file pattern every ``interval``; the pattern
  may be any Beam filesystem (a local landing folder here, ``s3://bucket/landing/*seg-*.arrow`` or
  ``gs://...`` on a cluster runner). ``FirstSighting`` (a stateful DoFn keyed by path) lets each
  segment through once, and skips segments a committed run already consumed.
- **Commit per tick.** Segments are windowed by the poll tick that found them. Everything derived
  from a tick's segments is written under one run id, and when the watermark passes the end of the
  tick (every element of the tick has been written), ``CommitTicks`` updates the ledger and writes
  the run's manifest: the same atomic commit as batch. A stop or a SIGKILL at any moment leaves
  only whole ticks visible; on restart, uncommitted parts are discarded and their segments, which no
  manifest names, are matched again. Exactly once, as far as the warehouse and the ledger can tell.
- **Event time.** As in batch, aggregates are partials keyed by their event-time window (minute,
  hour, day); each tick adds an early result or a late correction that the views sum.
  :class:`~pipelines.transforms.windows.EventTimeWindows` (Beam windows, triggers and allowed
  lateness) is the composite for sources that carry an event-time watermark, such as Pub/Sub with
  timestamp attributes or Kafka; a file watch's watermark is the poll clock, so here every slice
  would be "late" on arrival and each pane would equal the tick's partials.

Runs with the standard options on Dataflow or Flink (see the README), and locally on Beam's
DirectRunner in streaming mode (``--allow_unsafe_triggers`` is passed only to keep it from trying to
download the Prism runner). The DirectRunner holds the watermark of a splittable source such as
``MatchContinuously`` at -inf until the source finishes, so no tick would close while it runs; locally
the watch therefore runs in rounds (``local_round``, 3 s by default) that each commit their ticks when
they end. Freshness is then about a round; the micro-batch form (the default) is fresher locally.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import threading
import time
from pathlib import Path

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.io import fileio
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import window
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from pipelines import io
from pipelines.batch import STATS_FAMILY, _AsRunPart, commit_run
from pipelines.transforms.derive import CHUNK_OUTPUTS, Derive
from pipelines.transforms.partials import MergeFamilies, summing
from tenantry import config as tconfig

log = logging.getLogger(__name__)

SEGMENT_PATTERN = "*seg-*.arrow"  # raw (seg-) and normalized (nseg-) landing segments


def segment_input(path: str) -> io.InputFile | None:
    """The input a landing segment path stands for (ids match the batch and micro-batch paths)."""
    name = path.rsplit("/", 1)[-1]
    if name.startswith("nseg-") and name.endswith(".arrow"):
        return io.InputFile(path, f"nseg:{name}", "normalized")
    if name.startswith("seg-") and name.endswith(".arrow"):
        return io.InputFile(path, f"seg:{name}", "segment")
    return None  # a temporary file mid-rename, or something that is not ours


class _FirstSighting(beam.DoFn):
    """``(path, metadata)`` → the segment's input, once per path, unless a committed run has it."""

    SEEN = ReadModifyWriteStateSpec("seen", coders.BooleanCoder())

    def __init__(self, committed: frozenset[str]):
        self.committed = committed

    def process(self, kv, seen=beam.DoFn.StateParam(SEEN)):
        path, _meta = kv
        if seen.read():
            return
        seen.write(True)
        inp = segment_input(path)
        if inp is not None and inp.ingest_id not in self.committed:
            yield inp


class _ReadSegment(beam.DoFn):
    """Decode one segment. A segment on a remote filesystem (``s3://``, ``gs://``) is copied to a
    local temporary file through Beam's filesystems first, and removed once decoded."""

    def __init__(self, batch_rows: int):
        self.batch_rows = batch_rows

    def process(self, inp: io.InputFile):
        if "://" not in inp.path:
            yield from io.read_task(io.ReadTask(inp), self.batch_rows)
            return
        import shutil
        import tempfile

        from apache_beam.io.filesystems import FileSystems

        folder = tempfile.mkdtemp(prefix="tenantry-segment-")
        local = os.path.join(folder, inp.path.rsplit("/", 1)[-1])  # readers know a segment by its name
        try:
            with open(local, "wb") as out, FileSystems.open(inp.path) as src:
                shutil.copyfileobj(src, out, 1 << 20)
            yield from io.read_task(io.ReadTask(dataclasses.replace(inp, path=local)), self.batch_rows)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


class _WriteTickParts(beam.DoFn):
    """Writes ``(table, part, rows)`` under the run id of the element's tick window; emits
    ``(run id, ("rows", table, n))`` for the commit."""

    def __init__(self, warehouse_root: str, session: str):
        self.warehouse_root = warehouse_root
        self.session = session

    def process(self, chunk, w=beam.DoFn.WindowParam):
        run_id = tick_run_id(self.session, w)
        table, n = io.WriteLakeParts(self.warehouse_root, run_id)(chunk)
        yield run_id, ("rows", table, n)


def tick_run_id(session: str, w) -> str:
    """One run per tick window. Milliseconds, not seconds: two sub-second ticks sharing a run id
    would commit twice, and the second manifest would drop the first tick's inputs."""
    return f"s{session}-{w.start.micros // 1000}"


class _StatsPart(beam.DoFn):
    """``(family, merged stats)`` of a tick → a lake chunk of the tick's run."""

    def __init__(self, session: str):
        self.session = session

    def process(self, pair, w=beam.DoFn.WindowParam):
        yield _AsRunPart(tick_run_id(self.session, w))(pair)


class _TagInput(beam.DoFn):
    def __init__(self, session: str):
        self.session = session

    def process(self, inp, w=beam.DoFn.WindowParam):
        yield tick_run_id(self.session, w), ("input", inp.ingest_id)


class _CommitTick(beam.DoFn):
    """All of a tick's outputs are written: ledger update, SLO targets, manifest (one at a time)."""

    _lock = threading.Lock()

    def __init__(self, warehouse_root: str, cfg_json: str):
        self.warehouse_root = warehouse_root
        self.cfg_json = cfg_json

    def process(self, kv):
        run_id, items = kv
        inputs = sorted({i[1] for i in items if i[0] == "input"})
        if not inputs:
            return
        from tenantry.warehouse import Warehouse

        cfg = tconfig.Config.model_validate_json(self.cfg_json)
        wh = Warehouse(self.warehouse_root)
        with self._lock:
            if (wh.manifests / f"{run_id}.json").exists():  # would replace that run's inputs: a bug
                raise RuntimeError(f"run {run_id} is already committed; refusing to commit it twice")
            summary = commit_run(wh, run_id, inputs, cfg, dt.datetime.now(dt.timezone.utc), mode="unbounded")
            yield {"run_id": run_id, "inputs": len(inputs), "rows": summary["rows"]}


def build_unbounded_pipeline(p: beam.Pipeline, pattern: str, warehouse_root: str, cfg: tconfig.Config, chain,
                             security_settings, committed: frozenset[str], interval: float = 1.0,
                             stop_after: float | None = None, session: str | None = None):
    """Add the streaming steps to ``p``; returns the PCollection of commit reports."""
    session = session or f"{int(time.time())}{os.getpid() % 1000:03d}"
    now = time.time()
    stop = now + stop_after if stop_after is not None else None
    match_kw = {"stop_timestamp": stop} if stop is not None else {}
    segments = (
        p
        | "WatchLanding" >> fileio.MatchContinuously(pattern, interval=interval, has_deduplication=False,
                                                     start_timestamp=now, **match_kw)
        | "KeyByPath" >> beam.Map(lambda m: (m.path, m)).with_output_types(beam.typehints.KV[str, object])
        | "FirstSighting" >> beam.ParDo(_FirstSighting(committed))
        | "TickWindows" >> beam.WindowInto(window.FixedWindows(interval))
    )
    chunks = segments | "Decode" >> beam.ParDo(_ReadSegment(cfg.pipeline.batch_rows))
    derived = chunks | "Derive" >> Derive(chain, security_settings, cfg.meters)
    # processor counters: merged per tick (a window) into one part of the tick's run
    stats = (
        derived["Stats"]
        | "TagStats" >> beam.Map(lambda t: (STATS_FAMILY.table, t))
        | "MergeStats" >> MergeFamilies({STATS_FAMILY.table: summing(STATS_FAMILY)})
        | "StatsAsTickPart" >> beam.ParDo(_StatsPart(session))
    )
    written = [derived[name] | f"Write{name}" >> beam.ParDo(_WriteTickParts(warehouse_root, session))
               for name in CHUNK_OUTPUTS]
    written.append(stats | "WriteStats" >> beam.ParDo(_WriteTickParts(warehouse_root, session)))
    tagged_inputs = segments | "TagInputs" >> beam.ParDo(_TagInput(session))
    return (
        (*written, tagged_inputs)
        | "FlattenTick" >> beam.Flatten()
        | "GroupTick" >> beam.GroupByKey()  # fires once the watermark passes the tick's end
        | "CommitTicks" >> beam.ParDo(_CommitTick(warehouse_root, cfg.model_dump_json()))
    )


def streaming_options(beam_args: list[str] | None = None) -> PipelineOptions:
    """Streaming options; the local default is the DirectRunner without the Prism download."""
    args = list(beam_args or [])
    if not any(a.startswith("--runner") for a in args):
        args += ["--runner=DirectRunner", "--allow_unsafe_triggers"]
    return PipelineOptions([*args, "--streaming"])


@dataclasses.dataclass
class UnboundedStats:
    ticks: int = 0  # runs committed
    segments: int = 0  # segments those runs consumed


def run_unbounded(landing: str | Path, warehouse: str | Path, cfg: tconfig.Config | None = None,
                  interval: float = 1.0, stop_after: float | None = None, beam_args: list[str] | None = None,
                  pattern: str | None = None, local_round: float = 3.0,
                  compact_every_rounds: int | None = 40) -> UnboundedStats:
    """Watch ``landing`` (or ``pattern``) with one streaming Beam pipeline until ``stop_after``
    seconds have passed (forever if ``None``; Ctrl-C stops it, uncommitted ticks are redone)."""
    from pipelines.batch import check_config
    from tenantry.warehouse import Warehouse

    cfg = cfg or tconfig.Config()
    chain, sec = check_config(cfg)
    if pattern is None:
        Path(landing).mkdir(parents=True, exist_ok=True)
        pattern = str(Path(landing).resolve() / SEGMENT_PATTERN)
    wh = Warehouse.open(warehouse)
    options = streaming_options(beam_args)
    local = options.get_all_options().get("runner") == "DirectRunner"
    from apache_beam.io.filesystems import FileSystems

    FileSystems.set_options(options)  # s3:// and gs:// patterns take their endpoints and keys from here
    with wh.writer_lock():
        wh.discard_uncommitted()  # a tick that died before its manifest: its segments are matched again
        wh.build_views()
        before = {r["run_id"] for r in wh.committed_runs(include_replaced=True)}
        inputs_before = wh.committed_inputs()
        started, rounds = time.monotonic(), 0
        while True:
            # Beam's DirectRunner holds a splittable source's watermark at -inf until the source
            # finishes (runners/direct/sdf_direct_runner.py), so no tick window would ever close:
            # locally the watch runs in rounds of ``local_round`` seconds, each committing its ticks
            # as it ends. Dataflow and Flink advance the watermark and run as one pipeline.
            left = None if stop_after is None else stop_after - (time.monotonic() - started)
            this_round = left if not local else min(local_round, left) if left is not None else local_round
            if this_round is not None and this_round <= 0:
                break
            p = beam.Pipeline(options=options)
            build_unbounded_pipeline(p, pattern, str(wh.root), cfg, chain, sec, frozenset(wh.committed_inputs()),
                                     interval=interval, stop_after=this_round)
            result = p.run()
            try:
                result.wait_until_finish()
            except KeyboardInterrupt:
                log.info("stopping: ticks not yet committed will be redone at the next start")
                try:
                    result.cancel()
                except Exception:  # noqa: BLE001 - the runner may already be down
                    log.debug("cancel failed", exc_info=True)
                break
            if not local:
                break
            rounds += 1
            if compact_every_rounds and rounds % compact_every_rounds == 0:
                from tenantry.compaction import compact

                compact(wh)  # between rounds, under the lock this stream holds
        wh.discard_uncommitted()
        # counted from the manifests (ticks a compaction folded in are still listed until deleted)
        ticks = [r for r in wh.committed_runs(include_replaced=True)
                 if r["run_id"] not in before and (r.get("summary") or {}).get("mode") == "unbounded"]
        segments = len(wh.committed_inputs() - inputs_before)
    return UnboundedStats(len(ticks), segments)
