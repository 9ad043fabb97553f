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
#: (group, value) spaces up to this many slots are marked in a dense array (1 + 4 bytes a slot)
_DENSE_MAX = 1 << 24


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


class _Window:
    """What one window has admitted, under ids that stay fixed while the window is retained.

    A batch is checked with integer work only: its distinct values are looked up once in
    ``values`` (one hash probe per distinct value), and ``(group, value)`` pairs are searched in
    the ``admitted`` codes. Nothing is rebuilt per batch except the hash of ``values``,
    which holds admitted values only, so it is bounded by ``max_values`` per group.
    """

    __slots__ = ("groups", "count", "values", "n_values", "admitted", "_value_set")

    def __init__(self):
        self.groups: dict[tuple, int] = {}  # (tenant_id, key) -> group id
        self.count = np.zeros(0, np.int64)  # distinct values admitted, per group id
        self.values: list[pa.Array] = []  # admitted distinct values; a value's id is its position
        self.n_values = 0
        self.admitted = np.zeros(0, np.int64)  # group id << 32 | value id
        self._value_set: pa.Array | None = None

    def group_ids(self, names: list[tuple]) -> np.ndarray:
        ids = np.fromiter((self.groups.setdefault(nm, len(self.groups)) for nm in names), np.int64, len(names))
        if len(self.groups) > len(self.count):
            self.count = np.concatenate([self.count, np.zeros(len(self.groups) - len(self.count), np.int64)])
        return ids

    def value_ids(self, values: pa.Array) -> np.ndarray:
        """Id of each of ``values`` (distinct strings), -1 where never admitted in this window."""
        if not self.n_values:
            return np.full(len(values), -1, np.int64)
        if self._value_set is None:
            self._value_set = pa.concat_arrays(self.values) if len(self.values) > 1 else self.values[0]
            self.values = [self._value_set]
        found = pc.fill_null(pc.index_in(values, value_set=self._value_set), -1)
        return np.asarray(found.to_numpy(zero_copy_only=False), np.int64)

    def add_values(self, values: pa.Array) -> np.ndarray:
        """Append distinct, not yet admitted ``values``; returns their ids."""
        ids = self.n_values + np.arange(len(values), dtype=np.int64)
        self.values.append(values)
        self.n_values += len(values)
        self._value_set = None
        return ids

    def is_admitted(self, codes: np.ndarray) -> np.ndarray:
        if not len(self.admitted) or not len(codes):
            return np.zeros(len(codes), bool)
        # one hash probe per code (a hash of the admitted codes is cheaper than a binary search)
        return maps.np_bool(pc.is_in(pa.array(codes), value_set=pa.array(self.admitted)))

    def admit(self, codes: np.ndarray) -> None:
        self.admitted = np.concatenate([self.admitted, codes])


class LimitCardinality(Processor):
    """Replace values past the cap with ``__overflow__`` (see the module docstring)."""

    type_name = "limit_cardinality"
    accepts_views = True

    def __init__(self, name: str | None = None, options: Mapping | LimitCardinalityOptions | None = None):
        super().__init__(name)
        o = options if isinstance(options, LimitCardinalityOptions) else LimitCardinalityOptions.build(options, self.name)
        self.options = o
        self._window_ns = max(1, int(o.window.total_seconds() * 1e9))
        self._keys = None if o.keys is None else pa.array(o.keys, pa.string())
        self._exclude = pa.array(o.exclude_keys, pa.string())
        # window number (-1: rows without a time) -> what it admitted
        self._state: dict[int, _Window] = {}

    def process(self, table: str, batch: pa.Table | pa.RecordBatch, views: maps.BatchViews | None = None) -> Result:
        batch = base.as_table(batch)
        stats: Counter = Counter()
        col = _MAP.get(table)
        if batch.num_rows and table in self.options.tables and col in batch.column_names:
            new_col, overflowed = self._limit(batch, table, col, views)
            if overflowed is not None:
                batch = batch.set_column(batch.schema.get_field_index(col), col, new_col)
                for t, n in overflowed:
                    stats[(t, self.name, base.OVERFLOWED)] += n
        stats.update(base.count_by_tenant(batch, self.name, base.KEPT, views))
        return Result(batch, schemas.empty("quarantine"), stats)

    def _limit(self, batch: pa.Table, table: str, col: str, views: maps.BatchViews | None):
        e = maps.entries_of(batch.column(col), views)
        if not len(e):
            return None, None
        vcode_all, vdict = e.value_codes()
        sel = vcode_all >= 0
        if self._keys is not None:
            sel &= e.keys_in(self._keys)
        if len(self._exclude):
            sel &= ~e.keys_in(self._exclude)
        if not sel.any():
            return None, None
        idx = np.nonzero(sel)[0]
        parent = e.parent[idx]
        # everything becomes small integer codes; strings are touched only per distinct value
        if views is not None:
            trow, tnames = views.tenant_codes(batch.column("tenant_id"))
        else:
            tc, td = maps.encode(batch.column("tenant_id"))
            trow, tnames = tc + 1, [None] + td.to_pylist()
        tcode = trow[parent]
        t_ns = maps.flat(pc.fill_null(pc.cast(batch.column(_TIME[table]), pa.int64()), -1)).to_numpy(zero_copy_only=False)
        wrow = np.where(t_ns < 0, -1, t_ns // self._window_ns)
        if wrow.min() == wrow.max():  # the usual batch: one window
            wuniq, wcode = wrow[:1], np.zeros(len(idx), np.int64)
        else:
            wuniq, wcode_row = np.unique(wrow, return_inverse=True)
            wcode = wcode_row.astype(np.int64)[parent]
        kcode_all, kdict = e.key_codes()
        kcode, vcode = kcode_all[idx], vcode_all[idx]
        n_t, n_k, n_v = len(tnames), len(kdict), len(vdict)
        gcode = (wcode * n_t + tcode) * n_k + kcode
        n_g = len(wuniq) * n_t * n_k
        if n_g > 1 << 24:  # many tenants, keys and windows: number only the groups present
            gcode, groups = maps.encode(pa.array(gcode))
            groups, n_g = groups.to_numpy(zero_copy_only=False), len(groups)
        else:
            groups = np.arange(n_g, dtype=np.int64)
        ccode, combos, first_of = _distinct(gcode * n_v + vcode, n_g * n_v)
        admitted = self._admit(
            combos // n_v, combos % n_v, groups, n_g, (n_t, n_k, n_v), wuniq, tnames, kdict, vdict, first_of
        )[ccode]
        if admitted.all():
            return None, None
        over_idx = idx[~admitted]
        over = np.zeros(len(e), dtype=bool)
        over[over_idx] = True
        new_values = pc.if_else(pa.array(over), pa.scalar(schemas.OVERFLOW, pa.string()), e.values)
        new_col, new_entries = e.derive(new_values, changed=over_idx, changed_to=schemas.OVERFLOW)
        if views is not None:
            views.put(new_col, new_entries)
        per_tenant = np.bincount(tcode[~admitted], minlength=len(tnames))
        return new_col, [(tnames[i], int(per_tenant[i])) for i in np.flatnonzero(per_tenant)]

    def _admit(self, cg, cv, groups, n_g, sizes, wuniq, tnames, kdict, vdict, first_of) -> np.ndarray:
        """Per distinct (group, value): admitted? New values fill each group in order of arrival
        (``first_of(combos)``: the position of each combination's first entry)."""
        n_t, n_k, n_v = sizes
        w = groups[cg] // (n_t * n_k)
        knames = kdict.to_pylist()
        ok = np.zeros(len(cg), dtype=bool)
        for wi in np.unique(w):
            sel = np.nonzero(w == wi)[0] if len(wuniq) > 1 else np.arange(len(cg))
            state = self._window_state(int(wuniq[wi]))
            # this window's groups and values, under the window's own ids
            ug, ginv = maps.dense_codes(cg[sel], n_g)
            t, k = np.divmod(groups[ug] % (n_t * n_k), n_k)
            gid = state.group_ids([(tnames[a], knames[b]) for a, b in zip(t.tolist(), k.tolist())])[ginv]
            uv, vinv = maps.dense_codes(cv[sel], n_v)
            vid = state.value_ids(vdict.take(pa.array(uv)))[vinv]
            known = vid >= 0
            maybe = np.nonzero(known)[0]
            known[maybe] = state.is_admitted(gid[maybe] << 32 | vid[maybe])
            new = np.nonzero(~known)[0]
            if len(new):
                guniq, ginv_new = np.unique(gid[new], return_inverse=True)
                room = self.options.max_values - state.count[guniq]
                # only groups with room left need a rank: new values in order of arrival
                has_room = room[ginv_new] > 0
                new, ginv_new = new[has_room], ginv_new[has_room]
                order = np.argsort(first_of(sel[new]), kind="stable")
                new, ginv_new = new[order], ginv_new[order]
                take = _rank_within(ginv_new, len(guniq)) < room[ginv_new]
                if take.any():
                    taken = new[take]
                    state.count[guniq] += np.bincount(ginv_new[take], minlength=len(guniq))
                    fresh = vid[taken] < 0
                    if fresh.any():  # values this window never admitted: give them ids
                        fv, finv = np.unique(vinv[taken[fresh]], return_inverse=True)
                        ids = state.add_values(vdict.take(pa.array(uv[fv])))
                        vid_taken = vid[taken]
                        vid_taken[fresh] = ids[finv]
                        vid[taken] = vid_taken
                    state.admit(gid[taken] << 32 | vid[taken])
                    known[taken] = True
            ok[sel] = known
        return ok

    def _window_state(self, window: int) -> _Window:
        if window not in self._state:
            self._state[window] = _Window()
            # forget the oldest windows beyond retain_windows (the no-time bucket -1 is kept)
            live = sorted(w for w in self._state if w >= 0)
            for w in live[: max(0, len(live) - self.options.retain_windows)]:
                del self._state[w]
        # a late window older than every retained one gets a throw-away state
        return self._state.get(window) or _Window()


def _distinct(combo: np.ndarray, size: int):
    """(code per entry, distinct combinations, first_of) for ``combo`` values in ``[0, size)``.

    ``first_of(codes)`` gives the position of the first entry of each of those combinations. A
    small space is marked in a dense array (no hashing: several times faster); a large one is
    hashed, and then codes already follow first appearance.
    """
    if size <= _DENSE_MAX:
        present = np.zeros(size, dtype=bool)
        present[combo] = True
        combos = np.flatnonzero(present)
        where = np.empty(size, dtype=np.int32)
        where[combos] = np.arange(len(combos), dtype=np.int32)
        code = where[combo]

        def first_of(which: np.ndarray) -> np.ndarray:
            if not len(which):
                return np.zeros(0, np.int64)
            wanted = np.zeros(len(combos), dtype=bool)
            wanted[which] = True
            entries = np.flatnonzero(wanted[code])
            found, first = np.unique(code[entries], return_index=True)
            return entries[first][np.searchsorted(found, which)]

        return code, combos, first_of
    code, combos = maps.encode(pa.array(combo))
    return code, combos.to_numpy(zero_copy_only=False), lambda which: which


def _rank_within(group: np.ndarray, n_groups: int) -> np.ndarray:
    """For each element, how many earlier elements have the same ``group`` (0, 1, 2, ...)."""
    order = np.argsort(group.astype(np.int16) if n_groups < 1 << 15 else group, kind="stable")  # radix for int16
    sorted_g = group[order]
    run_start = np.ones(len(order), dtype=bool)
    run_start[1:] = sorted_g[1:] != sorted_g[:-1]
    starts = np.maximum.accumulate(np.where(run_start, np.arange(len(order)), 0))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - starts
    return rank
