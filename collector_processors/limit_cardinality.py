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
        # window -> {"admitted": ["tenant\0key\0value" arrays], "count": {"tenant\0key": n}}
        self._state: dict[int, dict] = {}

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
        parent = e.parent[idx]
        # everything becomes small integer codes; strings are touched only per distinct value
        tenc = pc.dictionary_encode(maps.flat(batch.column("tenant_id")))
        tcode = tenc.indices.to_numpy(zero_copy_only=False).astype(np.int64)[parent]
        t_ns = pc.fill_null(pc.cast(batch.column(_TIME[table]), pa.int64()), -1)
        wrow = np.where(maps.flat(t_ns).to_numpy(zero_copy_only=False) < 0, -1, maps.flat(t_ns).to_numpy(zero_copy_only=False) // self._window_ns)
        wuniq, wcode_row = np.unique(wrow, return_inverse=True)
        wcode = wcode_row.astype(np.int64)[parent]
        kenc = pc.dictionary_encode(e.keys)  # all entries: cheaper than gathering the selected ones first
        venc = pc.dictionary_encode(e.values)
        kcode = kenc.indices.to_numpy(zero_copy_only=False).astype(np.int64)[idx]
        vcode = pc.fill_null(venc.indices, 0).to_numpy(zero_copy_only=False).astype(np.int64)[idx]
        n_t, n_k, n_v = len(tenc.dictionary), len(kenc.dictionary), len(venc.dictionary)
        genc = pc.dictionary_encode(pa.array((wcode * n_t + tcode) * n_k + kcode))
        gcode = genc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        cenc = pc.dictionary_encode(pa.array(gcode * n_v + vcode))  # distinct (group, value), first seen first
        combos = cenc.dictionary.to_numpy(zero_copy_only=False)
        admitted = self._admit(
            combos // n_v, combos % n_v, genc.dictionary.to_numpy(zero_copy_only=False),
            (n_t, n_k), wuniq, tenc.dictionary, kenc.dictionary, venc.dictionary,
        )[cenc.indices.to_numpy(zero_copy_only=False)]
        if admitted.all():
            return None, None
        over = np.zeros(len(e), dtype=bool)
        over[idx[~admitted]] = True
        new_values = pc.replace_with_mask(
            e.values, pa.array(over), pa.array([schemas.OVERFLOW] * int(over.sum()), pa.string())
        )
        tenant_of_over = pc.take(tenc.dictionary, pa.array(tcode[~admitted]))
        return e.rebuild(new_values), tenant_of_over

    def _admit(self, cg, cv, groups, sizes, wuniq, tdict, kdict, vdict) -> np.ndarray:
        """Per distinct (group, value): admitted? New values fill each group in order of arrival."""
        n_t, n_k = sizes
        g = groups[cg]
        w, rest = np.divmod(g, n_t * n_k)
        t, k = np.divmod(rest, n_k)
        # "tenant \0 <key bytes>:key \0 value" names a (tenant, key, value) without ambiguity
        klen = pc.cast(pc.binary_length(kdict), pa.string())
        kname = pc.binary_join_element_wise(klen, kdict, ":")
        tk = pc.binary_join_element_wise(tdict.take(pa.array(t)), kname.take(pa.array(k)), "\x00")
        combo = pc.binary_join_element_wise(tk, vdict.take(pa.array(cv)), "\x00")
        ok = np.zeros(len(cg), dtype=bool)
        for wi in np.unique(w):
            sel = np.nonzero(w == wi)[0]
            state = self._window_state(int(wuniq[wi]))
            mine = combo.take(pa.array(sel))
            known = np.zeros(len(sel), dtype=bool)
            if state["admitted"]:
                known = maps.np_bool(pc.is_in(mine, value_set=pa.chunked_array(state["admitted"])))
            new = np.nonzero(~known)[0]
            if len(new):
                # rank of each new value within its group, in order of first appearance
                gnew = cg[sel[new]]
                guniq, gfirst, ginv = np.unique(gnew, return_index=True, return_inverse=True)
                names = pc.take(tk, pa.array(sel[new][gfirst])).to_pylist()  # one per group with new values
                room = np.array([self.options.max_values - state["count"][nm] for nm in names], dtype=np.int64)
                order = np.argsort(ginv, kind="stable")
                starts = np.searchsorted(ginv[order], ginv[order], side="left")
                rank = np.empty(len(new), dtype=np.int64)
                rank[order] = np.arange(len(new)) - starts
                take = rank < room[ginv]
                if take.any():
                    for nm, n in zip(names, np.bincount(ginv[take], minlength=len(guniq))):
                        if n:
                            state["count"][nm] += int(n)
                    state["admitted"].append(mine.take(pa.array(new[take])))
                    known[new[take]] = True
            ok[sel] = known
        return ok

    def _window_state(self, window: int) -> dict:
        if window not in self._state:
            self._state[window] = {"admitted": [], "count": Counter()}
            # forget the oldest windows beyond retain_windows (the no-time bucket -1 is kept)
            live = sorted(w for w in self._state if w >= 0)
            for w in live[: max(0, len(live) - self.options.retain_windows)]:
                del self._state[w]
        # a late window older than every retained one gets a throw-away state
        return self._state.get(window) or {"admitted": [], "count": Counter()}


def _value_counts(arr) -> list[tuple[str, int]]:
    if len(arr) == 0:
        return []
    return [(v["values"], v["counts"]) for v in pc.value_counts(arr).to_pylist()]
