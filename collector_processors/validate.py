"""``validate``: limits and sanity checks, one quarantine reason code per check.

Checks, in the order that decides a row's reason when it fails several:

==========================  ================================================================
reason                      when
==========================  ================================================================
``missing_field``           a ``required`` column is null or empty
``timestamp_out_of_range``  an event time is older than ``max_past`` or newer than ``max_future``
                            (spans: ``start_time``, ``end_time``; logs: ``time``,
                            ``observed_time``; metric points and usage events: ``time``)
``end_before_start``        a span's ``end_time`` < ``start_time``; a metric point's ``time`` <
                            ``start_time``
``too_many_attributes``     a map column (``attributes``, ``resource_attributes``,
                            ``dimensions``) has more than ``max_attributes`` entries
``value_too_long``          a map key or value, or a text column, is longer than
                            ``max_value_length`` characters (a log ``body``: ``max_body_length``)
``invalid_quantity``        a usage event's ``quantity`` is negative (decimals cannot be NaN or
                            infinite; those fail earlier, when the event is decoded)
==========================  ================================================================

Any limit set to ``null`` turns that check off. The clock is ``datetime.now(UTC)`` unless the
host passes ``clock=`` (tests, replays).

Example (every option, with the defaults)::

    processors:
      - validate:
          max_past: 30d             # replaying older files? raise it or set null
          max_future: 1h
          max_attributes: 128
          max_value_length: 4096
          max_body_length: 65536
          allow_negative_quantity: false
          required:                 # per table; a table listed here replaces its default list
            spans: [trace_id, span_id, start_time]
            logs: []
            metric_points: [metric_name, time]
            usage_events: [event_id, meter, time]
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from collector_processors import base, maps
from collector_processors.base import Processor, Result
from collector_processors.options import Duration, Options, format_duration
from tenantry import schemas
from tenantry.schemas import Reason

DEFAULT_REQUIRED: dict[str, list[str]] = {
    "spans": ["trace_id", "span_id", "start_time"],
    "logs": [],
    "metric_points": ["metric_name", "time"],
    "usage_events": ["event_id", "meter", "time"],
}
_TIME_COLUMNS = {
    "spans": ["start_time", "end_time"],
    "logs": ["time", "observed_time"],
    "metric_points": ["time"],
    "usage_events": ["time"],
}
_END_START = {"spans": ("end_time", "start_time"), "metric_points": ("time", "start_time")}
_MAP_COLUMNS = ("attributes", "resource_attributes", "dimensions")


class ValidateOptions(Options):
    #: oldest accepted event time, as a duration before now (null: no limit)
    max_past: Duration | None = timedelta(days=30)
    #: newest accepted event time, as a duration after now (null: no limit)
    max_future: Duration | None = timedelta(hours=1)
    #: most entries in one map column (null: no limit)
    max_attributes: int | None = Field(default=128, ge=0)
    #: longest map key or value, or text column, in characters (null: no limit)
    max_value_length: int | None = Field(default=4096, ge=1)
    #: longest log body in characters (null: no limit)
    max_body_length: int | None = Field(default=65536, ge=1)
    #: accept negative usage quantities (credits recorded as usage); off by default
    allow_negative_quantity: bool = False
    #: columns that must be non-null and non-empty, per table (replaces that table's default)
    required: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("required")
    @classmethod
    def _required(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for table, cols in v.items():
            if table not in schemas.SIGNAL_TABLES:
                raise ValueError(f"{table}: unknown table; expected one of {', '.join(schemas.SIGNAL_TABLES)}")
            names = schemas.TABLES[table].names
            for c in cols:
                if c not in names:
                    raise ValueError(f"{table}: unknown column {c!r}; columns: {', '.join(names)}")
        return v


class Validate(Processor):
    """Quarantine rows that break a limit or a sanity rule (see the module docstring)."""

    type_name = "validate"
    accepts_views = True

    def __init__(
        self,
        name: str | None = None,
        options: Mapping | ValidateOptions | None = None,
        clock: Callable[[], datetime] | None = None,
    ):
        super().__init__(name)
        self.options = options if isinstance(options, ValidateOptions) else ValidateOptions.build(options, self.name)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.required = {**DEFAULT_REQUIRED, **self.options.required}

    def process(self, table: str, batch: pa.Table | pa.RecordBatch, views: maps.BatchViews | None = None) -> Result:
        batch = base.as_table(batch)
        n = batch.num_rows
        if n == 0 or table not in schemas.SIGNAL_TABLES:
            return Result(batch, schemas.empty("quarantine"), base.count_by_tenant(batch, self.name, base.KEPT, views))
        code = np.full(n, -1, dtype=np.int8)
        checks = list(self._checks(table, batch, views))
        for i, (_, mask, _) in enumerate(checks):
            code[(code == -1) & mask] = i
        keep = code == -1
        kept = batch.filter(pa.array(keep)) if not keep.all() else batch
        stats: Counter = base.count_by_tenant(kept, self.name, base.KEPT, views)
        parts = [schemas.empty("quarantine")]
        for i, (reason, _, detail) in enumerate(checks):
            sel = code == i
            if sel.any():
                bad = batch.filter(pa.array(sel))
                parts.append(base.quarantine_rows(table, bad, reason, self.name, detail))
                stats.update(base.count_by_tenant(bad, self.name, f"{base.QUARANTINED}:{reason}"))
        return Result(kept, pa.concat_tables(parts), stats)

    def _checks(self, table: str, batch: pa.Table, views: maps.BatchViews | None = None):
        """Yield ``(reason, row mask, detail)`` in priority order."""
        o = self.options
        cols = batch.column_names
        n = batch.num_rows
        req = [c for c in self.required.get(table, []) if c in cols]
        if req:
            m = np.zeros(n, dtype=bool)
            for c in req:
                col = batch.column(c)
                bad = pc.is_null(col)
                if pa.types.is_string(col.type):
                    bad = pc.or_kleene(bad, pc.equal(col, ""))
                m |= maps.np_bool(bad)
            yield Reason.MISSING_FIELD, m, f"required: {', '.join(req)}"

        if o.max_past is not None or o.max_future is not None:
            now = self.clock()
            lo = pa.scalar(now - o.max_past, schemas.TS) if o.max_past is not None else None
            hi = pa.scalar(now + o.max_future, schemas.TS) if o.max_future is not None else None
            m = np.zeros(n, dtype=bool)
            tcols = [c for c in _TIME_COLUMNS.get(table, []) if c in cols]
            for c in tcols:
                col = batch.column(c)
                if lo is not None:
                    m |= maps.np_bool(pc.less(col, lo))
                if hi is not None:
                    m |= maps.np_bool(pc.greater(col, hi))
            yield Reason.TIMESTAMP_OUT_OF_RANGE, m, f"{'/'.join(tcols)} outside [now - {format_duration(o.max_past)}, now + {format_duration(o.max_future)}]"

        if table in _END_START:
            end, start = _END_START[table]
            yield Reason.END_BEFORE_START, maps.np_bool(pc.less(batch.column(end), batch.column(start))), f"{end} < {start}"

        entries = {c: maps.entries_of(batch.column(c), views) for c in _MAP_COLUMNS if c in cols}
        if o.max_attributes is not None:
            m = np.zeros(n, dtype=bool)
            for e in entries.values():
                m |= e.counts() > o.max_attributes
            yield Reason.TOO_MANY_ATTRIBUTES, m, f"more than max_attributes={o.max_attributes} entries in a map"

        if o.max_value_length is not None or o.max_body_length is not None:
            yield Reason.VALUE_TOO_LONG, self._too_long(batch, entries), (
                f"longer than max_value_length={o.max_value_length} (body: max_body_length={o.max_body_length})"
            )

        if table == "usage_events" and not o.allow_negative_quantity:
            zero = pa.scalar(0, schemas.QUANTITY)
            yield Reason.INVALID_QUANTITY, maps.np_bool(pc.less(batch.column("quantity"), zero)), "quantity < 0"

    def _too_long(self, batch: pa.Table, entries: dict[str, maps.MapEntries]) -> np.ndarray:
        o = self.options
        m = np.zeros(batch.num_rows, dtype=bool)
        limit = o.max_value_length
        for name, field in zip(batch.column_names, batch.schema):
            if not pa.types.is_string(field.type):
                continue
            lim = o.max_body_length if name == "body" else limit
            if lim is not None:
                m |= _longer(batch.column(name), lim)
        if limit is not None:
            for e in entries.values():
                if len(e):
                    m |= e.rows_where(_longer(e.keys, limit) | _longer(e.values, limit))
        return m


def _longer(arr, limit: int) -> np.ndarray:
    """True where a string is longer than ``limit`` characters.

    Byte lengths come free from the offsets and bound the character count from above, so the
    UTF-8 count runs only on the (rare) strings with more than ``limit`` bytes.
    """
    over_bytes = maps.byte_lengths(arr, over=limit)
    if not over_bytes.any():
        return over_bytes
    arr = maps.flat(arr)
    idx = np.nonzero(over_bytes)[0]
    over_bytes[idx] = maps.np_bool(pc.greater(pc.utf8_length(arr.take(pa.array(idx))), limit))
    return over_bytes
