"""The streaming pipeline: the batch composites, run continuously over a growing landing folder.

``tenantry run stream`` watches the landing folder and, every ``poll_interval``, runs the same Beam
pipeline as ``tenantry run batch`` (:func:`pipelines.batch.build_pipeline`, the same composites) over
the segments that arrived since the last commit. Each such micro-batch is one warehouse run:

- **Progress is the warehouse itself.** A micro-batch's manifest lists the segments it consumed and
  is written last, atomically. After a stop (Ctrl-C, SIGTERM, or SIGKILL at any moment) the stream
  starts again from the manifests: segments named in a manifest are never processed twice, and a
  micro-batch that died before its manifest is invisible and simply redone. Exactly once, as far as
  the warehouse and the ledger can tell.
- **Event time.** Aggregates are mergeable partials keyed by their event-time window (minute,
  hour, day, and the ledger's periods), so each micro-batch is an early result for the windows it
  touches, and data that arrives late (a segment from a slow client, a replayed file) adds partial
  rows to the old windows: a late correction. Late usage becomes ledger revisions or, once a period
  has closed (``ledger.grace_period``), adjustments — exactly as in batch. Events too far in the past
  (``ledger.max_past_days``) are quarantined with a reason, never dropped.
- **Readers are never locked out.** The stream writes Parquet and manifests only; the DuckDB views
  glob the lake, so ``tenantry query`` and the dashboards read consistent committed runs at any
  moment from other processes.

Two forms, one set of composites and one commit protocol:

- this loop of bounded micro-batches (the default): each micro-batch is an ordinary Beam job, so
  ``beam_args`` (e.g. ``--runner=PortableRunner --job_endpoint=...``) send each one to another
  runner; it is the cheapest way to run locally (no streaming runner overhead);
- :mod:`pipelines.unbounded` (``--unbounded``): one long-lived streaming Beam pipeline watching the
  landing pattern with ``MatchContinuously`` and committing per poll tick; the form for cluster
  runners and object-store prefixes. Both read and write the same manifests, so a warehouse can
  switch between them.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Callable

from pipelines import io
from pipelines.batch import RunReport, check_config, process_inputs
from tenantry import config as tconfig
from tenantry import landing as landing_lib
from tenantry.warehouse import Warehouse

log = logging.getLogger(__name__)


@dataclasses.dataclass
class StreamStats:
    micro_batches: int = 0
    segments: int = 0
    rows: dict[str, int] = dataclasses.field(default_factory=dict)
    last_commit_at: float | None = None

    def add(self, report: RunReport) -> None:
        self.micro_batches += 1
        self.segments += report.inputs_new
        for t, n in report.rows.items():
            self.rows[t] = self.rows.get(t, 0) + n
        self.last_commit_at = time.time()


def _pending(landing: Path, committed: set[str], max_segments: int) -> list[io.InputFile]:
    """Committed-but-unprocessed segments, oldest first, at most ``max_segments``."""
    out = []
    raw = [(p, "seg", "segment") for p in landing_lib.list_segments(landing)]
    normalized = [(p, "nseg", "normalized") for p in landing_lib.list_normalized_segments(landing)]
    # both kinds of segment names start with their UTC receive time: oldest first across kinds
    for path, prefix, kind in sorted(raw + normalized, key=lambda x: x[0].name.split("-", 1)[1]):
        ingest_id = f"{prefix}:{path.name}"
        if ingest_id not in committed:
            out.append(io.InputFile(str(path), ingest_id, kind))
            if len(out) >= max_segments:
                break
    return out


def run_stream(landing: str | Path, warehouse: str | Path, cfg: tconfig.Config | None = None,
               poll_interval: float = 1.0, max_segments: int = 500, beam_args: list[str] | None = None,
               stop: threading.Event | None = None, on_commit: Callable[[RunReport, StreamStats], None] | None = None,
               idle_exit_after: float | None = None, compact_every: int | None = 200) -> StreamStats:
    """Process new landing segments until ``stop`` is set (or SIGINT/SIGTERM in the main thread).

    ``idle_exit_after``: return once no new segment has arrived for that many seconds (tests, and
    draining a landing folder). ``compact_every``: fold the small runs together after that many
    micro-batches (:mod:`tenantry.compaction`; ``None``: never). Holds the warehouse writer lock for
    its whole life.
    """
    cfg = cfg or tconfig.Config()
    check_config(cfg)  # a bad config fails now, not at the first segment
    landing = Path(landing)
    landing.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    restore = _install_signal_handlers(stop)
    wh = Warehouse.open(warehouse)
    stats = StreamStats()
    try:
        with wh.writer_lock():
            wh.discard_uncommitted()  # a micro-batch that died before its manifest: redo it
            wh.build_views()
            committed = wh.committed_inputs()
            idle_since = time.monotonic()
            while not stop.is_set():
                batch = _pending(landing, committed, max_segments)
                if batch:
                    report = process_inputs(wh, batch, cfg, beam_args, committed=committed)
                    if report.committed:
                        committed.update(i.ingest_id for i in batch)
                        stats.add(report)
                        if on_commit:
                            on_commit(report, stats)
                        if compact_every and stats.micro_batches % compact_every == 0:
                            from tenantry.compaction import compact

                            compact(wh)
                    idle_since = time.monotonic()
                    continue  # drain a backlog without sleeping
                if idle_exit_after is not None and time.monotonic() - idle_since >= idle_exit_after:
                    break
                stop.wait(poll_interval)
    finally:
        restore()
    return stats


def _install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGINT/SIGTERM finish the current micro-batch, then stop (a SIGKILL is safe too)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda *_: stop.set())

    def restore():
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
