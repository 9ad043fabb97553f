"""Event-time windows over the aggregate families: early results, on-time panes, late corrections.

The per-batch composites (:mod:`~pipelines.transforms.sre`, ``security``, ``coverage``) turn each
Arrow batch into mergeable partials keyed by their event-time window (minute, hour, day). In a
streaming pipeline whose source carries an event-time watermark, :class:`EventTimeWindows` merges
those partials per family and window the Beam way::

    (family, part, partial) ─ SplitByWindow ─ WindowInto(FamilyWindows, trigger) ─ CombinePerKey ─ panes

- **Windows per family.** :class:`FamilyWindows` assigns each partial slice the fixed window its
  family is keyed by: 1 minute for ``red_minutely_partials``, 1 hour for the hourly families, 1 day
  for ``coverage_partials``. The slice's timestamp is its window start (event time, from the data).
- **Triggers.** ``AfterWatermark(early=AfterProcessingTime(early), late=AfterCount(1))``: an early
  pane every ``early`` of processing time while a window is open, the on-time pane when the
  watermark passes its end, and a late pane for every late slice within ``allowed_lateness``.
- **Panes are deltas** (``DISCARDING``): every pane holds only what arrived since the previous pane
  of its window, so the views, which sum partial rows, give exactly the figures of one batch
  computation however the data was split into panes. A late correction is just more rows.
- **Too late.** A slice later than ``allowed_lateness`` is dropped by the runner *from the
  aggregate* (its rows are still in the lake, and late usage reaches the ledger, which has its own
  rules: revisions, adjustments, quarantine). Set ``allowed_lateness`` to cover the lateness you
  accept; window state is kept that long.

Evidence rows (``security_events``) are not sums and are not windowed: they pass through.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.coders import coders
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration, Timestamp

from pipelines.transforms import coverage as coverage_t
from pipelines.transforms import security as security_t
from pipelines.transforms import sre as sre_t
from pipelines.transforms.partials import Family, MergeTagged

_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}

#: every windowed family: (family, window size in seconds, from its event-time key column)
WINDOWED: dict[str, tuple[Family, int]] = {
    f.table: (f, _UNIT_SECONDS[f.keys[0]])
    for f in (*sre_t.FAMILIES, security_t.SECURITY_HOURLY, coverage_t.COVERAGE)
}
MERGERS = {name: sre_t.MERGERS.get(name) or security_t.MERGERS.get(name) or coverage_t.MERGERS[name]
           for name in WINDOWED}


@dataclasses.dataclass(frozen=True)
class WindowSettings:
    """How panes fire. ``early``: processing time between early panes of an open window (``None``:
    no early panes); ``allowed_lateness``: how long after a window's end late data still corrects it."""

    early: dt.timedelta | None = dt.timedelta(seconds=5)
    allowed_lateness: dt.timedelta = dt.timedelta(hours=1)


class FamilyWindows(window.NonMergingWindowFn):
    """Fixed event-time windows whose size depends on the element's family (``(family, table)``
    elements): one PCollection, and one combine, for every family."""

    def __init__(self, sizes: dict[str, int]):
        self.sizes = dict(sizes)

    def assign(self, context):
        size = self.sizes[context.element[0]]
        micros = context.timestamp.micros
        start = micros - micros % (size * 1_000_000)
        return [window.IntervalWindow(Timestamp(micros=start), Timestamp(micros=start + size * 1_000_000))]

    def get_window_coder(self):
        return coders.IntervalWindowCoder()

    def __eq__(self, other):
        return type(self) is type(other) and self.sizes == other.sizes

    def __hash__(self):
        return hash(tuple(sorted(self.sizes.items())))


def window_starts(table: pa.Table, family: Family) -> np.ndarray:
    """Event-time window start of every row, in epoch seconds (from the family's time key)."""
    col = table.column(family.keys[0])
    if pa.types.is_date32(col.type):
        return col.cast(pa.int32()).to_numpy().astype(np.int64) * 86400
    unit = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[col.type.unit]
    return col.cast(pa.int64()).to_numpy() // unit


class _SplitByWindowFn(beam.DoFn):
    """``(family, part, partial)`` → one timestamped ``(family, slice)`` per event-time window."""

    PASSTHROUGH = "passthrough"

    def process(self, chunk):
        name, _part, table = chunk
        if name not in WINDOWED:
            yield beam.pvalue.TaggedOutput(self.PASSTHROUGH, chunk)
            return
        family, _size = WINDOWED[name]
        if table.num_rows == 0:
            return
        starts = window_starts(table, family)
        order = np.argsort(starts, kind="stable")
        sorted_starts = starts[order]
        bounds = np.flatnonzero(np.diff(sorted_starts)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(order)]):
            rows = table.take(pa.array(order[lo:hi]))
            yield window.TimestampedValue((name, rows), int(sorted_starts[lo]))


class _EmitPaneFn(beam.DoFn):
    """One merged pane per family and window, as a lake chunk named after window and pane."""

    def __init__(self):
        self.panes = {t: Metrics.counter("tenantry", f"panes.{t}") for t in ("early", "on_time", "late")}

    def process(self, kv, w=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        name, table = kv
        if table is None or table.num_rows == 0:
            return
        timing = {0: "early", 1: "on_time", 2: "late"}.get(pane.timing, "on_time")
        self.panes[timing].inc()
        start = int(w.start.micros // 1_000_000)
        # deterministic for (family, window, pane): a retried bundle rewrites the same file
        yield name, f"w{start}-p{pane.index}-{timing}", table


class EventTimeWindows(beam.PTransform):
    """Partial chunks in → ``{"panes": (family, part, merged partial), "passthrough": chunks}``.

    Inputs must carry event-time timestamps only through their key columns (the composite
    re-timestamps each slice at its window start), so it can follow the per-batch composites
    directly. In a bounded pipeline it yields one on-time pane per family and window.
    """

    def __init__(self, settings: WindowSettings | None = None):
        super().__init__()
        self.settings = settings or WindowSettings()

    def expand(self, chunks):
        s = self.settings
        split = chunks | "SplitByWindow" >> beam.ParDo(_SplitByWindowFn()).with_outputs(
            _SplitByWindowFn.PASSTHROUGH, main="slices")
        # a bounded input has no processing-time clock to fire early panes on (nor any need)
        early = (trigger.AfterProcessingTime(max(1, round(s.early.total_seconds())))
                 if s.early and not chunks.is_bounded else None)
        panes = (
            split["slices"]
            | "FamilyWindows" >> beam.WindowInto(
                FamilyWindows({n: size for n, (_f, size) in WINDOWED.items()}),
                trigger=trigger.AfterWatermark(early=early, late=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
                allowed_lateness=Duration(micros=int(s.allowed_lateness.total_seconds() * 1_000_000)),
            )
            | "KeyByFamily" >> beam.Map(lambda nt: (nt[0], nt))
            | "MergePerWindow" >> beam.CombinePerKey(MergeTagged(MERGERS))
            | "EmitPanes" >> beam.ParDo(_EmitPaneFn())
        )
        return {"panes": panes, "passthrough": split[_SplitByWindowFn.PASSTHROUGH]}
