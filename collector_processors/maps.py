"""Vectorized access to ``map<string, string>`` columns (``attributes``, ``dimensions``, ...).

pyarrow's list kernels do not accept map arrays, so processors work on the flattened entries:
one key array, one value array and, for each entry, the index of the row it belongs to. Changes
are made on those flat arrays and the column is rebuilt from them with :meth:`MapEntries.rebuild`.
Everything here is numpy / pyarrow compute; there is no per-row Python.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tenantry import schemas


@dataclasses.dataclass
class MapEntries:
    """The flattened entries of one map column of ``num_rows`` rows."""

    #: row index (0-based, within the batch) of each entry
    parent: np.ndarray
    #: the entry keys (never null, as Arrow maps require)
    keys: pa.Array
    #: the entry values (may hold nulls)
    values: pa.Array
    #: per row, True where the map itself is null
    row_null: np.ndarray
    num_rows: int
    type: pa.DataType = schemas.ATTRS

    @classmethod
    def of(cls, column: pa.Array | pa.ChunkedArray) -> "MapEntries":
        """Flatten ``column`` (a map array or chunked array; slices are handled)."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
        n = len(column)
        row_null = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        offsets = np.asarray(column.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        start, end = (int(offsets[0]), int(offsets[-1])) if n else (0, 0)
        lengths = np.diff(offsets)
        keys = column.keys.slice(start, end - start)
        values = column.items.slice(start, end - start)
        parent = np.repeat(np.arange(n, dtype=np.int64), lengths)
        if row_null.any() and lengths[row_null].any():
            # a null map may still own child entries; they are not part of the data
            live = ~row_null[parent]
            keys, values, parent = keys.filter(live), values.filter(live), parent[live]
        return cls(parent, keys, values, row_null, n, column.type)

    def __len__(self) -> int:
        return len(self.parent)

    def counts(self) -> np.ndarray:
        """Number of entries per row."""
        return np.bincount(self.parent, minlength=self.num_rows)

    def rows_where(self, entry_mask: pa.Array | np.ndarray) -> np.ndarray:
        """Boolean per row: True where at least one entry satisfies ``entry_mask``."""
        m = np_bool(entry_mask)
        out = np.zeros(self.num_rows, dtype=bool)
        out[self.parent[m]] = True
        return out

    def lookup(self, key: str) -> pa.Array:
        """The value of ``key`` in each row (null where absent); first occurrence wins."""
        hit = np.nonzero(np_bool(pc.equal(self.keys, key)))[0]
        rows = self.parent[hit]
        first = np.ones(len(hit), dtype=bool)
        first[1:] = rows[1:] != rows[:-1]  # parents are sorted, so the first entry of a row comes first
        index = np.full(self.num_rows, -1, dtype=np.int64)
        index[rows[first]] = hit[first]
        return self.values.take(pa.array(index, mask=index < 0))

    def per_entry(self, column: pa.Array | pa.ChunkedArray) -> pa.Array:
        """A row-level column repeated for each entry (e.g. ``tenant_id`` of every entry)."""
        return pc.take(column, pa.array(self.parent, pa.int64()))

    def rebuild(self, values: pa.Array | None = None, keep: pa.Array | np.ndarray | None = None) -> pa.Array:
        """The map column with ``values`` replacing the entry values and only ``keep`` entries."""
        keys = self.keys
        vals = self.values if values is None else values
        parent = self.parent
        if keep is not None:
            k = np_bool(keep)
            if not k.all():
                mask = pa.array(k)
                keys, vals, parent = keys.filter(mask), vals.filter(mask), parent[k]
        lengths = np.bincount(parent, minlength=self.num_rows)
        offsets = np.zeros(self.num_rows + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        return pa.MapArray.from_arrays(
            pa.array(offsets, pa.int32()),
            keys,
            vals,
            type=self.type,
            mask=pa.array(self.row_null) if self.row_null.any() else None,
        )


def np_bool(mask: pa.Array | pa.ChunkedArray | np.ndarray) -> np.ndarray:
    """A numpy bool array from an Arrow boolean (nulls count as False)."""
    if isinstance(mask, np.ndarray):
        return mask.astype(bool, copy=False)
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def lookup(column: pa.Array | pa.ChunkedArray, key: str) -> pa.Array:
    """The value of ``key`` in each row's map (null where absent); first occurrence wins.

    Faster than ``pc.map_lookup`` on large batches: one string comparison over the flat keys.
    """
    return MapEntries.of(column).lookup(key)


def flat(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array from a chunked one (an empty array when it has no chunks)."""
    if isinstance(arr, pa.ChunkedArray):
        return arr.combine_chunks() if arr.num_chunks else pa.array([], arr.type)
    return arr


def match_any(arr: pa.Array | pa.ChunkedArray, pattern: str) -> np.ndarray:
    """``pc.match_substring_regex`` per element (nulls False), run once per distinct value.

    Attribute values repeat a lot (routes, methods, service names), so matching the dictionary of
    distinct values and mapping back is several times faster than matching every value.
    """
    arr = flat(arr)
    if len(arr) == 0:
        return np.zeros(0, dtype=bool)
    enc = pc.dictionary_encode(arr)
    if len(enc.dictionary) == 0:  # all null
        return np.zeros(len(arr), dtype=bool)
    if len(enc.dictionary) * 2 > len(arr):  # mostly distinct: matching directly is cheaper
        return np_bool(pc.match_substring_regex(arr, pattern))
    hit = np_bool(pc.match_substring_regex(enc.dictionary, pattern))
    idx = pc.fill_null(enc.indices, 0).to_numpy(zero_copy_only=False)
    return hit[idx] & np_bool(pc.is_valid(arr))
