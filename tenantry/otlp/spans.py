"""ExportTraceServiceRequest -> the ``spans`` table, column by column.

This is the hot path of the whole system. Three decoders produce the same table:

- :func:`decode_span_bytes` (the fast path, for protobuf bodies): upb parses the request down to
  each ScopeSpans message's raw bytes, then the C accelerator (``_fastspans.c``, built with the
  wheel or by ``python build_ext.py --inplace``; about 1.7M spans/s per core, without the GIL)
  turns their spans into Arrow buffers in one pass, with no Python object per span. If it defers
  there (a scope message twice, a schema URL that is not UTF-8), upb parses down to each span's
  raw bytes and the C decoder takes those. It defers on anything it does not decode exactly
  (arrays or kvlists in attributes, invalid UTF-8, odd wire types) to
- the numpy decoder (same function, also when the accelerator is not built or
  ``TENANTRY_PURE_DECODER=1``): :mod:`tenantry.otlp.wire` reads every span's fields with numpy in
  lockstep, attributes included, so no Python object is made per span or per attribute. It
  returns None for anything it does not fully understand, and the caller uses:
- :func:`decode_spans` (upb path): one comprehension per column over the spans of a lite message.

Both repeat resource / scope values with ``take`` and decode attributes in one batch.
"""

from __future__ import annotations

import os
from itertools import chain

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.message import DecodeError

from tenantry import schemas
from tenantry.otlp import columns as C
from tenantry.otlp import wire
from tenantry.otlp.attrs import (
    AttrColumns,
    decode_attribute_lists,
    decode_attribute_regions,
    padded_buffer,
)
from tenantry.otlp.messages import SCOPE_BYTES_REQUEST, SPAN_BYTES_REQUEST, InstrumentationScope, Status

#: below this many spans the upb path is cheaper than the numpy set-up
FAST_MIN_SPANS = 64
_TOO_LATE = "is beyond the int64 nanosecond range (year 2262)"


def _statuses(raw: list) -> tuple[list, list, dict[bytes, str]]:
    """(code ints, messages) per span; each distinct serialized Status is parsed once."""
    parsed: dict[bytes, tuple] = {}
    errors: dict[bytes, str] = {}
    for b in set(raw):
        try:
            st = Status.FromString(b)
            parsed[b] = (int(st.code), st.message or None)
        except DecodeError as e:
            parsed[b] = (0, None)
            errors[b] = f"span status is not a valid Status message ({e})"
    pairs = list(map(parsed.__getitem__, raw))
    return [p[0] for p in pairs], [p[1] for p in pairs], errors


def _groups(resource_spans):
    """(resource attribute lists, scope names, resource index per scope, spans per scope, spans)."""
    res_lists, scope_names, scope_res, scope_sizes, groups = [], [], [], [], []
    for ri, rs in enumerate(resource_spans):
        res_lists.append(rs.resource.attributes)
        for ss in rs.scope_spans:
            group = ss.spans
            scope_names.append(ss.scope.name or None)
            scope_res.append(ri)
            scope_sizes.append(len(group))
            groups.append(group)
    return res_lists, scope_names, scope_res, scope_sizes, groups


def _build(n, res_lists, scope_names, scope_res, scope_sizes, attrs, cols, ingest_batch, bad):
    res = C.Resources(res_lists)
    scope_idx = C.group_index(scope_sizes)
    res_idx = pa.array(scope_res, pa.int64()).take(scope_idx)
    start, start_big = C.timestamps(cols["start"])
    end, end_big = C.timestamps(cols["end"])
    C.note_bad(bad, start_big, f"start_time_unix_nano {_TOO_LATE}")
    C.note_bad(bad, end_big, f"end_time_unix_nano {_TOO_LATE}")
    s_ns = np.where(start_big, 0, np.asarray(cols["start"], np.uint64).view(np.int64))
    e_ns = np.where(end_big, 0, np.asarray(cols["end"], np.uint64).view(np.int64))
    who = C.attribution(attrs, res, res_idx)
    table = pa.Table.from_arrays(
        [
            who["tenant_id"], who["tenant_tier"], who["user_id"],
            res.service_name.take(res_idx),
            cols["trace_id"], cols["span_id"], cols["parent_span_id"], cols["name"],
            C.enum_names(cols["kind"], C.SPAN_KINDS),
            C.enum_names(cols["status_code"], C.STATUS_CODES),
            cols["status_message"],
            start, end,
            pa.array((e_ns - s_ns) / 1e6, pa.float64()),
            attrs.attributes,
            res.attrs.attributes.take(res_idx),
            pa.array(scope_names, pa.string()).take(scope_idx),
            C.constant(1.0, n, pa.float64()),
            C.constant(ingest_batch, n) if isinstance(ingest_batch, str) else ingest_batch.take(res_idx),
        ],
        schema=schemas.SPANS,
    )
    return C.split_bad("spans", table, bad)


def decode_spans(req, ingest_batch: str) -> tuple[pa.Table, pa.Table]:
    """(spans, quarantine) for one lite request; malformed spans are quarantined, the rest kept."""
    res_lists, scope_names, scope_res, scope_sizes, groups = _groups(req.resource_spans)
    spans = list(chain.from_iterable(groups))
    n = len(spans)
    if n == 0:
        return C.empty("spans"), C.empty("quarantine")
    attrs = decode_attribute_lists([s.attributes for s in spans])
    bad = dict(attrs.bad)
    codes, messages, status_errors = _statuses([s.status for s in spans])
    if status_errors:
        for i, s in enumerate(spans):
            if s.status in status_errors:
                bad.setdefault(i, status_errors[s.status])
    cols = {
        "trace_id": C.hex_ids([s.trace_id for s in spans]),
        "span_id": C.hex_ids([s.span_id for s in spans]),
        "parent_span_id": C.hex_ids([s.parent_span_id for s in spans]),
        "name": pa.array([s.name for s in spans], pa.string()),
        "kind": [s.kind for s in spans],
        "start": [s.start_time_unix_nano for s in spans],
        "end": [s.end_time_unix_nano for s in spans],
        "status_code": codes,
        "status_message": pa.array(messages, pa.string()),
    }
    return _build(n, res_lists, scope_names, scope_res, scope_sizes, attrs, cols, ingest_batch, bad)


# -- the C accelerator ---------------------------------------------------------------------------

def _accelerator():
    """The compiled decoder (tenantry/otlp/_fastspans.c), or None when it was not built or
    ``TENANTRY_PURE_DECODER=1`` turns it off."""
    if os.environ.get("TENANTRY_PURE_DECODER", "") not in ("", "0"):
        return None
    try:
        from tenantry.otlp import _fastspans as mod
    except ImportError:
        return None
    return mod


_fastspans = _accelerator()


def accelerated() -> bool:
    """Whether spans decode with the C accelerator in this process."""
    return _fastspans is not None


def _c_strings(offs: bytes, data: bytes, valid: bytes, n: int) -> pa.Array:
    """A string array from the accelerator's buffers (offsets int32, data, a validity byte per value)."""
    ok = np.frombuffer(valid, np.uint8)
    nulls = int(n - np.count_nonzero(ok))
    bitmap = pa.py_buffer(np.packbits(ok, bitorder="little")) if nulls else None
    return pa.Array.from_buffers(pa.string(), n, [bitmap, pa.py_buffer(offs), pa.py_buffer(data)], nulls)


#: the attributes attribution reads (columns.attribution), looked up by the C decoder as it goes
_LOOKUP = (schemas.TENANT_ID_KEY, schemas.TENANT_TIER_KEY, schemas.USER_ID_KEY)
_LOOKUP_BYTES = tuple(k.encode() for k in _LOOKUP)


def _decode_c(flat: list, decoder: str = "decode"):
    """(attribute columns, span columns, rest of the output) of serialized spans (or, with
    ``decoder="decode_scopes"``, ScopeSpans) from the C decoder, or None when it defers (False:
    ``decode_scopes`` deferred for a ScopeSpans message itself, not for one of its spans)."""
    got = c_columns(decoder, flat)
    if not got:
        return got
    attrs, text, num, rest = got
    return attrs, {
        "trace_id": text[0], "span_id": text[1], "parent_span_id": text[2], "name": text[3],
        "status_message": text[4],
        "kind": num[0], "start": num[1].view(np.uint64), "end": num[2].view(np.uint64), "status_code": num[3],
    }, rest


def c_columns(decoder: str, items: list):
    """(attribute columns, five text columns, four int64 columns, the decoder's further outputs) of
    serialized records from the C accelerator's ``decoder`` (``"decode"``: spans,
    ``"decode_scopes"``: the spans of ScopeSpans messages, ``"decode_logs"``: log records), or None
    when the accelerator is not in use or defers (the decoder's False passes through)."""
    if _fastspans is None:
        return None
    out = getattr(_fastspans, decoder)(items, _LOOKUP_BYTES)
    if not out:
        return out
    n = len(out[2])  # a validity byte per record
    text = [_c_strings(*out[i:i + 3], n) for i in range(0, 15, 3)]
    n_attrs = len(out[17])  # a validity byte per attribute
    keys = _c_strings(*out[15:18], n_attrs)
    values = _c_strings(*out[18:21], n_attrs)
    attr_offs = np.frombuffer(out[21], np.int32)
    offsets = pa.Array.from_buffers(pa.int32(), n + 1, [None, pa.py_buffer(out[21])])
    maps = pa.MapArray.from_arrays(offsets, keys, values, type=schemas.ATTRS)
    record = np.repeat(np.arange(n, dtype=np.int64), np.diff(attr_offs))
    found = {}
    for key, buf in zip(_LOOKUP, out[26:26 + len(_LOOKUP)]):
        at = np.frombuffer(buf, np.int32)
        found[key] = values.take(pa.array(at, mask=at < 0)) if n_attrs else pa.nulls(n, pa.string())
    attrs = AttrColumns(maps, keys, values, record, {}, found=found)
    return attrs, text, [np.frombuffer(out[i], np.int64) for i in range(22, 26)], out[26 + len(_LOOKUP):]


# -- the numpy fast path -------------------------------------------------------------------------

def _strings(data, fields: wire.Fields, idx: np.ndarray, hex_ids: bool = False) -> pa.Array | None:
    """The string (or hex id) of the entry ``idx[i]`` per message; None if not valid UTF-8."""
    present = idx >= 0
    starts = np.zeros(len(idx), np.int64)
    lengths = np.zeros(len(idx), np.int64)
    starts[present] = fields.start[idx[present]]
    lengths[present] = fields.value[idx[present]].astype(np.int64)
    buf, offsets = wire.gather(data, starts, lengths)
    if hex_ids:
        return C.hex_from_buffer(buf, offsets)
    out = pa.Array.from_buffers(pa.large_string(), len(idx), [None, pa.py_buffer(offsets), pa.py_buffer(buf)])
    try:
        out.validate(full=True)
    except pa.ArrowInvalid:
        return None
    return out.cast(pa.string())


def _status_columns(data, fields: wire.Fields, idx: np.ndarray, n: int):
    """(code ints, messages) from the Status sub-messages; None if any is not clean."""
    codes = np.zeros(n, np.int64)
    messages = pa.nulls(n, pa.string())
    has = np.flatnonzero(idx >= 0)
    if len(has) == 0:
        return codes, messages
    sub = wire.scan(data, fields.start[idx[has]], fields.start[idx[has]] + fields.value[idx[has]].astype(np.int64))
    if not sub.ok.all():
        return None
    code_at, wrong_code = sub.last(3, wire.VARINT, len(has))
    msg_at, wrong_msg = sub.last(2, wire.LEN, len(has))
    if wrong_code.any() or wrong_msg.any():
        return None
    got = code_at >= 0
    codes[has[got]] = _as_enum(sub.value[code_at[got]])
    text = _strings(data, sub, msg_at)
    if text is None:
        return None
    full = np.full(n, -1, np.int64)
    full[has] = np.arange(len(has))
    text = text.take(pa.array(full, mask=full < 0))
    return codes, pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def _as_enum(raw: np.ndarray) -> np.ndarray:
    """Varint values read as protobuf enums (int32, as upb truncates them)."""
    return (raw & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32).astype(np.int64)


def decode_span_bytes(body: bytes, ingest_batch: str):
    """(spans, quarantine) decoded with C or numpy, or None when the upb path must be used."""
    return _decode_body(body, ingest_batch)


def _decode_body(body: bytes, ingest_batch, n_resources: int | None = None):
    """The C decoder over whole ScopeSpans, else over each span's bytes, else numpy; None when upb
    must decide. ``ingest_batch``: one id, or one per resource_spans (an Arrow array, whose length
    ``n_resources`` the request must then have)."""
    got = _decode_scopes(body, ingest_batch, n_resources)
    if got is not None and got is not _SPAN_DEFERRED:
        return got
    try:
        req = SPAN_BYTES_REQUEST.FromString(body)
    except (DecodeError, RecursionError):
        return None
    if n_resources is not None and n_resources != len(req.resource_spans):
        return None
    # when a span made the C decoder defer, it would defer on the same bytes again: numpy next
    return _decode_parsed(req, ingest_batch, try_c=got is not _SPAN_DEFERRED)


#: what :func:`_decode_scopes` returns when the C decoder deferred because of a span
_SPAN_DEFERRED = object()


def decode_span_bodies(bodies: list[bytes], ingest_batches: list[str]):
    """(spans, quarantine) of many trace request bodies decoded together (each row's
    ``ingest_batch`` from its body), or None when any of them needs the per-body path.

    Equal to decoding each body with :func:`decode_span_bytes` and concatenating, and faster for
    small requests, whose cost is largely the decoders' per-call overhead.
    Serialized messages concatenate into one whose repeated fields are appended in order, so
    the bodies are parsed as one request; a scan of their top-level fields tells which resource
    came from which body.
    """
    if not bodies:
        return None
    per_body = _resources_per_body(list(bodies))
    if per_body is None:  # not only resource_spans at the top level: each body goes its own way
        return None
    batches = pa.array(ingest_batches, pa.string()).take(pa.array(np.repeat(np.arange(len(bodies)), per_body)))
    return _decode_body(b"".join(bodies), batches, int(per_body.sum()))


def _resources_per_body(bodies: list[bytes]) -> np.ndarray | None:
    """How many resource_spans each body holds, or None when one has another top-level field or
    is malformed there."""
    if _fastspans is not None and hasattr(_fastspans, "top_counts"):
        counts = _fastspans.top_counts(bodies)
        return None if counts is None else np.frombuffer(counts, np.int64)
    data, offs = padded_buffer(bodies)
    top = wire.scan(data, offs[:-1], offs[1:])
    if not top.ok.all() or (top.field != 1).any() or (top.wire != wire.LEN).any():
        return None
    return np.bincount(top.msg, minlength=len(bodies))


def _decode_scopes(body: bytes, ingest_batch, n_resources: int | None = None):
    """(spans, quarantine) from the C decoder reading whole ScopeSpans messages (upb parses only
    down to them, so no Python object is made per span), or None when the accelerator is not in
    use or defers, or the request holds no spans (the caller then takes the per-span path, which
    gives the same tables); :data:`_SPAN_DEFERRED` when a span made the C decoder defer.
    ``ingest_batch``: one id, or one per resource_spans (an Arrow array)."""
    if _fastspans is None or not hasattr(_fastspans, "decode_scopes"):
        return None
    try:
        req = SCOPE_BYTES_REQUEST.FromString(body)
    except (DecodeError, RecursionError):
        return None
    if n_resources is not None and len(req.resource_spans) != n_resources:
        return None
    res_lists, blobs, blob_res = [], [], []
    for ri, rs in enumerate(req.resource_spans):
        res_lists.append(rs.resource.attributes)
        for blob in rs.scope_spans:
            blobs.append(blob)
            blob_res.append(ri)
    if not blobs:
        return None
    got = _decode_c(blobs, "decode_scopes")
    if not got:
        return _SPAN_DEFERRED if got is None else None
    attrs, cols, rest = got
    info = np.frombuffer(rest[0], np.int64).reshape(-1, 3)  # (spans, scope offset, scope length)
    names = _scope_names(blobs, info)
    sizes = info[:, 0].tolist()
    n = sum(sizes)
    if names is None or n == 0:
        return None
    return _build(n, res_lists, names, blob_res, sizes, attrs, cols, ingest_batch, {})


def _scope_names(blobs: list[bytes], info: np.ndarray) -> list | None:
    """The instrumentation scope name of each ScopeSpans (None: no scope or no name), each distinct
    scope message parsed once; None when one does not parse (the per-span path then decides)."""
    names, parsed = [], {}
    for blob, (_, at, length) in zip(blobs, info.tolist()):
        if at < 0:
            names.append(None)
            continue
        raw = blob[at:at + length]
        if raw not in parsed:
            try:
                parsed[raw] = InstrumentationScope.FromString(raw).name or None
            except (DecodeError, RecursionError):
                return None
        names.append(parsed[raw])
    return names


def _decode_parsed(req, ingest_batch, try_c: bool = True):
    """The C (unless ``try_c`` is false) or numpy decoder over a parsed SPAN_BYTES_REQUEST;
    ``ingest_batch``: one id, or one per resource_spans (an Arrow array)."""
    res_lists, scope_names, scope_res, scope_sizes, groups = _groups(req.resource_spans)
    flat = list(chain.from_iterable(groups))
    n = len(flat)
    if n and try_c and _fastspans is not None:
        got = _decode_c(flat)
        if got is not None:
            attrs, cols, _ = got
            return _build(n, res_lists, scope_names, scope_res, scope_sizes, attrs, cols, ingest_batch, {})
    if n < FAST_MIN_SPANS:
        return None
    data, offs = padded_buffer(flat)
    f = wire.scan(data, offs[:-1], offs[1:])
    if not f.ok.all():
        return None
    at = {}
    for number, wt in ((1, wire.LEN), (2, wire.LEN), (3, wire.LEN), (4, wire.LEN), (5, wire.LEN),
                       (6, wire.VARINT), (7, wire.I64), (8, wire.I64), (15, wire.LEN)):
        at[number], wrong = f.last(number, wt, n)
        if wrong.any():
            return None
    attr_entries = np.flatnonzero(f.field == 9)
    if len(attr_entries) and (f.wire[attr_entries] != wire.LEN).any():
        return None
    attr_entries = attr_entries[np.argsort(f.msg[attr_entries], kind="stable")]
    a_start = f.start[attr_entries]
    attrs = decode_attribute_regions(data, a_start, a_start + f.value[attr_entries].astype(np.int64),
                                     f.msg[attr_entries], n)
    status = _status_columns(data, f, at[15], n)
    name = _strings(data, f, at[5])
    if status is None or name is None or _strings(data, f, at[3]) is None:  # trace_state must be UTF-8 too
        return None

    def scalar(number):
        idx = at[number]
        out = np.zeros(n, np.uint64)
        out[idx >= 0] = f.value[idx[idx >= 0]]
        return out

    kind = _as_enum(scalar(6))
    cols = {
        "trace_id": _strings(data, f, at[1], hex_ids=True),
        "span_id": _strings(data, f, at[2], hex_ids=True),
        "parent_span_id": _strings(data, f, at[4], hex_ids=True),
        "name": name,
        "kind": np.where(kind > 5, -1, kind),
        "start": scalar(7),
        "end": scalar(8),
        "status_code": np.where(status[0] > 2, -1, status[0]),
        "status_message": status[1],
    }
    return _build(n, res_lists, scope_names, scope_res, scope_sizes, attrs, cols, ingest_batch, dict(attrs.bad))
