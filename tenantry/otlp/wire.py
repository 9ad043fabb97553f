"""Protobuf wire format, decoded for many messages at once with numpy.

Used where a Python object per field would dominate the cost (span fields, attributes). The
decoder walks every message in lockstep: one iteration reads the next field of every message
still open, so the work is a few numpy operations per *field position*, not per field.

It is deliberately strict: anything it does not fully understand (a wire type it does not
expect for a known field, a length running past the message, an unterminated varint) flags the
message, and the caller falls back to upb for that input, so results never differ from upb's.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: bytes of zero padding the decoders expect after the data (reads past the end stay in bounds)
PAD = 16
VARINT, I64, LEN, I32 = 0, 1, 2, 5
_EIGHT = np.arange(8)


def varint(data: np.ndarray, pos: np.ndarray, max_bytes: int = 10):
    """Decode the varint at each ``pos`` (``data`` padded past its end): (value, size, ok)."""
    limit = len(data) - 1
    first = data[np.minimum(pos, limit)]
    if (first < 0x80).all():  # the common case: every value fits one byte
        return first.astype(np.uint64), np.ones(len(pos), np.int64), np.ones(len(pos), bool)
    val = np.zeros(len(pos), np.uint64)
    size = np.zeros(len(pos), np.int64)
    done = np.zeros(len(pos), bool)
    for j in range(max_bytes):
        b = data[np.minimum(pos + j, limit)].astype(np.uint64)
        active = ~done
        val |= np.where(active, (b & np.uint64(0x7F)) << np.uint64(7 * j), np.uint64(0))
        size += active
        done |= b < 0x80
        if done.all():
            break
    return val, size, done


@dataclasses.dataclass
class Fields:
    """Every top-level field of ``n`` messages, in wire order within each message."""

    msg: np.ndarray  # message index of each field
    field: np.ndarray  # field number
    wire: np.ndarray  # wire type
    start: np.ndarray  # LEN: payload start; others: value start
    value: np.ndarray  # LEN: payload length; VARINT / I64: the value (uint64)
    ok: np.ndarray  # per message: parsed cleanly

    def last(self, field: int, wire: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(entry index of the last occurrence per message or -1, mask of messages with a wrong wire type)."""
        sel = np.flatnonzero(self.field == field)
        wrong = np.zeros(n, bool)
        if len(sel) and (self.wire[sel] != wire).any():
            wrong[self.msg[sel[self.wire[sel] != wire]]] = True
            sel = sel[self.wire[sel] == wire]
        out = np.full(n, -1, np.int64)
        out[self.msg[sel]] = sel  # entries are in wire order: later occurrences overwrite (last wins)
        return out, wrong


def scan(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> Fields:
    """Read the top-level fields of the messages ``data[starts[i]:ends[i]]`` (data padded by PAD)."""
    n = len(starts)
    pos = starts.astype(np.int64, copy=True)
    ends = ends.astype(np.int64, copy=False)
    ok = np.ones(n, bool)
    parts = []
    idx = np.flatnonzero(pos < ends)
    limit = len(data) - 1
    while len(idx):
        p = pos[idx]
        end = ends[idx]
        b0 = data[p]
        if (b0 < 0x80).all():  # one-byte tags: fields 1..15, the usual case
            tag = b0.astype(np.int64)
            p2 = p + 1
            good = b0 >= 8
        else:
            tag, tsz, tok = varint(data, p, 5)
            tag = tag.astype(np.int64)
            p2 = p + tsz
            good = tok & (tag >= 8)
        field = tag >> 3
        wt = tag & 7
        nxt = np.full(len(idx), -1, np.int64)
        val = np.zeros(len(idx), np.uint64)
        present = np.bincount(wt, minlength=8)
        for kind in (LEN, VARINT, I64, I32):
            if not present[kind]:
                continue
            m = wt == kind
            q = p2[m] if present[kind] < len(idx) else p2
            if kind == LEN:
                ln, lsz, lok = varint(data, q, 5)
                vs = q + lsz
                p2[m] = vs
                val[m] = ln
                nxt[m] = np.where(lok, vs + ln.astype(np.int64), -1)
            elif kind == VARINT:
                v, vsz, vok = varint(data, q, 10)
                val[m] = v
                nxt[m] = np.where(vok, q + vsz, -1)
            elif kind == I64:
                qq = np.minimum(q, limit - 8)
                val[m] = data[qq[:, None] + _EIGHT].copy().view("<u8").ravel()
                nxt[m] = q + 8
            else:
                nxt[m] = q + 4
        good &= (nxt >= 0) & (nxt <= end)
        parts.append((idx, field, wt, p2, val))
        if good.all():
            pos[idx] = nxt
        else:
            pos[idx] = np.where(good, nxt, end)
            ok[idx[~good]] = False
        idx = idx[pos[idx] < end]
    if not parts:
        z = np.zeros(0, np.int64)
        return Fields(z, z, z, z, np.zeros(0, np.uint64), ok)
    cat = np.concatenate
    return Fields(*(cat([p[i] for p in parts]) for i in range(5)), ok=ok)


def gather(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bytes of the slices ``data[starts[i]:starts[i]+lengths[i]]`` joined, their offsets)."""
    offsets = np.zeros(len(starts) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    idx = np.repeat(starts - offsets[:-1], lengths) + np.arange(total, dtype=np.int64)
    return data[idx], offsets
