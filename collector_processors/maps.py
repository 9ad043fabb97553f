"""Vectorized access to ``map<string, string>`` columns (``attributes``, ``dimensions``, ...).

pyarrow's list kernels do not accept map arrays, so processors work on the flattened entries:
one key array, one value array and, for each entry, the index of the row it belongs to. Changes
are made on those flat arrays and the column is rebuilt from them with :meth:`MapEntries.rebuild`.
Everything here is numpy / pyarrow compute; there is no per-row Python.

A :class:`BatchViews` is a per-batch cache a :class:`~collector_processors.base.Chain` hands to
its processors, so a map column is flattened (and its keys and values dictionary-encoded) once per
batch rather than once per processor, and tenants are counted from one encoding of ``tenant_id``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

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
    # lazily computed encodings (see key_codes / value_codes); shared through BatchViews
    _key_enc: tuple | None = dataclasses.field(default=None, repr=False, compare=False)
    _value_enc: tuple | None = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, column: pa.Array | pa.ChunkedArray) -> "MapEntries":
        """Flatten ``column`` (a map array or chunked array; slices are handled)."""
        column = flat(column)
        n = len(column)
        if column.null_count:
            row_null = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        else:
            row_null = np.zeros(n, dtype=bool)
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

    def key_codes(self) -> tuple[np.ndarray, pa.Array]:
        """(code per entry, distinct keys): the keys dictionary-encoded, computed once."""
        if self._key_enc is None:
            self._key_enc = encode(self.keys)
        return self._key_enc

    def value_codes(self) -> tuple[np.ndarray, pa.Array]:
        """(code per entry, -1 for null; distinct values): the values dictionary-encoded, once."""
        if self._value_enc is None:
            self._value_enc = encode(self.values)
        elif callable(self._value_enc):  # carried over from a derive(): patched only when asked for
            self._value_enc = self._value_enc()
        return self._value_enc

    def keys_in(self, value_set: pa.Array) -> np.ndarray:
        """Boolean per entry: the key is in ``value_set`` (tested once per distinct key)."""
        if len(self) == 0:
            return np.zeros(0, dtype=bool)
        codes, distinct = self.key_codes()
        hit = np_bool(pc.is_in(distinct, value_set=value_set))
        return np.append(hit, False)[codes]  # code -1 (a null key) is never in the set

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
        if self._key_enc is not None:
            codes, distinct = self._key_enc
            where = np.nonzero(np_bool(pc.equal(distinct, key)))[0]
            hit = np.nonzero(codes == where[0])[0] if len(where) else np.zeros(0, np.int64)
        else:
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
        return self.derive(values, keep)[0]

    def derive(
        self,
        values: pa.Array | None = None,
        keep: pa.Array | np.ndarray | None = None,
        changed: np.ndarray | None = None,
        changed_to: str | None = None,
    ) -> tuple[pa.Array, "MapEntries"]:
        """(rebuilt column, its entries), like :meth:`rebuild`.

        The new entries carry over the encodings already computed, so the next processor does not
        encode again: the key encoding always (keys do not change), the value encoding when
        ``changed`` (entry positions whose value differs; all set to ``changed_to`` if given) is
        passed. The value encoding is patched lazily, only if a later processor asks for it.
        """
        keys = self.keys
        vals = self.values if values is None else values
        parent = self.parent
        key_enc = self._key_enc
        value_enc = None
        old_enc = self._value_enc
        if old_enc is not None and (values is None or changed is not None):
            if values is None or not len(changed):
                value_enc = old_enc
            else:
                def value_enc(old=old_enc, vals=vals):
                    old = old() if callable(old) else old
                    return _patch(old, vals, changed, changed_to)
        if keep is not None:
            k = np_bool(keep)
            if not k.all():
                mask = pa.array(k)
                keys, vals, parent = keys.filter(mask), vals.filter(mask), parent[k]
                key_enc = None if key_enc is None else (key_enc[0][k], key_enc[1])
                if value_enc is not None:
                    def value_enc(full=value_enc):
                        codes, distinct = full() if callable(full) else full
                        return codes[k], distinct
        lengths = np.bincount(parent, minlength=self.num_rows)
        offsets = np.zeros(self.num_rows + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        column = pa.MapArray.from_arrays(
            pa.array(offsets, pa.int32()),
            keys,
            vals,
            type=self.type,
            mask=pa.array(self.row_null) if self.row_null.any() else None,
        )
        entries = MapEntries(parent, keys, vals, self.row_null, self.num_rows, self.type, key_enc, value_enc)
        return column, entries


def replace_at(values: pa.Array, positions: np.ndarray, new: pa.Array) -> pa.Array:
    """``values`` with ``new[i]`` at ``positions[i]`` (one gather; faster than replace_with_mask)."""
    index = np.arange(len(values), dtype=np.int64)
    index[positions] = len(values) + np.arange(len(positions), dtype=np.int64)
    return pa.concat_arrays([values, new.cast(values.type)]).take(pa.array(index))


def dense_codes(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct ``codes`` ascending, position of each code among them), for codes in
    ``[0, size)``; like ``np.unique(codes, return_inverse=True)`` but O(n) with no sort."""
    present = np.bincount(codes, minlength=size) > 0
    distinct = np.nonzero(present)[0]
    where = np.zeros(size, np.int64)
    where[distinct] = np.arange(len(distinct))
    return distinct, where[codes]


def encode(arr: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(int64 code per element, -1 for null; the distinct non-null values in first-seen order)."""
    enc = pc.dictionary_encode(flat(arr))
    idx = enc.indices
    if idx.null_count:
        idx = pc.fill_null(idx, -1)
    return np.asarray(idx.to_numpy(zero_copy_only=False), dtype=np.int64), enc.dictionary


def _patch(
    enc: tuple[np.ndarray, pa.Array], values: pa.Array, changed: np.ndarray, changed_to: str | None = None
) -> tuple[np.ndarray, pa.Array]:
    """The encoding of ``values``, given ``enc`` of the values before the entries ``changed``
    (which all became ``changed_to``, when that is given)."""
    codes, distinct = enc
    codes = codes.copy()
    if changed_to is not None:
        sub_codes, sub_distinct = np.zeros(len(changed), np.int64), pa.array([changed_to], pa.string())
    else:
        sub_codes, sub_distinct = encode(values.take(pa.array(changed)))
    if not len(sub_distinct):
        codes[changed] = -1
        return codes, distinct
    # new text that already was a value keeps that value's code; the rest is appended, so the
    # dictionary stays free of duplicates (limit_cardinality counts distinct values by code)
    found = pc.index_in(sub_distinct, value_set=distinct)
    found_np = np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    fresh = np.nonzero(found_np < 0)[0]
    found_np[fresh] = len(distinct) + np.arange(len(fresh))
    if len(fresh):
        distinct = pa.concat_arrays([distinct, sub_distinct.take(pa.array(fresh))])
    codes[changed] = np.where(sub_codes < 0, -1, found_np[np.maximum(sub_codes, 0)])
    return codes, distinct


def _identity(arr: pa.Array | pa.ChunkedArray) -> tuple:
    """What makes two Arrow arrays the same data: their buffers, offsets and lengths.

    pyarrow hands out a new Python object on every ``table.column(...)``, so object identity
    cannot key a cache; the buffer addresses can, as long as the cache holds the array (the
    buffers cannot be freed and their addresses reused while it does).
    """
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    return tuple(
        (c.type, c.offset, len(c), tuple(0 if b is None else b.address for b in c.buffers())) for c in chunks
    )


class BatchViews:
    """Per-batch cache of derived arrays, shared by the processors of a chain.

    ``entries(column)`` flattens a map column once and returns the same :class:`MapEntries`
    (with its key / value encodings) to every later processor that sees the same data; a
    processor that rebuilds a column hands over the new entries with :meth:`put`. Entries are
    found by the data's buffers, so a stale view is never returned for changed data.
    """

    def __init__(self):
        self._maps: dict[tuple, tuple[object, MapEntries]] = {}
        self._tenants: dict[tuple, tuple[object, np.ndarray, list]] = {}

    def entries(self, column: pa.Array | pa.ChunkedArray) -> MapEntries:
        key = _identity(column)
        hit = self._maps.get(key)
        if hit is None:
            hit = (column, MapEntries.of(column))
            self._maps[key] = hit
        return hit[1]

    def put(self, column: pa.Array | pa.ChunkedArray, entries: MapEntries) -> None:
        """Remember ``entries`` as the flattened form of ``column`` (a column a processor built)."""
        self._maps[_identity(column)] = (column, entries)

    def tenant_codes(self, tenant_id: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, list]:
        """(code per row, names): ``names[code]`` is the row's tenant id (None for null)."""
        key = _identity(tenant_id)
        hit = self._tenants.get(key)
        if hit is None:
            codes, distinct = encode(tenant_id)
            hit = (tenant_id, codes + 1, [None] + distinct.to_pylist())
            self._tenants[key] = hit
        return hit[1], hit[2]

    def put_tenant_codes(self, tenant_id: pa.Array | pa.ChunkedArray, codes: np.ndarray, names: list) -> None:
        """Remember the encoding of a ``tenant_id`` column a processor derived (e.g. filtered)."""
        self._tenants[_identity(tenant_id)] = (tenant_id, codes, names)

    def count_by_tenant(self, batch: pa.Table, processor: str, outcome: str, rows: np.ndarray | None = None) -> Counter:
        """Like :func:`collector_processors.base.count_by_tenant` (of ``batch``, or of the
        ``rows`` mask of it), counted from the cached encoding of ``tenant_id``."""
        out: Counter = Counter()
        if batch.num_rows == 0:
            return out
        codes, names = self.tenant_codes(batch.column("tenant_id"))
        if rows is not None:
            codes = codes[rows]
        counts = np.bincount(codes, minlength=len(names))
        present = np.nonzero(counts)[0]
        if counts[0] and len(present) > 1:
            # codes follow first appearance, except null (code 0): put it where it first appears
            first_null = int(np.argmax(codes == 0))
            before = int(codes[:first_null].max()) if first_null else 0
            present = np.concatenate([present[1:][present[1:] <= before], [0], present[1:][present[1:] > before]])
        for i in present.tolist():
            out[(names[i], processor, outcome)] += int(counts[i])
        return out


def entries_of(column: pa.Array | pa.ChunkedArray, views: "BatchViews | None") -> MapEntries:
    """``views.entries(column)`` when a chain shares views, else a fresh flattening."""
    return views.entries(column) if views is not None else MapEntries.of(column)


def byte_lengths(arr: pa.Array | pa.ChunkedArray, over: int | None = None) -> np.ndarray:
    """UTF-8 byte length of each string (0 for null), read straight from the offsets buffer; with
    ``over``, only whether it is longer than ``over`` bytes (a bool per string, no int64 copy)."""
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    parts = []
    for c in chunks:
        width = np.int64 if pa.types.is_large_string(c.type) or pa.types.is_large_binary(c.type) else np.int32
        offs = np.frombuffer(c.buffers()[1], dtype=width, count=c.offset + len(c) + 1) if len(c) else np.zeros(1, width)
        lengths = np.diff(offs[c.offset :])
        if over is not None:
            lengths = lengths > over
        if c.null_count:
            lengths = np.where(np_bool(c.is_valid()), lengths, 0 if over is None else False)
        parts.append(lengths if over is not None else lengths.astype(np.int64, copy=False))
    if not parts:
        return np.zeros(0, bool if over is not None else np.int64)
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


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
        if arr.num_chunks == 1:  # combine_chunks would copy even a single chunk
            return arr.chunk(0)
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
