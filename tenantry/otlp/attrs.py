"""Attribute lists of many records decoded into one ``map<string, string>`` column at once.

The lite message classes (:mod:`tenantry.otlp.messages`) hand over each attribute as the raw
bytes of its serialized ``KeyValue``. :func:`decode_attribute_lists` parses all of a batch's
attributes together with numpy: the canonical layout every SDK writes (key, then a value holding
one string / bool / int / double) is decoded without a Python object per attribute; anything else
(arrays, kvlists, bytes, fields out of order, unknown fields) goes through upb one attribute at a
time, so every valid attribute decodes exactly as the standard classes would.

Promises:
- one map per record, keys unique within a record (the last occurrence wins, as in the OTel SDK;
  DuckDB rejects maps with duplicate keys);
- a record whose attribute is malformed (bad bytes, invalid UTF-8, nesting too deep) is reported in
  ``bad`` with a detail, so the caller can quarantine it; nothing raises.
"""

from __future__ import annotations

import base64
import dataclasses
from itertools import chain

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tenantry import schemas
from tenantry.otlp.anyvalue import AttributeValueError, decode_key_value
from tenantry.otlp.wire import varint as _varint

#: below this many attributes the numpy set-up costs more than it saves
_VECTOR_MIN = 48
_PAD = 16
_TRUE_FALSE = np.frombuffer(b"truefalse", np.uint8)


@dataclasses.dataclass
class AttrColumns:
    """Decoded attributes of ``n`` records: the map column plus flat keys/values for lookups."""

    attributes: pa.MapArray
    keys: pa.Array  # flat, per attribute (after de-duplication)
    values: pa.Array
    record: np.ndarray  # flat: the record index of each attribute
    bad: dict[int, str]  # record index -> why one of its attributes is malformed
    codes: np.ndarray | None = None  # flat: index of each key in ``dictionary``
    dictionary: list | None = None  # the distinct keys
    #: lookups done already (``lookup(key, empty_is_null=True)`` per key), e.g. by the C decoder
    found: dict[str, pa.Array] | None = None

    def lookup(self, key: str, empty_is_null: bool = False) -> pa.Array:
        """Per record, the value of attribute ``key`` (null where the record has none)."""
        if empty_is_null and self.found and key in self.found:
            return self.found[key]
        n = len(self.attributes)
        if len(self.keys) == 0:
            return pa.nulls(n, pa.string())
        if self.codes is not None:
            if key not in self.dictionary:
                return pa.nulls(n, pa.string())
            hits = np.flatnonzero(self.codes == self.dictionary.index(key))
        else:
            hits = np.flatnonzero(pc.fill_null(pc.equal(self.keys, key), False).to_numpy(zero_copy_only=False))
        if empty_is_null and len(hits):
            offs = np.frombuffer(self.values.buffers()[1], np.int32, count=len(self.values) + 1,
                                 offset=self.values.offset * 4)
            hits = hits[offs[hits + 1] > offs[hits]]
        idx = np.full(n, -1, np.int64)
        idx[self.record[hits]] = hits
        return self.values.take(pa.array(idx, mask=idx < 0))


def decode_attribute_lists(lists) -> AttrColumns:
    """Decode ``lists`` (one sequence of serialized KeyValue bytes per record)."""
    lens = np.fromiter(map(len, lists), np.int64, count=len(lists))
    flat = list(chain.from_iterable(lists))
    offsets = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    record = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
    if len(flat) < _VECTOR_MIN:
        keys, values, bad = _decode_python(flat, record)
    else:
        keys, values, bad = _decode_vectorized(flat, record)
    return _assemble(keys, values, record, offsets, bad)


def _decode_python(flat: list, record: np.ndarray):
    keys, values, bad = [], [], {}
    for i, raw in enumerate(flat):
        try:
            k, v = decode_key_value(raw)
        except AttributeValueError as e:
            bad.setdefault(int(record[i]), _bad_detail(i, record, raw, e))
            k, v = None, None
        keys.append(k)
        values.append(v)
    return pa.array(keys, pa.string()), pa.array(values, pa.string()), bad


def _bad_detail(i: int, record: np.ndarray, raw: bytes, err: Exception) -> str:
    pos = i - int(np.searchsorted(record, record[i]))
    return f"attribute #{pos}: {err}; raw KeyValue (base64) {base64.b64encode(raw[:256]).decode()}"


def padded_buffer(flat: list) -> tuple[np.ndarray, np.ndarray]:
    """(bytes of ``flat`` joined and zero-padded, offsets) for the numpy decoders."""
    arr = pa.array(flat, pa.large_binary())
    offs = np.frombuffer(arr.buffers()[1], np.int64, count=len(flat) + 1)
    body = np.frombuffer(arr.buffers()[2], np.uint8, count=int(offs[-1])) if offs[-1] else np.zeros(0, np.uint8)
    return np.concatenate([body, np.zeros(_PAD, np.uint8)]), offs


def _decode_vectorized(flat: list, record: np.ndarray):
    data, offs = padded_buffer(flat)
    return decode_regions(data, offs[:-1], offs[1:], record, flat.__getitem__)


def decode_attribute_regions(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, record: np.ndarray,
                             n_records: int) -> AttrColumns:
    """Like :func:`decode_attribute_lists` for KeyValues found in ``data`` (padded by 16 bytes).

    ``record`` (non-decreasing) is the record index of each attribute.
    """
    counts = np.bincount(record, minlength=n_records) if len(record) else np.zeros(n_records, np.int64)
    offsets = np.zeros(n_records + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    if len(starts) < _VECTOR_MIN:
        flat = [data[s:e].tobytes() for s, e in zip(starts.tolist(), ends.tolist())]
        keys, values, bad = _decode_python(flat, record)
    else:
        keys, values, bad = decode_regions(data, starts, ends, record, lambda i: data[starts[i]:ends[i]].tobytes())
    return _assemble(keys, values, record, offsets, bad)


def decode_regions(data: np.ndarray, start: np.ndarray, end: np.ndarray, record: np.ndarray, raw_of):
    """(keys, values, bad) of the KeyValues at ``data[start[i]:end[i]]``; ``raw_of(i)`` gives bytes."""
    n = len(start)
    limit = len(data) - 1

    # KeyValue: 0x0A <klen> key 0x12 <vlen> AnyValue, filling the attribute exactly
    ok = (end - start >= 4) & (data[np.minimum(start, limit)] == 0x0A)
    klen, ksz, kok = _varint(data, start + 1, 5)
    ks = start + 1 + ksz
    ke = ks + klen.astype(np.int64)
    ok &= kok & (ke < end) & (klen < (1 << 31))
    ke = np.where(ok, ke, start)
    ok &= data[np.minimum(ke, limit)] == 0x12
    vlen, vsz, vok = _varint(data, ke + 1, 5)
    vs = ke + 1 + vsz
    ok &= vok & (vs + vlen.astype(np.int64) == end)
    vs = np.where(ok, vs, start)
    tag = data[np.minimum(vs, limit)]
    empty = ok & (vs == end)
    # AnyValue string: 0x0A <slen> bytes
    is_str = ok & ~empty & (tag == 0x0A)
    slen, ss = np.zeros(n, np.int64), np.zeros(n, np.int64)
    cand = np.flatnonzero(is_str)
    s_len, s_sz, s_ok = _varint(data, vs[cand] + 1, 5)
    slen[cand] = s_len.astype(np.int64)
    ss[cand] = vs[cand] + 1 + s_sz
    is_str[cand] = s_ok & (ss[cand] + slen[cand] == end[cand])
    is_bool = ok & (tag == 0x10) & (end - vs == 2) & (data[np.minimum(vs + 1, limit)] <= 1)
    is_dbl = ok & (tag == 0x21) & (end - vs == 9)
    is_int = ok & (tag == 0x18)
    cand = np.flatnonzero(is_int)
    ival, i_sz, i_ok = _varint(data, vs[cand] + 1, 10)
    is_int[cand] = i_ok & (vs[cand] + 1 + i_sz == end[cand])
    ival = ival[is_int[cand]]
    fallback = ~(empty | is_str | is_bool | is_dbl | is_int)

    # every key and value becomes a (start, length) slice of one pool: the attribute bytes plus
    # an extra region holding the text of bools, ints, doubles and the fallback results
    extra = [_TRUE_FALSE]
    extra_base = len(data)
    vstart = np.where(is_str, ss, 0)
    vlength = np.where(is_str, slen, 0)
    kstart = np.where(ok, ks, 0)
    klength = np.where(ok, klen.astype(np.int64), 0)
    vstart[is_bool] = extra_base + np.where(data[vs[is_bool] + 1] == 1, 0, 4)
    vlength[is_bool] = np.where(data[vs[is_bool] + 1] == 1, 4, 5)
    cursor = extra_base + len(_TRUE_FALSE)

    def add_texts(texts_arr: pa.Array):
        t_offs = np.frombuffer(texts_arr.buffers()[1], np.int32, count=len(texts_arr) + 1)
        t_data = np.frombuffer(texts_arr.buffers()[2], np.uint8, count=int(t_offs[-1])) if t_offs[-1] else None
        return t_offs, t_data

    if is_int.any():
        texts = pa.array(ival.view(np.int64)).cast(pa.string())
        t_offs, t_data = add_texts(texts)
        vstart[is_int] = cursor + t_offs[:-1]
        vlength[is_int] = np.diff(t_offs)
        extra.append(t_data)
        cursor += int(t_offs[-1])
    if is_dbl.any():
        pos = vs[is_dbl] + 1
        dbl = data[pos[:, None] + np.arange(8)].copy().view("<f8").ravel()
        texts = pa.array(list(map(repr, dbl.tolist())), pa.string())
        t_offs, t_data = add_texts(texts)
        vstart[is_dbl] = cursor + t_offs[:-1]
        vlength[is_dbl] = np.diff(t_offs)
        extra.append(t_data)
        cursor += int(t_offs[-1])
    bad: dict[int, str] = {}
    valid_value = ~empty
    valid_key = np.ones(n, bool)
    for i in np.flatnonzero(fallback).tolist():
        raw = raw_of(i)
        try:
            k, v = decode_key_value(raw)
        except AttributeValueError as e:
            bad.setdefault(int(record[i]), _bad_detail(i, record, raw, e))
            k, v = "", None
            valid_key[i] = False
        kb = k.encode("utf-8")
        kstart[i], klength[i] = cursor, len(kb)
        extra.append(np.frombuffer(kb, np.uint8))
        cursor += len(kb)
        if v is None:
            valid_value[i] = False
            continue
        vb = v.encode("utf-8")
        vstart[i], vlength[i] = cursor, len(vb)
        extra.append(np.frombuffer(vb, np.uint8))
        cursor += len(vb)
    pool = np.concatenate([data] + [e for e in extra if e is not None and len(e)])
    keys = _gather_strings(pool, kstart, klength, None)
    values = _gather_strings(pool, vstart, vlength, valid_value)
    for i, which in _invalid_utf8(keys, values, ~fallback):
        bad.setdefault(int(record[i]), _bad_detail(i, record, raw_of(i), AttributeValueError(f"{which} is not valid UTF-8")))
        valid_key[i] = False
    if not valid_key.all():
        keys = pc.if_else(pa.array(valid_key), keys, pa.scalar(None, pa.string()))
    return keys, values, bad


def _gather_strings(pool: np.ndarray, starts: np.ndarray, lengths: np.ndarray, valid) -> pa.Array:
    n = len(starts)
    bitmap = None
    nulls = 0
    if valid is not None and not valid.all():
        bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
        nulls = int(n - valid.sum())
    ordered = _in_order(starts, lengths)
    if ordered is not None:
        # slices in buffer order (keys always; values when all are strings): let Arrow copy them.
        # A helper array whose elements alternate slice / gap has the slices at even positions.
        offs = np.empty(2 * n + 1, np.int64)
        offs[0:-1:2] = ordered
        offs[1::2] = ordered + lengths
        offs[-1] = offs[-2]
        helper = pa.Array.from_buffers(pa.large_binary(), 2 * n, [None, pa.py_buffer(offs), pa.py_buffer(pool)])
        out = helper.take(pa.array(np.arange(0, 2 * n, 2, dtype=np.int64)))
        return pa.Array.from_buffers(pa.large_string(), n, [bitmap, *out.buffers()[1:]], nulls)
    out_offs = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=out_offs[1:])
    total = int(out_offs[-1])
    idx = np.repeat(starts - out_offs[:-1], lengths) + np.arange(total, dtype=np.int64)
    buf = pool[idx]
    return pa.Array.from_buffers(pa.large_string(), n, [bitmap, pa.py_buffer(out_offs), pa.py_buffer(buf)], nulls)


def _in_order(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray | None:
    """``starts`` with empty slices moved to the end of the slice before them, if the slices then
    follow each other in the buffer without overlapping; else None."""
    if len(starts) == 0:
        return None
    ends = starts + lengths
    empty = lengths == 0
    if empty.any():
        reach = np.maximum.accumulate(np.where(empty, 0, ends))
        starts = np.where(empty, np.concatenate([[0], reach[:-1]]), starts)
        ends = np.where(empty, starts, ends)
    if len(starts) > 1 and not (starts[1:] >= ends[:-1]).all():
        return None
    return starts


def _invalid_utf8(keys: pa.Array, values: pa.Array, check: np.ndarray):
    """(index, "key"|"value") of fast-path slices that are not UTF-8 (upb would have refused them)."""
    for arr, which in ((keys, "key"), (values, "value")):
        try:
            arr.validate(full=True)
        except pa.ArrowInvalid:
            for i, b in enumerate(arr.cast(pa.large_binary()).to_pylist()):
                if b is not None and check[i]:
                    try:
                        b.decode("utf-8")
                    except UnicodeDecodeError:
                        yield i, which


def _assemble(keys: pa.Array, values: pa.Array, record: np.ndarray, offsets: np.ndarray, bad) -> AttrColumns:
    keys = keys.cast(pa.string()) if keys.type != pa.string() else keys
    values = values.cast(pa.string()) if values.type != pa.string() else values
    keep = None
    codes = dictionary = None
    if keys.null_count:  # keys of malformed attributes: dropped from the map (record is reported)
        keep = keys.is_valid().to_numpy(zero_copy_only=False)
    if len(keys) > 1:
        encoded = pc.dictionary_encode(keys.fill_null("") if keys.null_count else keys)
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        dictionary = encoded.dictionary.to_pylist()
        ndict = len(dictionary)
        pair = record * ndict + codes
        if len(pc.unique(pa.array(pair))) < len(pair):
            # keep the last occurrence of each (record, key): first in the reversed order
            _, first_rev = np.unique(pair[::-1], return_index=True)
            last = np.zeros(len(pair), bool)
            last[len(pair) - 1 - first_rev] = True
            keep = last if keep is None else (keep & last)
    if keep is not None and not keep.all():
        mask = pa.array(keep)
        keys, values, record = keys.filter(mask), values.filter(mask), record[keep]
        codes = codes[keep] if codes is not None else None
        offsets = np.zeros(len(offsets), np.int64)
        np.cumsum(np.bincount(record, minlength=len(offsets) - 1), out=offsets[1:])
    maps = pa.MapArray.from_arrays(pa.array(offsets.astype(np.int32)), keys, values, type=schemas.ATTRS)
    return AttrColumns(maps, keys, values, record, bad, codes, dictionary)
