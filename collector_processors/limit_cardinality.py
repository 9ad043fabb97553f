"""``limit_cardinality``: at most ``max_values`` distinct values per tenant, key and time window.

One tenant sending a user id, a URL with ids or a request id as an attribute must not blow up
every per-attribute view for everyone. Per ``(tenant_id, key, window)`` the first ``max_values``
distinct values seen are admitted; every later new value is replaced by ``__overflow__``
(``tenantry.schemas.OVERFLOW``) and counted as ``overflowed`` for that tenant (one per value
replaced). Rows are never dropped or quarantined. The window is the row's event time
(``start_time`` for spans, ``time`` otherwise) floored to ``window``; rows without a time share
one bucket.

**State is per host process**: the processor object remembers the admitted values of the last
``retain_windows`` windows it saw, in memory. Two receivers, or two Beam workers, each admit up to
``max_values``; a restarted process starts empty. The cap is a guard rail for storage and views,
not an exact distinct count (the views compute those).

It applies to ``attributes`` of the tables in ``tables``; for ``usage_events`` (only if listed)
to ``dimensions``. ``keys`` limits only those keys (all keys when null, minus ``exclude_keys``).

Example (every option, with the defaults)::

    processors:
      - limit_cardinality:
          max_values: 1000
          window: 1h
          retain_windows: 3
          keys: null                # e.g. [http.url, http.route, db.statement]
          exclude_keys: [tenant.id, tenant.tier]
          tables: [spans, logs, metric_points]
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Literal, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from collector_processors import base, maps
from collector_processors.base import Processor, Result
from collector_processors.options import Duration, Options
from tenantry import schemas

_TIME = {"spans": "start_time", "logs": "time", "metric_points": "time", "usage_events": "time"}
_MAP = {"spans": "attributes", "logs": "attributes", "metric_points": "attributes", "usage_events": "dimensions"}
Table = Literal["spans", "logs", "metric_points", "usage_events"]


class LimitCardinalityOptions(Options):
    #: distinct values admitted per (tenant, key, window)
    max_values: int = Field(default=1000, ge=1)
    #: window length; the count starts again in each window
    window: Duration = timedelta(hours=1)
    #: how many recent windows of state to keep in memory
    retain_windows: int = Field(default=3, ge=1)
    #: keys to limit (null: every key except exclude_keys)
    keys: list[str] | None = None
    #: keys never limited
    exclude_keys: list[str] = Field(default_factory=lambda: [schemas.TENANT_ID_KEY, schemas.TENANT_TIER_KEY])
    #: tables to limit (usage_events: its dimensions)
    tables: list[Table] = Field(default_factory=lambda: ["spans", "logs", "metric_points"])


class LimitCardinality(Processor):
    """Replace values past the cap with ``__overflow__`` (see the module docstring)."""

    type_name = "limit_cardinality"

    def __init__(self, name: str | None = None, options: Mapping | LimitCardinalityOptions | None = None):
        super().__init__(name)
        o = options if isinstance(options, LimitCardinalityOptions) else LimitCardinalityOptions.build(options, self.name)
        self.options = o
        self._window_ns = max(1, int(o.window.total_seconds() * 1e9))
        self._keys = None if o.keys is None else pa.array(o.keys, pa.string())
        self._exclude = pa.array(o.exclude_keys, pa.string())
        # window -> (admitted "group\x00value" strings, admitted count per group string)
        self._state: dict[int, tuple[list[pa.Array], Counter]] = {}

    def process(self, table: str, batch: pa.Table | pa.RecordBatch) -> Result:
        batch = base.as_table(batch)
        stats: Counter = Counter()
        col = _MAP.get(table)
        if batch.num_rows and table in self.options.tables and col in batch.column_names:
            new_col, overflowed = self._limit(batch, table, col)
            if overflowed is not None:
                batch = batch.set_column(batch.schema.get_field_index(col), col, new_col)
                for t, n in _value_counts(overflowed):
                    stats[(t, self.name, base.OVERFLOWED)] += n
        stats.update(base.count_by_tenant(batch, self.name, base.KEPT))
        return Result(batch, schemas.empty("quarantine"), stats)

    def _limit(self, batch: pa.Table, table: str, col: str):
        e = maps.MapEntries.of(batch.column(col))
        if not len(e):
            return None, None
        sel = maps.np_bool(pc.is_valid(e.values))
        if self._keys is not None:
            sel &= maps.np_bool(pc.is_in(e.keys, value_set=self._keys))
        if len(self._exclude):
            sel &= ~maps.np_bool(pc.is_in(e.keys, value_set=self._exclude))
        if not sel.any():
            return None, None
        idx = np.nonzero(sel)[0]
        pidx = pa.array(e.parent[idx])
        tenant = maps.flat(pc.take(batch.column("tenant_id"), pidx))
        t = batch.column(_TIME[table])
        window = pc.fill_null(pc.divide(pc.cast(t, pa.int64()), self._window_ns), -1)
        window = maps.flat(pc.take(window, pidx)).to_numpy(zero_copy_only=False)
        keys = e.keys.take(pa.array(idx))
        values = e.values.take(pa.array(idx))
        admitted = np.zeros(len(idx), dtype=bool)
        for w in np.unique(window):
            m = window == w
            admitted[m] = self._admit(int(w), tenant.filter(pa.array(m)), keys.filter(pa.array(m)), values.filter(pa.array(m)))
        if admitted.all():
            return None, None
        over = idx[~admitted]
        new_values = pc.replace_with_mask(
            e.values, pa.array(np.isin(np.arange(len(e)), over)), pa.array([schemas.OVERFLOW] * len(over), pa.string())
        )
        return e.rebuild(new_values), tenant.filter(pa.array(~admitted))

    def _admit(self, window: int, tenant: pa.Array, keys: pa.Array, values: pa.Array) -> np.ndarray:
        """Admit values in order of first appearance until each (tenant, key) group is full."""
        admitted_arrays, group_count = self._window_state(window)
        # "tenant \0 <key length>:key" names a group without ambiguity (tenant ids hold no \0)
        klen = pc.cast(pc.binary_length(keys), pa.string())
        group = pc.binary_join_element_wise(tenant, pc.binary_join_element_wise(klen, keys, ":"), "\x00")
        combo = pc.binary_join_element_wise(group, values, "\x00")
        enc = pc.dictionary_encode(combo)
        codes = enc.indices.to_numpy(zero_copy_only=False)
        uniq = enc.dictionary  # in order of first appearance
        known = np.zeros(len(uniq), dtype=bool)
        if admitted_arrays:
            known = maps.np_bool(pc.is_in(uniq, value_set=pa.chunked_array(admitted_arrays)))
        new = np.nonzero(~known)[0]
        if len(new):
            _, first = np.unique(codes, return_index=True)  # first entry of each unique combo
            genc = pc.dictionary_encode(pc.take(group, pa.array(first[new])))
            gcodes = genc.indices.to_numpy(zero_copy_only=False)
            gnames = genc.dictionary.to_pylist()  # the groups with new values: few
            room = np.array([self.options.max_values - group_count[g] for g in gnames], dtype=np.int64)
            # rank of each new value within its group, in order of first appearance
            order = np.argsort(gcodes, kind="stable")
            sorted_codes = gcodes[order]
            starts = np.searchsorted(sorted_codes, sorted_codes, side="left")
            rank = np.empty(len(new), dtype=np.int64)
            rank[order] = np.arange(len(new)) - starts
            ok = rank < room[gcodes]
            if ok.any():
                for g, n in zip(gnames, np.bincount(gcodes[ok], minlength=len(gnames))):
                    group_count[g] += int(n)
                admitted_arrays.append(uniq.take(pa.array(new[ok])))
                known[new[ok]] = True
        return known[codes]

    def _window_state(self, window: int):
        if window not in self._state:
            self._state[window] = ([], Counter())
            # forget the oldest windows beyond retain_windows (the no-time bucket -1 is kept)
            live = sorted(w for w in self._state if w >= 0)
            for w in live[: max(0, len(live) - self.options.retain_windows)]:
                del self._state[w]
        # a late window older than every retained one gets a throw-away state
        return self._state.get(window) or ([], Counter())


def _value_counts(arr) -> list[tuple[str, int]]:
    if len(arr) == 0:
        return []
    return [(v["values"], v["counts"]) for v in pc.value_counts(arr).to_pylist()]
